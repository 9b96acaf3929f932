"""Compressed local inputs: gzip recognised by its magic bytes (whatever the file's name) and
decompressed as it is read, and what a cut or corrupt one raises part-way."""
from __future__ import annotations

import gzip
import zlib

GZIP_MAGIC = b"\x1f\x8b"


def open_input(path: str):
    """A local input file opened for binary reading; gzip-compressed files (by their magic
    bytes, whatever the name) are decompressed as they are read."""
    fh = open(path, "rb")
    if fh.peek(2)[:2] == GZIP_MAGIC:
        fh.close()
        return gzip.open(path, "rb")  # (closing it closes the file)
    return fh


def open_stream(fh):
    """A buffered binary stream as is, or its gzip decompression if it starts with gzip's
    magic bytes (closing the GzipFile leaves ``fh`` open: close it yourself)."""
    if fh.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")
    return fh


# What a cut or corrupt compressed input raises part-way through reading it.
CORRUPT_INPUT = (EOFError, zlib.error, gzip.BadGzipFile)


def corrupt_input_message(path: str, n_records: int, exc: BaseException) -> str:
    """The error for a compressed input cut short or corrupt after `n_records` records."""
    return (f"{path}: the compressed input is cut short or corrupt after {n_records} "
            f"records ({exc})")
