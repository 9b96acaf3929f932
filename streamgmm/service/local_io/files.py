"""Local inputs and outputs: a CSV/JSON-lines file or stdin as a source, JSON lines to a file or
stdout as a sink (what a newcomer runs with no Kafka at all)."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import deque

import numpy as np

from ...persistence.checkpoint import atomic_write_bytes
from ..messages import (EMPTY, Batch, OutputClosed, SinkError, SourceError, SourceRecord,
                        dead_letter_json, dumps)
from ..records import duplicate_csv_columns
from . import rotation
from .compressed import CORRUPT_INPUT, corrupt_input_message, open_input

log = logging.getLogger(__name__)


def detect_format(path: str | None, fmt: str) -> str:
    """Resolve `auto` to csv (for a .csv / .csv.gz name) or jsonl."""
    if fmt and fmt != "auto":
        return fmt
    name = (path or "").lower()
    return "csv" if name.endswith(".csv") or name.endswith(".csv.gz") else "jsonl"


DEFAULT_MAX_BYTES = 1048576
BOM = b"\xef\xbb\xbf"


def strip_bom(value: bytes) -> bytes:
    """The first line of an input without its UTF-8 byte-order mark (spreadsheet exports)."""
    return value[len(BOM):] if value.startswith(BOM) else value
# A CSV row whose quoted field spans lines is gathered up to this size, then parsed as it is.
MAX_CSV_ROW_BYTES = DEFAULT_MAX_BYTES
SKIP_CHUNK = 1 << 16


class BoundedLineReader:
    """Lines of a binary stream, never holding more than ``max_bytes + 1`` bytes of one line.

    ``read()`` returns ``(line, size)``: the whole line (newline included) and its length, or,
    for a line longer than ``max_bytes`` (not counting the newline), its first ``max_bytes + 1``
    bytes and the length of the whole line (the rest is read in 64 KiB chunks and dropped, so
    memory stays flat whatever the line's size); ``None`` at the end of the stream (or, with
    ``follow``, when the last line is still incomplete: the next call continues it).
    """

    def __init__(self, fh, max_bytes: int = DEFAULT_MAX_BYTES, follow: bool = False):
        self.fh = fh
        self.limit = int(max_bytes) + 1
        self.follow = follow
        self._partial = b""      # follow: the start of a line still being written
        self._skipped = 0        # length of the over-long line being dropped (0: not skipping)
        self._prefix = b""

    def read(self):
        fh = self.fh
        while True:
            if self._skipped:  # dropping the rest of an over-long line
                chunk = fh.readline(SKIP_CHUNK)
                if isinstance(chunk, str):
                    chunk = chunk.encode()
                if not chunk:
                    if self.follow:
                        return None  # the writer has not finished the line yet
                    return self._finish_long()
                self._skipped += len(chunk)
                if chunk.endswith(b"\n"):
                    return self._finish_long()
                continue
            room = self.limit - len(self._partial)
            line = fh.readline(room + 1)  # one more byte: the newline of a line of max_bytes
            if isinstance(line, str):
                line = line.encode()
            if not line:
                if self._partial and not self.follow:
                    line = self.take_partial()
                    return line, len(line)
                return None
            if self._partial:
                line, self._partial = self._partial + line, b""
            if line.endswith(b"\n"):
                return line, len(line)
            if len(line) > self.limit:  # over-long: keep a prefix, drop the rest as it comes
                self._prefix = line[:self.limit]
                self._skipped = len(line)
                continue
            if self.follow:
                self._partial = line  # an incomplete line being written; wait for the rest
                return None
            return line, len(line)  # the last line, without a newline

    def take_partial(self) -> bytes:
        """The incomplete last line held back in follow mode, handed over once (a file given
        up on still yields the line its writer never finished)."""
        partial, self._partial = self._partial, b""
        return partial

    def _finish_long(self):
        prefix, size = self._prefix, self._skipped
        self._prefix, self._skipped = b"", 0
        return prefix, size


class _LineParser:
    """Turns raw lines into records: JSON lines as-is; CSV rows keep their cells in `row`
    (decoded later against the header by records.decode_csv_rows)."""

    def __init__(self, fmt: str, previous_header: list | None = None, same_file: bool = False):
        self.fmt = fmt
        self.header: list | None = None
        # a file read again (truncated or replaced, in follow mode): the header read before.
        # The first row is a header if it repeats it or, in a new file, whatever it is; in
        # a truncated file (copytruncate: the writer goes on appending rows, writing no new
        # header) a row that differs from it is a record under the old header.
        self._previous_header = previous_header
        self._same_file = same_file
        self._first = True  # a UTF-8 byte-order mark may open the input (spreadsheet exports)
        self._open_quote = b""  # CSV: the lines so far of a row whose quoted field goes on

    def record(self, line: bytes, topic, offset, size: int | None = None) -> SourceRecord | None:
        """The record for one line, or None for blank lines and the CSV header. ``size`` is the
        whole line's length when ``line`` is only the prefix of an over-long line (it is then
        kept as the record's value, to be dead-lettered as too_large)."""
        if size is not None and size > len(line):
            # kept as is (max_bytes + 1 bytes): the decoder sees it is too large, never parses
            # it; a CSV row gets one cell of one character per byte, for the same reason
            row = [line.decode("latin-1")] if self.fmt == "csv" else None
            return SourceRecord(line, topic, None, offset, row=row, line_size=size)
        value = line.rstrip(b"\r\n")
        if self._first:
            self._first = False
            value = strip_bom(value)
        if not value.strip():
            return None
        if self.fmt == "csv":
            if self._open_quote or value.count(b'"') % 2:  # a quoted field spans lines
                value = self._open_quote + line if self._open_quote else line
                if value.count(b'"') % 2 and len(value) <= MAX_CSV_ROW_BYTES:
                    self._open_quote = value  # (as `score`'s csv reader does)
                    return None
                self._open_quote = b""
                value = value.rstrip(b"\r\n")
            row = next(csv.reader([value.decode("utf-8", errors="replace")]))
            if self.header is None and self._previous_header is not None:
                previous, self._previous_header = self._previous_header, None
                if [h.strip() for h in row] != previous:
                    if self._same_file:
                        self.header = previous
                        return SourceRecord(value, topic, None, offset, row=row)
                    log.warning("the CSV header of the new file differs from the one "
                                "before: %s", ",".join(h.strip() for h in row))
            if self.header is None:
                self.header = [h.strip() for h in row]
                dup = duplicate_csv_columns(self.header)
                if dup:
                    log.warning("the CSV header has more than one column %s: the first of "
                                "each is read", ", ".join(repr(h) for h in dup))
                return None
            return SourceRecord(value, topic, None, offset, row=row)
        return SourceRecord(value, topic, None, offset)

    def end(self, topic, offset) -> SourceRecord | None:
        """At the end of the input: a CSV row whose quoted field never closed (the lines
        gathered for it) as a record without cells, which the decoder dead-letters, rather
        than nothing: its lines would have had no outcome at all."""
        if not self._open_quote or self.header is None:
            self._open_quote = b""
            return None
        value, self._open_quote = self._open_quote.rstrip(b"\r\n"), b""
        return SourceRecord(value, topic, None, offset, row=None)


