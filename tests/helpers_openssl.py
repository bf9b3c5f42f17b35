"""openssl s_server / s_client as the real TLS-PSK peers (Python 3.11's ssl has no PSK callbacks)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from ue_agent.media.keys import TlsPskKeys

OPENSSL = shutil.which("openssl")
HANG_GUARD_S = 30  # only against a hung process; never a pass/fail threshold

VERSIONS = {
    "1.2": ["-tls1_2", "-cipher", "PSK-AES128-CBC-SHA256"],
    "1.3": ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
}


def psk_args(keys: TlsPskKeys) -> list[str]:
    return ["-psk", keys.key.reveal().hex(), "-psk_identity", keys.identity]


@dataclass
class PskServer:
    """``openssl s_server -nocert -rev`` on 127.0.0.1, one connection; reverses each line."""

    keys: TlsPskKeys
    version: str
    port: int = 0
    proc: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    def __enter__(self) -> PskServer:
        assert OPENSSL is not None
        cmd = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-nocert", "-rev", "-naccept", "1"]
        cmd += psk_args(self.keys) + VERSIONS[self.version]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # blocks until the listener is up (or the process died)
            self.log.append(line)
            if line.startswith("ACCEPT "):
                self.port = int(line.rsplit(":", 1)[1])
                break
        if not self.port:
            self.proc.wait(HANG_GUARD_S)
            raise RuntimeError("s_server did not start: " + "".join(self.log))
        return self

    def finish(self) -> str:
        """Wait for the server to end (it serves one connection) and return its output."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            out, _ = self.proc.communicate(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.log.append(out)
        return "".join(self.log)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def psk_client(port: int, keys: TlsPskKeys, version: str, data: str) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` sending ``data`` (end it with ``CLOSE\\n`` to make -rev hang up)."""
    assert OPENSSL is not None
    cmd = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet"]
    cmd += psk_args(keys) + VERSIONS[version]
    return subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=HANG_GUARD_S)
