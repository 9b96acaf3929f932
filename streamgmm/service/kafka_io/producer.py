"""The Kafka sinks: JSON events or raw dead letters to a topic through an acks=all producer."""
from __future__ import annotations

import logging
import threading

from ..messages import SinkError, dead_letter_headers, dumps

log = logging.getLogger(__name__)


class KafkaSink:
    """JSON events (or raw dead letters) to one topic via an acks=all producer."""

    def __init__(self, kcfg, topic: str, producer=None):
        self.topic = topic
        self._owns = producer is None
        self.producer = producer if producer is not None else make_producer(kcfg)
        self._error: Exception | None = None
        self._lock = threading.Lock()

    def _on_error(self, exc):
        with self._lock:
            if self._error is None:
                self._error = exc

    def _send(self, value: bytes, key=None, headers=None) -> None:
        if self._error is not None:
            raise SinkError(f"producing to {self.topic!r} failed: {self._error!r}")
        fut = self.producer.send(self.topic, value=value, key=key, headers=headers or None)
        fut.add_errback(self._on_error)

    def send_event(self, event: dict, key: bytes | None = None) -> None:
        """Queue one scored-record event (JSON)."""
        self._send(dumps(event), key=key)

    def send_dead_letter(self, rec, reason, message, exc_class, group) -> None:
        """Queue the original value with `__streamgmm.errors.*` headers."""
        self._send(rec.value if rec.value is not None else b"", key=rec.key,
                   headers=dead_letter_headers(rec, reason, message, exc_class, group))

    def flush(self, timeout: float | None = None) -> None:
        """Wait for all acks; SinkError if any send failed or the flush timed out."""
        try:
            self.producer.flush(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError etc.
            raise SinkError(f"flushing the producer for {self.topic!r} failed: {exc!r}") from exc
        if self._error is not None:
            raise SinkError(f"producing to {self.topic!r} failed: {self._error!r}")

    def close(self, timeout: float | None = None) -> None:
        if self._owns:
            try:
                self.producer.close(timeout=timeout)
            except Exception:  # noqa: BLE001
                log.exception("error closing the producer")


def make_producer(kcfg):
    """A kafka-python producer with acks=all and `kafka.compression_type` (user producer/
    security settings on top: `kafka.producer.compression_type` would win).

    batch_size is 256 KiB, not kafka-python's 16 KiB: with `emit: all` a full batch makes
    every later send wake the sender thread until it drains, and larger batches measured
    +37% records/s (BENCHMARKS.md); with `emit: anomalies` it changes nothing.

    linger_ms is 100, not 5: every new producer batch wakes the sender thread (a socket write
    and a GIL hand-off that stalled the daemon's loop: ~5% of its time on a backlog with
    `emit: anomalies`), and a longer linger means fewer, fuller batches. It adds no latency
    where it matters: the daemon flushes after every batch that is not full (a live stream),
    and during a backlog at least every `FLUSH_INTERVAL_SECONDS` (0.5 s)."""
    from kafka import KafkaProducer

    codec = getattr(kcfg, "compression_type", "none")
    kwargs = dict(bootstrap_servers=list(kcfg.bootstrap_servers),
                  client_id=kcfg.client_id, acks="all", linger_ms=100, batch_size=256 * 1024,
                  compression_type=None if codec in (None, "none") else codec)
    kwargs.update(dict(kcfg.security or {}))
    kwargs.update(dict(kcfg.producer or {}))
    if kwargs.get("acks") not in ("all", -1, "-1"):
        log.warning("kafka.producer.acks=%r weakens at-least-once delivery", kwargs.get("acks"))
    return KafkaProducer(**kwargs)
