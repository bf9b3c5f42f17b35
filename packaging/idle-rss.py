"""Start the installed daemon as systemd would (user ue-agent, NOTIFY_SOCKET), wait for
READY=1, let it idle, print its RSS and ``ue-agent status``, stop it with SIGTERM.

    sudo python3 packaging/idle-rss.py [CONFIG] [IDLE_SECONDS]

Used by scripts/check-deb (CI) and for the figure in docs/deployment.md. Standard library only.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

config = sys.argv[1] if len(sys.argv) > 1 else "/etc/ue-agent/config.toml"
idle = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
d = tempfile.mkdtemp(prefix="ue-agent-notify-")
os.chmod(d, 0o755)
path = os.path.join(d, "notify.sock")
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(path)
os.chmod(path, 0o666)
env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": path}
cmd = ["setpriv", "--reuid=ue-agent", "--regid=ue-agent", "--init-groups", "--"]
argv = [*cmd, "/usr/bin/ue-agent", "run", "--config", config]
proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
notify.settimeout(60)
try:
    while "READY=1" not in notify.recv(4096).decode().split("\n"):
        pass
except TimeoutError:
    proc.kill()
    sys.exit(f"idle-rss: no READY=1 within 60 s:\n{proc.communicate()[1].decode()}")
time.sleep(idle)
with open(f"/proc/{proc.pid}/status") as f:
    fields = dict(line.split(":", 1) for line in f.read().splitlines())
rss = {k: fields[k].strip() for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
status = subprocess.run(["/usr/bin/ue-agent", "status"], capture_output=True, text=True).stdout
proc.send_signal(signal.SIGTERM)
_, err = proc.communicate(timeout=30)
os.unlink(path)
os.rmdir(d)
print(f"idle-rss: pid {proc.pid} after {idle:g} s idle: " + ", ".join(f"{k} {v}" for k, v in rss.items()))
print(status, end="")
print(f"idle-rss: exit {proc.returncode} on SIGTERM")
if proc.returncode != 0:
    sys.exit(err.decode())
