"""Log rotation under a followed file, as logrotate does it: `create` (the file renamed away,
a new one at the path) and `copytruncate` (copied beside it, then truncated). What the file
source asks of the directory and of its open files, while following and after a restart."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
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
