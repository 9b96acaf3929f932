"""Log rotation under a followed file, as logrotate does it: `create` (the file renamed away,
a new one at the path) and `copytruncate` (copied beside it, then truncated). What the file
source asks of the directory and of its open files, while following and after a restart;
the reading on in a renamed file or a copy is the source's (files.py: `_reopen_if_replaced`,
`_drain_copy`, `_drain_rotated`)."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass

from .compressed import GZIP_MAGIC

log = logging.getLogger(__name__)

# Follow mode: the first bytes read, compared at the end of the file with what the file now
# begins with (a file truncated and written past the read position again is seen so).
START_BYTES = 512


def sha256(data: bytes) -> str:
    """The hex SHA-256 of `data`: how a Mark (and a stored read position) names bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Mark:
    """A read position named by content: the file's first bytes and the bytes just before it
    (by SHA-256), so that the file holding it is recognised under any name (a copy)."""

    byte: int
    head_len: int
    head_sha256: str
    tail_len: int
    tail_sha256: str

    @classmethod
    def of(cls, byte: int, head: bytes, tail: bytes) -> Mark:
        """The mark of `byte` in a file that begins with `head` and has `tail` before it."""
        return cls(byte, len(head), sha256(head), len(tail), sha256(tail))

    def held_by(self, fd: int) -> bool:
        """Whether the plain file open as `fd` holds this position."""
        return (sha256(os.pread(fd, self.head_len, 0)) == self.head_sha256 and
                sha256(os.pread(fd, self.tail_len, self.byte - self.tail_len))
                == self.tail_sha256)


def find_copy(path: str, mark: Mark, skip=None):
    """logrotate's copy of `path` holding `mark` (copytruncate: `app.log.1`, `app.log-20261127`,
    a plain file beside it whose name begins with its name), opened for reading; None if
    there is none. `skip`: an open file that is not to be taken for it (the file itself)."""
    base = os.path.basename(path)
    try:
        ours = os.fstat(skip.fileno()) if skip is not None else None
        with os.scandir(os.path.dirname(os.path.abspath(path))) as it:
            entries = [e for e in it if e.name != base and e.name.startswith(base)]
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if st.st_size < mark.byte or (
                    ours is not None and (st.st_ino, st.st_dev) == (ours.st_ino, ours.st_dev)):
                continue
            fh = open(entry.path, "rb")
            try:
                if mark.held_by(fh.fileno()):
                    return fh
            except OSError:
                fh.close()
                raise
            fh.close()
    except OSError as exc:
        log.debug("looking for a copy of %s failed: %s", path, exc)
    return None


def renamed_to(path: str, fh, ino, dev) -> str | None:
    """Where the file a position was stored in (`ino`, `dev`) is now, if `path` (open as `fh`)
    names another file and that one is still beside it under another name (`app.log.1`)."""
    if ino is None or not isinstance(fh, io.BufferedReader):
        return None
    try:
        now = os.fstat(fh.fileno())
        if (now.st_ino, now.st_dev) == (ino, dev):
            return None
        with os.scandir(os.path.dirname(os.path.abspath(path))) as it:
            for entry in it:
                if entry.inode() == ino and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_dev == dev:
                    return entry.path
    except OSError:
        pass
    return None


def newer_rotated(path: str, reading: str) -> str | None:
    """After `reading`, a rotated file found at start (`app.log.2`, logrotate's numbering),
    the one rotated after it (`app.log.1`), if any: it was rotated while we were stopped too."""
    m = re.fullmatch(re.escape(os.path.abspath(path)) + r"\.(\d+)", os.path.abspath(reading))
    if not m or int(m.group(1)) < 2:
        return None
    newer = f"{os.path.abspath(path)}.{int(m.group(1)) - 1}"
    try:
        with open(newer, "rb") as fh:
            if fh.peek(2)[:2] == GZIP_MAGIC:  # compressed since: not the one written
                return None
    except OSError:
        return None
    return newer


# What rotation did to a followed file (`what_changed`).
REWRITTEN = "rewritten"  # truncated and written past the read position again (copytruncate)
RENAMED = "renamed"      # renamed away, the path names another file (`create`)
TRUNCATED = "truncated"  # shorter than the read position (copytruncate, `: > file`)


def what_changed(path: str, fh, start: bytes, rewritten_only: bool = False) -> tuple:
    """(what happened to the followed file open as `fh`, the size of the file at `path`), as
    `tail -F` looks: REWRITTEN (it no longer begins with `start`, the first bytes read), then,
    unless `rewritten_only`, RENAMED or TRUNCATED; None if nothing, or nothing to tell yet
    (the new file not there yet, mid-rotation; gzip: its read positions are not sizes)."""
    if not isinstance(fh, io.BufferedReader):
        return None, None
    try:
        if start and os.pread(fh.fileno(), len(start), 0) != start:
            return REWRITTEN, None
        if rewritten_only:
            return None, None
        now = os.stat(path)
        ours = os.fstat(fh.fileno())
    except (OSError, ValueError):
        return None, None
    if (now.st_ino, now.st_dev) != (ours.st_ino, ours.st_dev):
        return RENAMED, now.st_size
    if now.st_size < fh.tell():
        return TRUNCATED, now.st_size
    return None, now.st_size


def cut_or_rewritten(fh, start: bytes) -> bool:
    """Whether a renamed file read on (open as `fh`, begun with `start`) was truncated or
    rewritten since: it no longer holds what was being read, and is let go."""
    fd = fh.fileno()
    return os.fstat(fd).st_size < fh.tell() or bool(
        start and os.pread(fd, len(start), 0) != start)
