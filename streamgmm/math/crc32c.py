"""CRC-32C (Castagnoli) of a byte buffer, vectorised over lanes in NumPy.

CRC-32C is linear over GF(2), so a buffer can be cut into many 64-byte lanes whose CRCs are
computed side by side (one NumPy step per 4 bytes, for all lanes at once, with two 65,536-entry
tables) and then folded pairwise: crc(A || B) = shift(crc(A), len(B)) ^ crc(B) for the raw CRC
(no initial value or final xor). The initial value 0xFFFFFFFF is the same as complementing the
first four bytes; leading zero bytes leave a raw CRC unchanged, so the buffer is left-padded to
whole lanes. Used by the service layer to check Kafka record batches (service/kafka_crc.py).
"""
import numpy as np

POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
LANE_BYTES = 64


def _byte_tables() -> list[np.ndarray]:
    """T[k][b]: the raw CRC register after byte b followed by k zero bytes."""
    t0 = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ POLY if c & 1 else c >> 1
        t0[i] = c
    tables = [t0]
    for _ in range(3):
        prev = tables[-1]
        tables.append((prev >> np.uint32(8)) ^ t0[prev & np.uint32(0xFF)])
    return tables


def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """LO[x], HI[x]: the register after a 32-bit little-endian word whose low / high 16 bits
    are x (the other half zero), so one word costs two lookups."""
    t0, t1, t2, t3 = _byte_tables()
    x = np.arange(1 << 16, dtype=np.uint32)
    return t3[x & 0xFF] ^ t2[x >> 8], t1[x & 0xFF] ^ t0[x >> 8]


_LO, _HI = _word_tables()


# ---------------------------------------------- shifting a raw CRC past n zero bytes (GF(2))

def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, col) for col in mat]


def _zeros_operator(nbytes: int) -> list[int]:
    """The 32x32 GF(2) matrix (as 32 column ints) that appends `nbytes` zero bytes."""
    one_bit = [POLY] + [1 << (n - 1) for n in range(1, 32)]
    op = _gf2_square(_gf2_square(_gf2_square(one_bit)))  # one zero byte
    result = [1 << n for n in range(32)]
    while nbytes:
        if nbytes & 1:
            result = [_gf2_times(op, col) for col in result]
        nbytes >>= 1
        if nbytes:
            op = _gf2_square(op)
    return result


_SHIFT: dict[int, tuple[np.ndarray, ...]] = {}


def _shift_tables(nbytes: int) -> tuple[np.ndarray, ...]:
    """Four byte-indexed tables applying `_zeros_operator(nbytes)` to a register."""
    tabs = _SHIFT.get(nbytes)
    if tabs is None:
        cols = _zeros_operator(nbytes)
        tabs = tuple(np.array([_gf2_times(cols, b << (8 * k)) for b in range(256)], np.uint32)
                     for k in range(4))
        _SHIFT[nbytes] = tabs
    return tabs


def _shift(v: np.ndarray, nbytes: int) -> np.ndarray:
    a, b, c, d = _shift_tables(nbytes)
    return a[v & 0xFF] ^ b[(v >> 8) & 0xFF] ^ c[(v >> 16) & 0xFF] ^ d[v >> 24]


# ------------------------------------------------------------------------------- the checksum

def crc32c(data) -> int:
    """CRC-32C of a bytes-like object, lane-parallel in NumPy (any length >= 4)."""
    buf = np.frombuffer(data, np.uint8)
    n = buf.size
    lanes = -(-n // LANE_BYTES)
    total = lanes * LANE_BYTES
    padded = np.zeros(total, np.uint8)
    padded[total - n:] = buf
    padded[total - n:total - n + 4] ^= 0xFF  # the initial value 0xFFFFFFFF
    words = np.ascontiguousarray(padded.view("<u4").reshape(lanes, LANE_BYTES // 4).T)
    reg = np.zeros(lanes, np.uint32)
    tmp = np.empty(lanes, np.uint32)
    for w in words:
        np.bitwise_xor(reg, w, out=reg)
        np.bitwise_and(reg, 0xFFFF, out=tmp)
        lo = _LO[tmp]
        np.right_shift(reg, 16, out=tmp)
        np.bitwise_xor(lo, _HI[tmp], out=reg)
    width = LANE_BYTES
    while reg.size > 1:
        if reg.size & 1:  # a zero lane in front changes nothing
            reg = np.concatenate([np.zeros(1, np.uint32), reg])
        reg = _shift(reg[0::2], width) ^ reg[1::2]
        width *= 2
    return int(reg[0]) ^ 0xFFFFFFFF
