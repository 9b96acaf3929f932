"""Local inputs and outputs: a CSV/JSON-lines file or stdin as a source, JSON lines to a file or
stdout as a sink (what a newcomer runs with no Kafka at all)."""
from __future__ import annotations

import csv
import logging
import os
import queue
import sys
import threading
import time

from ..messages import EMPTY, Batch, SinkError, SourceRecord, dead_letter_json, dumps

log = logging.getLogger(__name__)


def detect_format(path: str | None, fmt: str) -> str:
    """Resolve `auto` to csv (for a .csv / .csv.gz name) or jsonl."""
    if fmt and fmt != "auto":
        return fmt
    name = (path or "").lower()
    return "csv" if name.endswith(".csv") or name.endswith(".csv.gz") else "jsonl"


class _LineParser:
    """Turns raw lines into records: JSON lines as-is; CSV rows keep their cells in `row`
    (decoded later against the header by records.decode_csv_rows)."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.header: list | None = None

    def record(self, line: bytes, topic, offset) -> SourceRecord | None:
        """The record for one line, or None for blank lines and the CSV header."""
        value = line.rstrip(b"\r\n")
        if not value.strip():
            return None
        if self.fmt == "csv":
            row = next(csv.reader([value.decode("utf-8", errors="replace")]))
            if self.header is None:
                self.header = [h.strip() for h in row]
                return None
            return SourceRecord(value, topic, None, offset, row=row)
        return SourceRecord(value, topic, None, offset)


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

    def lag(self) -> dict:
        return {}

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> bool:
        return True

    def commit_async(self, offsets: dict, callback=None) -> bool:
        return True


class FileSource(_LocalSource):
    """CSV or JSON-lines file. Exhausted at end of file unless `follow` (tail -f)."""

    def __init__(self, path: str, fmt: str = "auto", follow: bool = False, name: str | None = None):
        self.path = path
        self.follow = follow
        self.topic = name if name is not None else os.path.basename(path)
        self._parser = _LineParser(detect_format(path, fmt))
        if path.endswith(".gz"):
            import gzip
            self._fh = gzip.open(path, "rb")
        else:
            self._fh = open(path, "rb")
        self._partial = b""
        self._next_offset = 0
        self.exhausted = False

    def _readline(self) -> bytes | None:
        line = self._fh.readline()
        if not line:
            return None
        if not line.endswith(b"\n") and self.follow:
            self._partial += line  # an incomplete line being written; wait for the rest
            return None
        if self._partial:
            line, self._partial = self._partial + line, b""
        return line

    def poll(self, timeout_ms: int, max_records: int) -> Batch:
        """Up to `max_records` records; at EOF waits `timeout_ms` (follow) or is exhausted."""
        out = []
        while len(out) < max_records:
            line = self._readline()
            if line is None:
                break
            rec = self._parser.record(line, self.topic, self._next_offset)
            if rec is not None:
                out.append(rec)
                self._next_offset += 1
        if not out:
            if self.follow:
                time.sleep(timeout_ms / 1000.0)
            else:
                self.exhausted = True
        return Batch(out, {})

    def close(self, timeout_ms: int | None = None) -> None:
        self._fh.close()


class StdinSource(_LocalSource):
    """Records from standard input (JSON lines or CSV), read by a helper thread so that
    polling never blocks the loop; exhausted at end of input."""

    def __init__(self, fmt: str = "auto", stream=None, maxsize: int = 100_000):
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._parser = _LineParser("jsonl" if fmt in (None, "auto") else fmt)
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._eof = object()
        self._next_offset = 0
        self.exhausted = False
        self._done = False
        threading.Thread(target=self._reader, name="stdin-reader", daemon=True).start()

    def _reader(self) -> None:
        try:
            for line in self._stream:
                self._q.put(line)
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
                break
            if isinstance(line, str):
                line = line.encode()
            rec = self._parser.record(line, "stdin", self._next_offset)
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
            self._fh.write(data)
            self._fh.flush()
            if self._owns:
                os.fsync(self._fh.fileno())
        except (OSError, ValueError) as exc:
            raise SinkError(f"writing {self.path or 'stdout'} failed: {exc}") from exc

    def close(self, timeout: float | None = None) -> None:
        if self._owns:
            self._fh.close()
