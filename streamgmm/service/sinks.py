"""Output sinks: scored-record events and dead letters, to Kafka or to JSON-lines files/stdout.

Every sink has `send(...)`, `flush(timeout)` and `close(timeout)`. `flush` returns only when
everything sent so far is durably handed on (Kafka acks=all / file fsync'd) and raises
`SinkError` otherwise, so the daemon commits input offsets only after a successful flush.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# Dead-letter header names, after Kafka Connect's `__connect.errors.*`.
DLQ_PREFIX = "__streamgmm.errors."
H_TOPIC = DLQ_PREFIX + "topic"
H_PARTITION = DLQ_PREFIX + "partition"
H_OFFSET = DLQ_PREFIX + "offset"
H_GROUP = DLQ_PREFIX + "group"
H_REASON = DLQ_PREFIX + "reason"
H_MESSAGE = DLQ_PREFIX + "message"
H_EXC_CLASS = DLQ_PREFIX + "exception.class"
H_TIMESTAMP = DLQ_PREFIX + "timestamp"


class SinkError(RuntimeError):
    """Output could not be handed on; offsets must not be committed."""


def _json_default(o):
    """JSON for numpy scalars and other stray types in events."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", errors="replace")
    return str(o)


_STRICT = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)
_LENIENT = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def dumps(obj) -> bytes:
    """Compact JSON bytes (non-finite floats become null: output must be strict JSON)."""
    try:
        return _STRICT.encode(obj).encode()
    except ValueError:
        return _LENIENT.encode(_finite(obj)).encode()


def _finite(obj):
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dead_letter_headers(rec, reason: str, message: str, exc_class: str, group: str | None):
    """Original headers plus `__streamgmm.errors.*` headers describing where and why."""
    hdrs = list(rec.headers or [])
    def add(name, value):
        if value is not None:
            hdrs.append((name, str(value).encode()))
    add(H_TOPIC, rec.topic)
    add(H_PARTITION, rec.partition)
    add(H_OFFSET, rec.offset)
    add(H_GROUP, group)
    add(H_REASON, reason)
    add(H_MESSAGE, message)
    add(H_EXC_CLASS, exc_class)
    return hdrs


def dead_letter_json(rec, reason: str, message: str, exc_class: str, group: str | None) -> dict:
    """The dead letter as one JSON object (file/stdout mode): the original value and origin."""
    raw = rec.value if rec.value is not None else b""
    try:
        value, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(raw).decode(), "base64"
    key = rec.key
    if isinstance(key, (bytes, bytearray)):
        key = key.decode("utf-8", errors="replace")
    return {"value": value, "value_encoding": encoding, "topic": rec.topic,
            "partition": rec.partition, "offset": rec.offset, "key": key,
            "timestamp": rec.timestamp, "group": group, "reason": reason, "message": message,
            "exception_class": exc_class}


# ------------------------------------------------------------------------------------- Kafka

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
    """A kafka-python producer with acks=all (user producer/security settings on top).

    batch_size is 256 KiB, not kafka-python's 16 KiB: with `emit: all` a full batch makes
    every later send wake the sender thread until it drains, and larger batches measured
    +37% records/s (BENCHMARKS.md); with `emit: anomalies` it changes nothing."""
    from kafka import KafkaProducer

    kwargs = dict(bootstrap_servers=list(kcfg.bootstrap_servers),
                  client_id=kcfg.client_id, acks="all", linger_ms=5, batch_size=256 * 1024)
    kwargs.update(dict(kcfg.security or {}))
    kwargs.update(dict(kcfg.producer or {}))
    if kwargs.get("acks") not in ("all", -1, "-1"):
        log.warning("kafka.producer.acks=%r weakens at-least-once delivery", kwargs.get("acks"))
    return KafkaProducer(**kwargs)


# ------------------------------------------------------------------------------ files/stdout

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


def make_sink(section, kcfg, producer=None):
    """The sink for `sink` or `dead_letter` config sections (type kafka | file | stdout)."""
    if section.type == "kafka":
        return KafkaSink(kcfg, section.topic, producer=producer)
    if section.type == "file":
        return JsonLinesSink(section.path)
    if section.type == "stdout":
        return JsonLinesSink(None)
    raise ValueError(f"unknown sink type {section.type!r}")


__all__ = ["KafkaSink", "JsonLinesSink", "SinkError", "make_sink", "make_producer", "dumps",
           "dead_letter_headers", "dead_letter_json", "DLQ_PREFIX"]
