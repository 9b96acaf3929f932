"""Every member follows the state topic: the newest published version of its group's model."""
from __future__ import annotations

import logging
import threading
import time

from .messages import version_of

log = logging.getLogger("streamgmm.fleet")

RECENT = 64   # state records read first at start (the newest version is among them)
KEEP = 4      # newest versions kept: a torn or corrupt newest one falls back to these


class StateTail(threading.Thread):
    """Reads the state topic from its start for ever (an assigned consumer, no group) and
    keeps the newest fleet versions of `key`: `newest()` is (version, bytes) or None,
    `candidates()` the last few, newest first (a refused one falls back to the one before).
    `caught_up` is set once the end offsets found at start have been read."""

    def __init__(self, kcfg, topic: str, key: str, max_bytes: int):
        super().__init__(name="streamgmm-fleet-tail", daemon=True)
        self.kcfg, self.topic, self.key = kcfg, topic, key.encode()
        self.max_bytes = int(max_bytes)
        self.caught_up = threading.Event()
        self._lock = threading.Lock()
        self._recent: list = []   # (version, bytes), ascending, at most KEEP
        self.seen_at = None      # when the newest version was first read
        self.bytes_read = 0
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def newest(self):
        with self._lock:
            return self._recent[-1] if self._recent else None

    def candidates(self) -> list:
        with self._lock:
            return list(reversed(self._recent))

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        kc = self.kcfg
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=list(kc.bootstrap_servers), group_id=None,
                client_id=f"{kc.client_id}-fleet-tail", enable_auto_commit=False,
                fetch_max_wait_ms=200, max_partition_fetch_bytes=self.max_bytes + (1 << 20),
                fetch_max_bytes=max(64 << 20, self.max_bytes + (1 << 20)),
                **dict(kc.security or {}))
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            begin = consumer.beginning_offsets([tp])[tp]
            end = consumer.end_offsets([tp])[tp]
            # The newest version is near the end: read the last RECENT records first, and the
            # whole topic only if they hold none of this group's (compaction lags behind the
            # active segment, so a long-lived group's topic holds many old versions).
            start = max(begin, end - RECENT)
            consumer.seek(tp, start)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self.caught_up.set()
            return
        try:
            while not self._halt.is_set():
                for recs in consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        self._offer(r)
                if not self.caught_up.is_set() and consumer.position(tp) >= end:
                    if self.newest() is None and start > begin:
                        consumer.seek(tp, begin)   # none of ours near the end: everything
                        end, start = start, begin
                        continue
                    self.caught_up.set()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self.caught_up.set()
            try:
                consumer.close()
            except Exception:  # noqa: BLE001
                pass

    def _offer(self, rec) -> None:
        if rec.key != self.key or rec.value is None:
            return
        version = version_of(rec.headers)
        if version is None:
            return
        self.bytes_read += len(rec.value)
        with self._lock:
            if not self._recent or version > self._recent[-1][0]:
                self._recent.append((version, rec.value))
                del self._recent[:-KEEP]
                self.seen_at = time.monotonic()