class _LocalSource:
    """What a file or stdin source answers where Kafka would have partitions and offsets:
    always ready, nothing assigned, no lag, and commits that succeed trivially (the position
    in a local input is not stored anywhere)."""

    group = None
    ready = True

    @property
    def csv_header(self) -> list | None:
        """The CSV header once read (None for JSON lines)."""
        return self._parser.header

    def assignment(self) -> set:
        return set()

    def lag(self, refresh: bool = False) -> dict:
        return {}

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> bool:
        return True

    def commit_async(self, offsets: dict, callback=None) -> bool:
        return True


# A stored read position names the file by its first bytes (a rotated or regenerated file
# with other content is read from its start) and the position of the committed records.
POSITION_FORMAT = "streamgmm-file-position"
HEAD_BYTES = 4096
TAIL_BYTES = 64
# Follow mode: a file renamed away (rotation) is read on, beside the new file at the path,
# until nothing was appended to it for this long (a writer goes on appending to its open
# file until it reopens its log: logrotate's postrotate signal).
ROTATE_WAIT_SECONDS = 5.0
# Follow mode, waiting at the end of the file: how often its size is looked at.
GROWTH_CHECK_SECONDS = 0.05


def _same_path(stored, path: str) -> bool:
    """Whether a read position stored for `stored` (an absolute path; None in old position
    files) is one for `path`: the same name, or two names of one file."""
    if stored is None or os.path.abspath(str(stored)) == os.path.abspath(path):
        return True
    try:
        return os.path.samefile(str(stored), path)
    except OSError:
        return False


