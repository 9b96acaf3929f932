"""kafka-python's record-batch CRC-32C served by `streamgmm.math.crc32c` (vectorised NumPy)
instead of its pure-Python loop, which takes about two thirds of a bare consumer's CPU.

`install()` swaps it into kafka-python's record-batch module (for both fetch checks and the
producer's batch headers) unless the C `crc32c` package already serves kafka-python; buffers
under `MIN_VECTOR_BYTES` keep kafka-python's loop, which is quicker there. Results are
bit-identical to kafka-python's own function (tests compare them).
"""
from __future__ import annotations

import logging

from ..math.crc32c import crc32c as crc32c_vector

log = logging.getLogger(__name__)

MIN_VECTOR_BYTES = 2048


def make_crc32c(small):
    """A CRC-32C function: `small(data)` below MIN_VECTOR_BYTES, the vectorised one above."""
    def crc32c(data) -> int:
        if len(data) < MIN_VECTOR_BYTES:
            return small(data)
        return crc32c_vector(data)
    crc32c.__doc__ = "CRC-32C: vectorised over lanes for large buffers (streamgmm)."
    return crc32c


def install() -> bool:
    """Serve kafka-python's record-batch CRC-32C with the vectorised one. Returns True when
    installed (or already), False when kafka-python uses the C `crc32c` package or its layout
    is not the one this was written for (then nothing is changed)."""
    try:
        from kafka.record import default_records, util
    except ImportError:  # pragma: no cover - kafka-python is a dependency
        return False
    current = getattr(default_records, "calc_crc32c", None)
    if getattr(current, "streamgmm_vectorised", False):
        return True
    if getattr(util, "crc32c_c", None) is not None or current is None:
        return False
    fast = make_crc32c(current)
    probe = bytes(range(256)) * 17
    if fast(memoryview(probe)) != current(memoryview(probe)):  # never swap in a wrong checksum
        log.warning("vectorised CRC-32C disagrees with kafka-python's; not installed")
        return False
    fast.streamgmm_vectorised = True
    fast.streamgmm_original = current
    default_records.calc_crc32c = fast
    return True


def uninstall() -> None:
    """Give kafka-python its own CRC-32C back (`kafka.vectorised_crc: false`)."""
    from kafka.record import default_records

    current = getattr(default_records, "calc_crc32c", None)
    if getattr(current, "streamgmm_vectorised", False):
        default_records.calc_crc32c = current.streamgmm_original


def installed() -> bool:
    """Whether kafka-python's record batches currently use the vectorised CRC-32C."""
    from kafka.record import default_records

    return bool(getattr(getattr(default_records, "calc_crc32c", None),
                        "streamgmm_vectorised", False))


def describe() -> str:
    """Which CRC-32C kafka-python's record batches use now (for the start-up log)."""
    from kafka.record import util

    if installed():
        return "streamgmm's vectorised NumPy implementation"
    if getattr(util, "crc32c_c", None) is not None:
        return "the C crc32c package"
    return "kafka-python's pure-Python loop"


def configure(enabled: bool) -> str:
    """Install or uninstall per `kafka.vectorised_crc`; returns `describe()`."""
    if enabled:
        install()
    else:
        uninstall()
    return describe()
