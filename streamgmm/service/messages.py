"""What flows between sources, the loop and sinks: source records and polled batches,
the JSON encoding of outputs and the dead-letter format (headers or one JSON object).

A record has `value` (bytes), `topic`, `partition`, `offset`, `key`, `timestamp` (ms or None)
and `headers`; kafka-python's ConsumerRecord already has exactly these attributes, so the Kafka
source hands its records on without copying them.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field


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
    line_size: int | None = None  # an over-long line's length (value: only its prefix)


@dataclass(slots=True)
class Batch:
    """A polled batch: the records plus, per (topic, partition), the offset after the last one."""

    records: list
    next_offsets: dict


EMPTY = Batch([], {})


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
# the original value's size in bytes, on a dead letter whose value was cut to fit a request
H_VALUE_TRUNCATED = DLQ_PREFIX + "value.truncated"
# on a dead letter too large even with an empty value: the number of the record's own headers
# left out, and the original key's size when the key was cut too
H_HEADERS_DROPPED = DLQ_PREFIX + "headers.dropped"
H_KEY_TRUNCATED = DLQ_PREFIX + "key.truncated"


class SinkError(RuntimeError):
    """Output could not be handed on; offsets must not be committed."""


class OutputClosed(SinkError):
    """stdout's reader went away (``streamgmm run ... | head``): stop, as a Unix filter does."""


class SourceError(RuntimeError):
    """Input that cannot be read past (a corrupt record batch): the daemon finishes what came
    before it, commits nothing past it and exits 1."""


def _json_default(o):
    """JSON for numpy scalars and other stray types in events."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", errors="replace")
    return str(o)


_STRICT = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)
_LENIENT = json.JSONEncoder(separators=(",", ":"), default=_json_default)


#: in an output, a JSON value from a record (a key) nested deeper than this is cut there
MAX_OUTPUT_NESTING = 64
NESTED_TOO_DEEPLY = "[nested too deeply]"


def dumps(obj) -> bytes:
    """Compact JSON bytes (non-finite floats become null: output must be strict JSON). A value
    nested too deeply to encode (a record's key can be nested nearly as deep as the
    recursion limit, and the encoder needs a few frames more than the decoder) has what lies
    below MAX_OUTPUT_NESTING levels replaced by the string NESTED_TOO_DEEPLY."""
    try:
        return _STRICT.encode(obj).encode()
    except ValueError:
        try:
            return _LENIENT.encode(_finite(obj)).encode()
        except RecursionError:
            return dumps(_shallow(obj))
    except RecursionError:
        return dumps(_shallow(obj))


def _shallow(obj, depth: int = 0):
    if isinstance(obj, dict):
        if depth >= MAX_OUTPUT_NESTING:
            return NESTED_TOO_DEEPLY
        return {k: _shallow(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if depth >= MAX_OUTPUT_NESTING:
            return NESTED_TOO_DEEPLY
        return [_shallow(v, depth + 1) for v in obj]
    return obj


def _finite(obj):
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def own_headers(rec) -> list:
    """The record's headers without `__streamgmm.errors.*` ones: a dead letter replayed into
    the input carries its earlier failure's, and the new dead letter's replace them."""
    return [(k, v) for k, v in rec.headers or () if not k.startswith(DLQ_PREFIX)]


def dead_letter_headers(rec, reason: str, message: str, exc_class: str, group: str | None):
    """The record's own headers (`own_headers`) plus `__streamgmm.errors.*` headers
    describing where and why."""
    hdrs = own_headers(rec)
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