class FileSource(_LocalSource):
    """CSV or JSON-lines file. Exhausted at end of file unless `follow` (tail -F; a file
    renamed away is read on while it is appended to, see `_reopen_if_replaced`).

    With ``position_path``, each commit stores where the committed records end in the file
    (atomically, like a Kafka offset commit), and a new source on the same file resumes there:
    a restart neither re-reads nor re-scores what was already handed on. The position is used
    only if the file still begins with the same bytes and reaches it; otherwise (a rotated,
    truncated or regenerated file) the file is read from its start, with a warning.
    """

    def __init__(self, path: str, fmt: str = "auto", follow: bool = False, name: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, position_path: str | None = None):
        self.path = path
        self.follow = follow
        self.topic = name if name is not None else os.path.basename(path)
        self._fmt = detect_format(path, fmt)
        self._max_bytes = max_bytes
        self._position_path = position_path
        self._key = (self.topic, None)  # where Kafka has (topic, partition)
        self._next_offset = 0
        self._segment = 0          # counts (re)openings: positions belong to one opening
        self._ends: deque = deque()  # (first record, its segment, array of end positions)
        self._head: bytes | None = None  # the first HEAD_BYTES of the opened file, once known
        self._committed = -1
        self._reading = path  # the file read: the path, or where it was rotated to
        self._last_data = time.monotonic()
        self._draining: list = []  # files renamed away (rotation), read on for a while
        self._open()
        if position_path:
            self._resume()
        self._cut: SourceError | None = None
        self.exhausted = False

    def _open(self, previous_header: list | None = None, same_file: bool = False,
              name: str | None = None) -> None:
        self._parser = _LineParser(self._fmt, previous_header, same_file)
        self._reading = name or self.path
        self._fh = open_input(self._reading)
        self._lines = BoundedLineReader(self._fh, self._max_bytes, self.follow)
        self._pos = 0  # bytes (decompressed) of the lines read so far
        self._segment += 1
        self._head = None
        self._start = b""  # the first bytes read (rotation.START_BYTES; _reopen_if_replaced)
        self._tail = b""  # the last TAIL_BYTES before the read position (the same)

    # ------------------------------------------------------------------ read positions
    def _read_head(self, n: int) -> bytes:
        """The first `n` (decompressed) bytes of the opened file, without moving the reader."""
        if isinstance(self._fh, io.BufferedReader):
            return os.pread(self._fh.fileno(), n, 0)
        with open_input(self.path) as fh:  # gzip: decompress the start again
            return fh.read(n)

    def _read_tail(self, byte: int) -> bytes:
        """Up to TAIL_BYTES before `byte` in a plain file (b"" for gzip: not checked there)."""
        if not isinstance(self._fh, io.BufferedReader):
            return b""
        start = max(0, byte - TAIL_BYTES)
        return os.pread(self._fh.fileno(), byte - start, start)

    def _resume(self) -> None:
        """Continue after the stored position if it is this file's; else read from the start."""
        try:
            with open(self._position_path, "rb") as fh:
                pos = json.loads(fh.read())
            if pos.get("format") != POSITION_FORMAT:
                raise ValueError("not a streamgmm file position")
            byte, record = int(pos["byte"]), int(pos["record"])
            head_len, head_sha = int(pos["head_len"]), str(pos["head_sha256"])
            tail_sha = str(pos["tail_sha256"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("source.path %s: the stored read position %s is unreadable (%s): "
                        "reading the file from its start", self.path, self._position_path, exc)
            return
        if not _same_path(pos.get("path"), self.path):  # source.path changed since
            log.warning("source.path %s: the read position in %s was stored for another file, "
                        "%s: reading %s from its start", self.path, self._position_path,
                        pos.get("path"), self.path)
            return
        rotated = rotation.renamed_to(self.path, self._fh, pos.get("ino"), pos.get("dev"))
        if rotated is not None:  # renamed away since (rotation): its rest first
            self._read_instead(open(rotated, "rb"))
        same, why = self._holds(byte, head_len, head_sha, tail_sha)
        if not same and isinstance(self._fh, io.BufferedReader):
            mark = rotation.Mark(byte, head_len, head_sha, min(byte, TAIL_BYTES), tail_sha)
            copy = rotation.find_copy(self.path, mark)
            if copy is not None:  # truncated since (copytruncate): the rest is in the copy
                self._read_instead(copy)
                same, rotated = True, copy.name
        if not same:
            self._fh.close()
            self._open()
            log.warning("source.path %s: not resuming at record %d (%s): reading it from its "
                        "start", self.path, record, why)
            return
        if rotated is not None:
            log.info("source.path %s was rotated or copied to %s since the position was "
                     "stored: reading the rest of %s first", self.path, rotated, rotated)
        if self._fmt == "csv":  # the header, as a first read would take it
            while self._parser.header is None:
                got = self._lines.read()
                if got is None:
                    break
                self._parser.record(got[0], self.topic, 0, got[1])
        self._parser._first = False
        self._fh.seek(byte)
        self._pos = byte
        if isinstance(self._fh, io.BufferedReader):
            self._start = os.pread(self._fh.fileno(), min(byte, rotation.START_BYTES), 0)
            self._tail = self._read_tail(byte)
        self._next_offset = self._committed = record
        log.info("source.path %s: resuming after record %d (byte %d), the position stored in "
                 "%s", self.path, record, byte, self._position_path)

    def _read_instead(self, fh) -> None:
        """Read the plain file open as `fh` instead of the one opened (where the position is)."""
        self._fh.close()
        self._fh = fh
        self._lines = BoundedLineReader(self._fh, self._max_bytes, self.follow)
        self._reading = fh.name

    def _holds(self, byte: int, head_len: int, head_sha: str, tail_sha: str) -> tuple:
        """(whether the opened file holds the stored position, why not)."""
        try:
            head = self._read_head(head_len)
            same = len(head) == head_len and rotation.sha256(head) == head_sha
            if same:  # and the bytes before the position unchanged (plain files)
                same = rotation.sha256(self._read_tail(byte)) == tail_sha
            if same:  # the position inside the file
                self._fh.seek(byte - 1)
                same = len(self._fh.read(1)) == 1
            self._fh.seek(0)
        except CORRUPT_INPUT + (OSError,) as exc:
            return False, f"{exc}"
        return same, "the file does not begin as the one read before or is shorter"

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> bool:
        """Store where the records before ``offsets[(topic, None)]`` end (nothing without a
        position path). False if the position file could not be written."""
        record = offsets.get(self._key)
        if not self._position_path or record is None or record <= self._committed:
            return True
        ends = self._ends
        while ends and ends[0][0] + len(ends[0][2]) < record:  # wholly before: done with
            ends.popleft()
        if not ends or ends[0][0] > record - 1:
            return True
        first, segment, arr = ends[0]
        self._committed = record
        rotated = None
        if segment != self._segment:  # in a file rotated away and still read on: stored
            # there (a restart finds it by its inode), else the new one starts afresh
            rotated = next((d for d in self._draining if d[4] == segment and segment > 0),
                           None)
            if rotated is None:
                return True
        byte = int(arr[record - 1 - first])
        current = self._swap(rotated) if rotated is not None else None
        try:
            if rotated is not None:
                head = os.pread(self._fh.fileno(), min(byte, HEAD_BYTES), 0)
            else:
                if self._head is None or len(self._head) < min(byte, HEAD_BYTES):
                    self._head = self._read_head(HEAD_BYTES)
                head = self._head[:min(byte, HEAD_BYTES)]
            st = os.fstat(self._fh.fileno())
            atomic_write_bytes(self._position_path, json.dumps({
                "format": POSITION_FORMAT, "path": os.path.abspath(self.path),
                "record": record, "byte": byte, "head_len": len(head),
                "head_sha256": rotation.sha256(head),
                "tail_sha256": rotation.sha256(self._read_tail(byte)),
                "ino": st.st_ino, "dev": st.st_dev}).encode())
        except (OSError, CORRUPT_INPUT) as exc:
            self._committed = -1
            log.warning("storing the read position of %s in %s failed: %s", self.path,
                        self._position_path, exc)
            return False
        finally:
            if current is not None:
                self._swap(current)
        return True

    def commit_async(self, offsets: dict, callback=None) -> bool:
        return self.commit(offsets)

    def _reopen_if_replaced(self, rewritten_only: bool = False) -> bool:
        """Follow mode, as `tail -F` does: a file truncated under us (`: > file`, copytruncate
        rotation) is read again from its start, also when it was written past the read
        position again before we looked (its first bytes are no longer those read); at the
        end of the file (not `rewritten_only`), a file renamed away and replaced by a new one
        (rotation) gives way to the new one, read from its start, while the old one is read
        on as long as lines are appended to it (ROTATE_WAIT_SECONDS). Returns whether it
        reopened. (The records before stay scored; the offsets keep counting.)"""
        change, size = rotation.what_changed(self.path, self._fh, self._start, rewritten_only)
        if change == rotation.REWRITTEN:
            self._drain_copy()
            self._reopen(True, "was truncated and written again: reading it from its start")
        elif change == rotation.RENAMED:
            if self._reading != self.path:
                newer = rotation.newer_rotated(self.path, self._reading)
                self._reopen(False, f"was rotated to {self._reading}, read to its end: "
                                    f"reading {newer or 'the new one'} from its start",
                             newer)
            else:
                self._reopen(False, "was replaced by a new file (rotation): reading the new "
                                    "one from its start, and the old one on while lines "
                                    "are appended to it")
        elif change == rotation.TRUNCATED:
            self._drain_copy()
            self._reopen(True, f"was truncated to {size} bytes: reading it from its start")
        else:
            return False
        return True

    def _drain_copy(self) -> None:
        """A file truncated under us (copytruncate): what was written to it and not read yet
        is in logrotate's copy (`app.log.1`: it begins with the bytes read first and holds
        the bytes read last at the read position): read on there before the truncated file."""
        if not self._start or not self._tail or self._pos < len(self._tail):
            return
        mark = rotation.Mark.of(self._pos, self._start, self._tail)
        fh = rotation.find_copy(self.path, mark, skip=self._fh)
        if fh is None:
            return
        fh.seek(self._pos)
        parser = _LineParser(self._fmt)
        parser.header, parser._first = self._parser.header, False
        log.warning("source.path %s: reading what was not read yet before its truncation from "
                    "its copy %s", self.path, fh.name)
        self._draining.append((
            fh, BoundedLineReader(fh, self._max_bytes, self.follow), parser, self._pos, -1,
            fh.name, self._start, time.monotonic(), self._tail))

    def _reopen(self, same_file: bool, why: str, name: str | None = None) -> None:
        log.warning("source.path %s %s", self.path, why)
        header = self._parser.header
        if same_file:
            self._fh.close()
        else:
            self._last_data = time.monotonic()
            self._draining.append(tuple(getattr(self, k) for k in self._STATE))
        self._open(header, same_file, name)

    _STATE = ("_fh", "_lines", "_parser", "_pos", "_segment", "_reading", "_start",
              "_last_data", "_tail")

    def _swap(self, state: tuple) -> tuple:
        """Make `state` (a file being read) the current one; returns the one it replaces."""
        old = tuple(getattr(self, k) for k in self._STATE)
        for k, v in zip(self._STATE, state):
            setattr(self, k, v)
        return old

    def _read(self, out: list, max_records: int) -> None:
        """Records of the current file into `out`, up to `max_records` or its end; records
        the run's end positions for commits."""
        ends = []
        first = self._next_offset
        pos = self._pos
        tail = self._tail
        while len(out) < max_records:
            try:
                got = self._lines.read()
            except CORRUPT_INPUT as exc:
                self._cut = SourceError("source.path " + corrupt_input_message(
                    self.path, self._next_offset, exc))
                if out:
                    break
                raise self._cut from None
            if got is None:
                rec = None if self.follow else self._parser.end(self.topic, self._next_offset)
                if rec is not None:
                    out.append(rec)
                    ends.append(pos)
                    self._next_offset += 1
                break
            line, size = got
            room = rotation.START_BYTES - len(self._start)
            if room > 0 and pos == len(self._start) and size == len(line):
                self._start += line[:room]
            tail = line if len(line) >= TAIL_BYTES else (tail + line)[-TAIL_BYTES:]
            pos += size
            rec = self._parser.record(line, self.topic, self._next_offset, size)
            if rec is not None:
                out.append(rec)
                ends.append(pos)
                self._next_offset += 1
        if pos != self._pos:
            self._last_data = time.monotonic()
            self._tail = tail[-TAIL_BYTES:]
        self._pos = pos
        if ends and self._position_path:
            self._ends.append((first, self._segment, np.asarray(ends, dtype=np.int64)))

    def _drain_rotated(self, out: list, max_records: int) -> None:
        """Files renamed away (rotation) are read on for ROTATE_WAIT_SECONDS after the last
        line appended to them: a writer goes on appending to its open file until it reopens
        its log (logrotate's postrotate signal), and those lines are records too."""
        for i, state in enumerate(list(self._draining)):
            current = self._swap(state)
            try:
                if rotation.cut_or_rewritten(self._fh, self._start):
                    log.warning("source.path %s: the file it was rotated to was truncated or "
                                "rewritten: no longer reading it", self.path)
                    self._fh.close()
                    self._draining[i] = None
                    continue
                self._read(out, max_records)
                idle = time.monotonic() - self._last_data >= ROTATE_WAIT_SECONDS
                if idle and len(out) < max_records:
                    partial = self._lines.take_partial()  # a line the writer never finished
                    if partial:
                        rec = self._parser.record(partial, self.topic, self._next_offset)
                        if rec is not None:
                            out.append(rec)
                            self._next_offset += 1
                    self._fh.close()
                    state = None
                else:
                    state = tuple(getattr(self, k) for k in self._STATE)
            finally:
                self._swap(current)
            self._draining[i] = state
        self._draining = [d for d in self._draining if d is not None]

    def poll(self, timeout_ms: int, max_records: int) -> Batch:
        """Up to `max_records` records; at EOF waits `timeout_ms` (follow) or is exhausted."""
        if self._cut is not None:  # the records before it went out with the last batch
            raise self._cut
        out = []
        if self.follow:
            self._reopen_if_replaced(rewritten_only=True)
        if self._draining:
            self._drain_rotated(out, max_records)
        if len(out) < max_records:
            self._read(out, max_records)
        if not out:
            if self.follow:
                if not self._reopen_if_replaced():
                    self._wait(timeout_ms / 1000.0)
            elif self._after_rotated():  # on to the newer files, then the path's own
                return self.poll(timeout_ms, max_records)
            else:
                self.exhausted = True
            return Batch(out, {})
        if self._position_path:
            return Batch(out, {self._key: self._next_offset})
        return Batch(out, {})

    def _after_rotated(self) -> bool:
        """Without `follow`, at the end of a file found at start under another name (rotated
        or copied while stopped, see `_resume`): go on with the ones rotated after it
        (logrotate's numbering), then the file `source.path` names now, from its start, as
        `follow` does. False when there is nothing to go on with."""
        if self._reading == self.path or not isinstance(self._fh, io.BufferedReader):
            return False
        newer = rotation.newer_rotated(self.path, self._reading)
        if newer is None and not os.path.isfile(self.path):
            return False
        self._reopen(False, f"was rotated to {self._reading}, read to its end: reading "
                            f"{newer or 'the new one'} from its start", newer)
        return True

    def _wait(self, seconds: float) -> None:
        """Follow mode at the end of the file: wait up to `seconds`, but not past the moment
        the file grows (looked at every GROWTH_CHECK_SECONDS)."""
        end = time.monotonic() + seconds
        plain = isinstance(self._fh, io.BufferedReader)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, GROWTH_CHECK_SECONDS) if plain else left)
            try:
                if plain and os.fstat(self._fh.fileno()).st_size > self._fh.tell():
                    return
            except (OSError, ValueError):
                return

    def close(self, timeout_ms: int | None = None) -> None:
        for state in self._draining:
            state[0].close()
        self._draining = []
        self._fh.close()


