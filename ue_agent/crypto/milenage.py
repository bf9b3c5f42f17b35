"""Milenage (3GPP TS 35.205/35.206) on the AES-128 kernel from ``cryptography``.

Pure functions of K, OPc, RAND, SQN and AMF. Checked byte for byte against the six test
sets of TS 35.207/35.208 in tests/test_milenage.py.
"""

from __future__ import annotations

from dataclasses import dataclass

_R = (64, 0, 32, 64, 96)  # r1..r5, in bits (rotate left)
_C = tuple((i and (1 << (i - 1))).to_bytes(16, "big") for i in range(5))  # c1=0, c2=1, c3=2, c4=4, c5=8


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(block: bytes, bits: int) -> bytes:
    n = bits // 8
    return block[n:] + block[:n]


class _Kernel:
    """E_K: one AES-128 ECB encryptor, built once per K."""

    __slots__ = ("_enc",)

    def __init__(self, k: bytes) -> None:
        if len(k) != 16:
            raise ValueError("K must be 16 bytes")
        # imported here, not with the module: the AES backend (cryptography's Rust module and
        # libcrypto, about 8 MB of RSS) loads with the first key, so a daemon on the lab card
        # that only reads the card never loads it
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._enc = Cipher(algorithms.AES(k), modes.ECB()).encryptor()

    def __call__(self, block: bytes) -> bytes:
        return self._enc.update(block)


def opc_from_op(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP)."""
    return _xor(op, _Kernel(k)(op))


@dataclass(frozen=True)
class Vector:
    """Outputs of one Milenage run (f1..f5*), all bytes."""

    mac_a: bytes  # f1
    mac_s: bytes  # f1*
    res: bytes  # f2
    ck: bytes  # f3
    ik: bytes  # f4
    ak: bytes  # f5
    ak_star: bytes  # f5*

    def __repr__(self) -> str:  # keys must not print
        return "<milenage.Vector>"


class Milenage:
    """Milenage for one subscriber key: ``Milenage(k, opc)``."""

    __slots__ = ("_e", "_opc")

    def __init__(self, k: bytes, opc: bytes) -> None:
        if len(opc) != 16:
            raise ValueError("OPc must be 16 bytes")
        self._e = _Kernel(k)
        self._opc = bytes(opc)

    def _temp(self, rand: bytes) -> bytes:
        if len(rand) != 16:
            raise ValueError("RAND must be 16 bytes")
        return self._e(_xor(rand, self._opc))

    def _out(self, temp: bytes, i: int) -> bytes:
        """OUT2..OUT5 (i = 1..4 as index into r/c)."""
        return _xor(self._e(_xor(_rot(_xor(temp, self._opc), _R[i]), _C[i])), self._opc)

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> tuple[bytes, bytes]:
        """(MAC-A, MAC-S) for SQN (6 bytes) and AMF (2 bytes)."""
        if len(sqn) != 6 or len(amf) != 2:
            raise ValueError("SQN must be 6 bytes and AMF 2 bytes")
        temp = self._temp(rand)
        in1 = sqn + amf + sqn + amf
        out1 = _xor(self._e(_xor(temp, _rot(_xor(in1, self._opc), _R[0]))), self._opc)
        return out1[:8], out1[8:]

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """(RES, CK, IK, AK, AK*)."""
        temp = self._temp(rand)
        out2 = self._out(temp, 1)
        return out2[8:], self._out(temp, 2), self._out(temp, 3), out2[:6], self._out(temp, 4)[:6]

    def vector(self, rand: bytes, sqn: bytes, amf: bytes) -> Vector:
        mac_a, mac_s = self.f1(rand, sqn, amf)
        res, ck, ik, ak, ak_star = self.f2345(rand)
        return Vector(mac_a, mac_s, res, ck, ik, ak, ak_star)

    # --- the network side (HSS / AuC) ---------------------------------------------------
    def generate_autn(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        """AUTN = (SQN xor AK) || AMF || MAC-A."""
        mac_a, _ = self.f1(rand, sqn, amf)
        _, _, _, ak, _ = self.f2345(rand)
        return _xor(sqn, ak) + amf + mac_a

    def resync_sqn(self, rand: bytes, auts: bytes) -> bytes | None:
        """The SQN_MS carried in AUTS, or None when MAC-S does not verify (TS 33.102 6.3.5)."""
        if len(auts) != 14:
            return None
        _, _, _, _, ak_star = self.f2345(rand)
        sqn_ms = _xor(auts[:6], ak_star)
        _, mac_s = self.f1(rand, sqn_ms, b"\x00\x00")
        return sqn_ms if _consteq(mac_s, auts[6:]) else None

    # --- the card side (USIM / ISIM) ----------------------------------------------------
    def auts(self, rand: bytes, sqn_ms: bytes) -> bytes:
        """AUTS = (SQN_MS xor AK*) || MAC-S, with AMF* = 0000 (TS 33.102 6.3.3)."""
        _, mac_s = self.f1(rand, sqn_ms, b"\x00\x00")
        _, _, _, _, ak_star = self.f2345(rand)
        return _xor(sqn_ms, ak_star) + mac_s


def gsm_kc(ck: bytes, ik: bytes) -> bytes:
    """Kc = CK1 xor CK2 xor IK1 xor IK2 (TS 33.102 c3)."""
    return _xor(_xor(ck[:8], ck[8:]), _xor(ik[:8], ik[8:]))


def gsm_sres(res: bytes) -> bytes:
    """SRES = RES1 xor RES2 for an 8-byte RES (c2)."""
    return _xor(res[:4], res[4:8])


def _consteq(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)
