"""Record sources for the daemon: Kafka (consumer group), a CSV/JSON-lines file, stdin.

Every source has the same polled-batch interface: `poll(timeout_ms, max_records) -> Batch`,
`commit(offsets) -> bool`, `assignment()`, `lag()`, `ready`, `exhausted`, `close()`.
A record has `value` (bytes), `topic`, `partition`, `offset`, `key`, `timestamp` (ms or None)
and `headers` — kafka-python's ConsumerRecord already has exactly these attributes, so the Kafka
source hands its records on without copying them.
"""
from __future__ import annotations

import csv
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SourceRecord:
    """One input record from a non-Kafka source (same attributes as a Kafka ConsumerRecord)."""

    value: bytes
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    timestamp: int | None = None
    headers: list = field(default_factory=list)
    row: list | None = None  # CSV cells (the value is then the original CSV line)


@dataclass(slots=True)
class Batch:
    """A polled batch: the records plus, per (topic, partition), the offset after the last one."""

    records: list
    next_offsets: dict


EMPTY = Batch([], {})


# ---------------------------------------------------------------------------------------- Kafka

class KafkaSource:
    """A KafkaConsumer in a consumer group, with manual commits and a rebalance listener.

    Callbacks get lists of (topic, partition): `on_assigned(tps)`, `on_lost(tps)`, and
    `on_revoked(tps) -> {(topic, partition): offset}`, which returns what to commit for the
    partitions about to move; the source commits that before the group rejoins.
    kafka-python 3 runs rebalance listeners on its network thread while `poll()` waits in the
    calling thread (so they never run concurrently with the daemon's own work) and forbids
    blocking consumer calls there: hence an async listener that awaits `commit_async`.
    """

    def __init__(self, kcfg, *, on_revoked=None, on_assigned=None, on_lost=None,
                 on_commit_error=None, consumer_factory=None):
        from kafka import AsyncConsumerRebalanceListener, KafkaConsumer

        self.group = kcfg.group_id
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned
        self.on_lost = on_lost
        self.on_commit_error = on_commit_error
        self._assigned: set = set()
        kwargs = dict(
            bootstrap_servers=list(kcfg.bootstrap_servers),
            group_id=kcfg.group_id,
            client_id=kcfg.client_id,
            auto_offset_reset=kcfg.auto_offset_reset,
            enable_auto_commit=False,
            max_poll_records=kcfg.max_poll_records,
            session_timeout_ms=kcfg.session_timeout_ms,
            heartbeat_interval_ms=kcfg.heartbeat_interval_ms,
        )
        kwargs.update(dict(kcfg.security or {}))
        kwargs.update(dict(kcfg.consumer or {}))
        kwargs["enable_auto_commit"] = False  # at-least-once needs our own commits
        self.consumer = (consumer_factory or KafkaConsumer)(**kwargs)

        source = self

        class _Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                fut = source._revoked(revoked, lost=False)
                if fut is not None:
                    try:
                        await fut
                    except Exception as exc:  # noqa: BLE001 - counted, logged, go on
                        source._commit_failed(exc)

            async def on_partitions_assigned(self, assigned):
                source._assigned_cb(assigned)

            async def on_partitions_lost(self, lost):
                source._revoked(lost, lost=True)

        if kcfg.topic_pattern:
            self.consumer.subscribe(pattern=kcfg.topic_pattern, listener=_Listener())
        else:
            self.consumer.subscribe(topics=list(kcfg.topics), listener=_Listener())

    # rebalance listener --------------------------------------------------------------------
    def _revoked(self, tps, lost: bool):
        """Run the callback while still owning the partitions, then forget them; returns the
        commit future for revoked (not lost) partitions, or None."""
        tps = [(tp.topic, tp.partition) for tp in tps]
        if tps:
            log.info("partitions %s: %s", "lost" if lost else "revoked", _fmt(tps))
        fut = None
        try:
            if lost and self.on_lost is not None and tps:
                self.on_lost(tps)
            elif not lost and self.on_revoked is not None and tps:
                offsets = self.on_revoked(tps)
                if offsets:
                    fut = self.consumer.commit_async(_payload(offsets))
                    log.debug("committing on revocation: %s", offsets)
        except Exception as exc:  # noqa: BLE001 - never let a callback break the consumer
            log.exception("rebalance callback failed")
            self._commit_failed(exc)
        finally:
            self._assigned.difference_update(tps)
        return fut

    def _commit_failed(self, exc) -> None:
        log.warning("offset commit on revocation failed (%s: %s); the partitions' new owner "
                    "re-reads from the previous commit", type(exc).__name__, exc)
        if self.on_commit_error is not None:
            self.on_commit_error(exc)

    def _assigned_cb(self, tps) -> None:
        tps = [(tp.topic, tp.partition) for tp in tps]
        self._assigned = set(tps)
        log.info("partitions assigned: %s", _fmt(tps) or "(none)")
        if self.on_assigned is not None:
            try:
                self.on_assigned(tps)
            except Exception:  # noqa: BLE001
                log.exception("rebalance callback failed")

    # polled-batch interface ------------------------------------------------------------------
    exhausted = False

    @property
    def ready(self) -> bool:
        """True when this consumer owns at least one partition."""
        return bool(self._assigned)

    def assignment(self) -> set:
        """The (topic, partition) pairs currently owned."""
        return set(self._assigned)

    def poll(self, timeout_ms: int, max_records: int) -> Batch:
        """Fetch up to `max_records` records (waiting at most `timeout_ms`)."""
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if not polled:
            return EMPTY
        records, nxt = [], {}
        for tp, recs in polled.items():
            if recs:
                records.extend(recs)
                nxt[(tp.topic, tp.partition)] = recs[-1].offset + 1
        return Batch(records, nxt)

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> bool:
        """Synchronously commit {(topic, partition): next_offset}; False (logged) on failure
        (CommitFailedError after a rebalance, timeouts, ...)."""
        if not offsets:
            return True
        from kafka.errors import KafkaError

        try:
            self.consumer.commit(_payload(offsets), timeout_ms=timeout_ms)
        except KafkaError as exc:
            log.warning("offset commit failed (%s: %s); will retry with the next batch",
                        type(exc).__name__, exc)
            return False
        log.debug("committed %s", offsets)
        return True

    def commit_async(self, offsets: dict, callback=None) -> bool:
        """Send a commit without waiting; `callback(offsets, error_or_None)` on completion."""
        if not offsets:
            return True
        from kafka.errors import KafkaError

        def done(_offsets, response):
            if callback is not None:
                callback(offsets, response if isinstance(response, Exception) else None)
        try:
            self.consumer.commit_async(_payload(offsets), callback=done)
        except KafkaError as exc:
            log.warning("offset commit failed (%s: %s); will retry with the next batch",
                        type(exc).__name__, exc)
            return False
        return True

    def lag(self) -> dict:
        """{(topic, partition): high watermark - position} for owned partitions known so far."""
        from kafka import TopicPartition

        out = {}
        for t, p in list(self._assigned):
            tp = TopicPartition(t, p)
            try:
                hw = self.consumer.highwater(tp)
                if hw is None:
                    continue
                pos = self.consumer.position(tp, timeout_ms=0)
            except Exception:  # noqa: BLE001 - partition moved or position unknown yet
                continue
            if pos is not None:
                out[(t, p)] = max(0, hw - pos)
        return out

    def close(self, timeout_ms: int | None = None) -> None:
        """Leave the group (no auto-commit: the daemon has committed what it handed on)."""
        try:
            self.consumer.close(autocommit=False, timeout_ms=timeout_ms)
        except Exception:  # noqa: BLE001
            log.exception("error closing the consumer")


def _payload(offsets: dict) -> dict:
    """{(topic, partition): offset} -> kafka-python's {TopicPartition: OffsetAndMetadata}."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    return {TopicPartition(t, p): OffsetAndMetadata(o, None, -1) for (t, p), o in offsets.items()}


def _fmt(tps) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))


# ------------------------------------------------------------------------------ files and stdin

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


def make_source(cfg, **callbacks):
    """The source the config asks for (`cfg.source.type`: kafka | file | stdin)."""
    kind = cfg.source.type
    if kind == "kafka":
        return KafkaSource(cfg.kafka, **callbacks)
    if kind == "file":
        return FileSource(cfg.source.path, cfg.source.format, cfg.source.follow)
    if kind == "stdin":
        return StdinSource(cfg.source.format)
    raise ValueError(f"source.type: unknown source {kind!r}")


__all__ = ["Batch", "SourceRecord", "KafkaSource", "FileSource", "StdinSource", "make_source",
           "detect_format"]