def _own_stdin():
    """Standard input as a buffered binary stream that sys.stdin does not share."""
    try:
        return io.BufferedReader(io.FileIO(os.dup(sys.stdin.fileno()), "rb"))
    except (OSError, ValueError, AttributeError):  # no real fd 0 (embedded, tests)
        return sys.stdin.buffer


class StdinSource(_LocalSource):
    """Records from standard input (JSON lines or CSV), read by a helper thread so that
    polling never blocks the loop; exhausted at end of input."""

    def __init__(self, fmt: str = "auto", stream=None, maxsize: int = 100_000,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        # Standard input is read through a buffer of our own on a duplicate of fd 0: the
        # reading thread may still be blocked in it at exit, and a blocked sys.stdin.buffer
        # makes the interpreter abort ("could not acquire lock ... at interpreter shutdown")
        self._stream = stream if stream is not None else _own_stdin()
        self._max_bytes = max_bytes
        self._parser = _LineParser("jsonl" if fmt in (None, "auto") else fmt)
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._eof = object()
        self._next_offset = 0
        self.exhausted = False
        self._done = False
        threading.Thread(target=self._reader, name="stdin-reader", daemon=True).start()

    def _reader(self) -> None:
        try:
            lines = BoundedLineReader(self._stream, self._max_bytes)
            while True:
                got = lines.read()
                if got is None:
                    break
                self._q.put(got)
        except (OSError, ValueError):
            log.exception("error reading stdin")
        finally:
            self._q.put(self._eof)

    def poll(self, timeout_ms: int, max_records: int) -> Batch:
        out = []
        if self._done:
            self.exhausted = True
            return EMPTY
        deadline = time.monotonic() + timeout_ms / 1000.0
        while len(out) < max_records:
            try:
                if out:
                    line = self._q.get_nowait()
                else:
                    line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is self._eof:
                self._done = True
                rec = self._parser.end("stdin", self._next_offset)
                if rec is not None:
                    out.append(rec)
                    self._next_offset += 1
                break
            line, size = line
            rec = self._parser.record(line, "stdin", self._next_offset, size)
            if rec is not None:
                out.append(rec)
                self._next_offset += 1
        if self._done and not out:
            self.exhausted = True
        return Batch(out, {})

    def close(self, timeout_ms: int | None = None) -> None:
        pass


def _end_torn_line(fh) -> None:
    """A file whose last write failed half-way (disk full, a crash) ends in a torn line: close
    it with a newline, so the next record starts a line of its own instead of being glued to
    the fragment (and lost to every reader)."""
    try:
        if fh.tell() > 0:
            with open(fh.name, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    fh.write(b"\n")
                    fh.flush()
    except OSError:  # not seekable (a pipe, a device): nothing to repair
        pass


class JsonLinesSink:
    """JSON lines appended to a file (fsync'd on flush) or written to stdout."""

    def __init__(self, path: str | None):
        self.path = path
        if path is None:
            self._fh = sys.stdout.buffer
            self._owns = False
        else:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            self._fh = open(path, "ab")
            self._owns = True
            _end_torn_line(self._fh)
        self._buf: list[bytes] = []

    def send_event(self, event: dict, key: bytes | None = None) -> None:
        self._buf.append(dumps(event))

    def send_dead_letter(self, rec, reason, message, exc_class, group) -> None:
        self._buf.append(dumps(dead_letter_json(rec, reason, message, exc_class, group)))

    def flush(self, timeout: float | None = None) -> None:
        """Write buffered lines and make them durable (fsync for files)."""
        if not self._buf:
            return
        data = b"\n".join(self._buf) + b"\n"
        self._buf.clear()
        try:
            if self._owns:
                self._reopen_if_moved()
            self._fh.write(data)
            self._fh.flush()
            if self._owns:
                os.fsync(self._fh.fileno())
        except BrokenPipeError as exc:
            if self.path is None:
                raise OutputClosed("stdout was closed by its reader") from exc
            raise SinkError(f"writing {self.path} failed: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise SinkError(f"writing {self.path or 'stdout'} failed: {exc}") from exc

    def _reopen_if_moved(self) -> None:
        """A file renamed away or deleted (logrotate's `create`, no signal needed): the lines
        go to a new file at the path, not on into the renamed one."""
        try:
            now = os.stat(self.path)
            ours = os.fstat(self._fh.fileno())
            if (now.st_ino, now.st_dev) == (ours.st_ino, ours.st_dev):
                return
        except FileNotFoundError:
            pass
        log.info("%s was renamed away or deleted: writing to a new file at that path",
                 self.path)
        self._fh.close()
        self._fh = open(self.path, "ab")
        _end_torn_line(self._fh)

    def close(self, timeout: float | None = None) -> None:
        if self._owns:
            self._fh.close()
