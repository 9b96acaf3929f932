"""The Kafka sinks: JSON events or raw dead letters to a topic through one acks=all producer.

Both sinks share a `ProducerLink`: the kafka-python producer plus every output sent since the
last flush that was fully acknowledged. When a send fails (the client gave up on it, or declared
the producer fatal, e.g. `OutOfOrderSequenceNumberError` / `UnknownProducerIdError` after a
broker lost its producer state), `flush` raises `ProducerFailed`; the daemon then calls
`rebuild()`: the old producer is dropped, a new one is made, and every unacknowledged output is
sent again (duplicates are possible, losses are not: the daemon commits input offsets only after
a flush that succeeded). A flush that merely runs out of time raises `OutputsPending`.
"""
from __future__ import annotations

import logging
import threading

from ..messages import (H_HEADERS_DROPPED, H_KEY_TRUNCATED, H_VALUE_TRUNCATED, SinkError,
                        dead_letter_headers, dumps, own_headers)

log = logging.getLogger(__name__)

#: kafka-python's default max_block_ms (60 s) would block the loop that long on a send whose
#: topic metadata is unknown (topic missing, broker down); the loop retries instead.
DEFAULT_MAX_BLOCK_MS = 5000
#: kafka-python's default max_request_size (one record can be no larger)
DEFAULT_MAX_REQUEST_SIZE = 1048576
#: bytes kept free under max_request_size beyond kafka-python's own size estimate
SIZE_MARGIN = 256
#: an upper bound of a one-record batch's framing beyond its key and value, when it has no
#: headers (the batch header, the record's fields and varints): below it no estimate is needed
EVENT_OVERHEAD = 128
#: a key that must be cut keeps 1/KEY_SHARE of max_request_size (the value gets the rest)
KEY_SHARE = 4
#: outputs refused as too large are not cut below this many bytes (then they stay refused)
MIN_REFIT_BYTES = 1024


def record_size(key, value, headers=()) -> int:
    """The size kafka-python's producer gives a one-record batch of these (what it checks
    against max_request_size, refusing larger records for good)."""
    hdrs = list(headers or ())
    try:
        from kafka.record.default_records import DefaultRecordBatchBuilder
    except ImportError:  # another client version: a generous bound
        return (96 + len(key or b"") + len(value or b"") + 10 +
                sum(len(k.encode()) + len(v or b"") + 10 for k, v in hdrs))
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, hdrs)


def _is_too_large(exc) -> bool:
    """The broker (or the client's own check) refuses this one record as too large."""
    from kafka.errors import MessageSizeTooLargeError
    return isinstance(exc, MessageSizeTooLargeError)


class RetriableSinkError(SinkError):
    """Outputs not (yet) acknowledged by Kafka: retry (no input offset is committed past them)."""


class OutputsPending(RetriableSinkError):
    """The flush ran out of time: the outputs are still in flight (broker slow or down)."""


class ProducerFailed(RetriableSinkError):
    """A send failed for good on this producer: rebuild it and send the outputs again."""


class ProducerLink:
    """One kafka-python producer shared by the event and dead-letter sinks, with the outputs
    not yet acknowledged, so that a producer the client declares fatal can be replaced."""

    def __init__(self, kcfg, factory=None):
        self.kcfg = kcfg
        self._factory = factory or (lambda **kw: make_producer(kcfg, **kw))
        self.producer = self._factory()
        self._lock = threading.Lock()
        self._unacked: list = []  # (topic, value, key, headers, refit) since the last good flush
        self._too_large: set = set()  # ids of those refused as too large, to cut at rebuild
        #: per topic, the size its outputs are cut to after the broker refused one as too
        #: large (the topic's `max.message.bytes` below the producer's `max_request_size`)
        self.topic_limits: dict = {}
        self._error: BaseException | None = None
        self._error_topic: str | None = None
        self.rebuilds = 0
        self._generation = 0  # errbacks of a replaced producer are ignored

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def max_request_size(self) -> int:
        """The largest record the producer sends (kafka-python refuses larger ones for good)."""
        config = getattr(self.producer, "config", None) or {}
        return int(config.get("max_request_size") or DEFAULT_MAX_REQUEST_SIZE)

    def _on_error(self, topic, exc, generation=None, item=None) -> None:  # client IO thread
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if item is not None and _is_too_large(exc):
                self._too_large.add(id(item))
            if self._error is None:
                self._error, self._error_topic = exc, topic

    def send(self, topic: str, value: bytes, key=None, headers=None, refit=None) -> None:
        """Queue one output (kept until a flush acknowledges it). `refit`, a tuple
        (function, *args), gives the output cut to `limit` bytes as `function(*args, limit)`
        -> (value, key, headers), used if it is refused as too large (a tuple, not a closure:
        one per event on the hot path)."""
        item = (topic, value, key, headers or None, refit)
        self._unacked.append(item)
        if self._error is None:
            self._send(item)

    def _send(self, item) -> None:
        topic, value, key, headers, _ = item
        if self.producer is None:
            self._on_error(topic, RuntimeError("no producer"))
            return
        try:
            fut = self.producer.send(topic, value=value, key=key, headers=headers)
        except Exception as exc:  # noqa: BLE001 - fatal state, metadata timeout, ...
            self._on_error(topic, exc, item=item)
            return
        gen = self._generation
        fut.add_errback(lambda exc: self._on_error(topic, exc, gen, item))

    @property
    def failed(self) -> bool:
        """A send failed for good on this producer (or rebuilding it failed): `rebuild()`."""
        return self._error is not None or self.producer is None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def send_once(self, topic: str, value: bytes, key=None, headers=None, on_ack=None) -> bool:
        """Send one output that is not kept for a replay (a fleet sync: the next one
        supersedes it); `on_ack()` runs on the client's IO thread when it is acknowledged.
        A send that fails marks the link `failed`. False when nothing was sent."""
        if self.failed:
            return False
        try:
            fut = self.producer.send(topic, value=value, key=key, headers=headers or None)
        except Exception as exc:  # noqa: BLE001 - fatal state, metadata timeout, ...
            self._on_error(topic, exc)
            return False
        gen = self._generation
        if on_ack is not None:
            fut.add_callback(lambda _md: on_ack())
        fut.add_errback(lambda exc: self._on_error(topic, exc, gen))
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the acks of everything sent: OutputsPending when `timeout` runs out,
        ProducerFailed when a send failed (then `rebuild()`)."""
        if self.producer is None:
            raise ProducerFailed("no producer (rebuilding it failed)")
        if self._error is None:
            try:
                self.producer.flush(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError, or a fatal error
                from kafka.errors import KafkaTimeoutError

                if isinstance(exc, KafkaTimeoutError) and self._error is None:
                    raise OutputsPending(f"{len(self._unacked)} outputs not acknowledged "
                                         f"within {timeout}s") from None
                self._on_error(None, exc)
        with self._lock:
            err, topic = self._error, self._error_topic
        if err is not None:
            where = f"producing to {topic!r}" if topic else "producing"
            text = str(err).strip()
            if not text.startswith(type(err).__name__):
                text = f"{type(err).__name__}: {text}"
            raise ProducerFailed(f"{where} failed: {text}")
        self._unacked.clear()
        self._too_large.clear()

    def rebuild(self) -> None:
        """Replace the producer and send every unacknowledged output again. The new producer
        reuses the broker version the old one found, so building it does not wait for the
        cluster (it connects on the first send); an exception leaves the state retriable."""
        old = self.producer
        with self._lock:
            self._generation += 1  # the old producer's errbacks no longer count
        if old is not None:
            version = getattr(old, "config", {}).get("api_version")
            if version:
                self._version = version
            self.producer = None
            try:
                old.close(timeout=0)
            except Exception:  # noqa: BLE001 - a fatal producer may complain on close
                log.debug("closing the failed producer", exc_info=True)
        version = getattr(self, "_version", None)
        self.producer = self._factory(**({"api_version": version} if version else {}))
        with self._lock:
            self._error, self._error_topic = None, None
        self.rebuilds += 1
        self._cut_refused()
        for item in self._unacked:
            if self._error is not None:
                break
            self._send(item)

    def _cut_refused(self) -> None:
        """Cut each output the broker refused as too large to half its size (its topic's
        outputs too, from now on, in `topic_limits`), so one record over a topic's
        `max.message.bytes` does not hold up every output after it for ever."""
        with self._lock:
            refused, self._too_large = self._too_large, set()
        for i, item in enumerate(self._unacked):
            if id(item) not in refused:
                continue
            topic, value, key, headers, refit = item
            size = record_size(key, value, headers or ())
            limit = max(MIN_REFIT_BYTES, size // 2)
            if refit is None or limit >= size:
                log.error("the broker refuses a %d-byte output to topic %r as too large and "
                          "it cannot be cut further: raise the topic's max.message.bytes",
                          size, topic)
                continue
            if limit < self.topic_limits.get(topic, size + 1):
                self.topic_limits[topic] = limit
                log.warning("the broker refused a %d-byte output to topic %r as too large "
                            "(the topic's max.message.bytes is below the producer's "
                            "max_request_size, %d): outputs to %r are cut to %d bytes from "
                            "now on; raise the topic's max.message.bytes to keep them whole",
                            size, topic, self.max_request_size, topic, limit)
            value, key, headers = refit[0](*refit[1:], limit)
            self._unacked[i] = (topic, value, key, headers or None, refit)

    def close(self, timeout: float | None = None) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - e.g. a timeout while the cluster is down
                log.warning("closing the producer: %s: %s", type(exc).__name__, exc)
                log.debug("closing the producer", exc_info=True)


class KafkaSink:
    """JSON events (or raw dead letters) to one topic via a shared `ProducerLink`."""

    def __init__(self, kcfg, topic: str, producer=None):
        self.topic = topic
        self._owns = producer is None
        if producer is None:
            producer = ProducerLink(kcfg)
        elif not isinstance(producer, ProducerLink):  # a bare KafkaProducer
            bare = producer
            producer = ProducerLink(kcfg, factory=lambda **kw: bare)
        self.link = producer
        # the largest record the producer takes, less a margin (read once: the producer's
        # config does not change when it is rebuilt)
        self._request_limit = producer.max_request_size - SIZE_MARGIN

    @property
    def _limit(self) -> int:
        """The largest output this sink sends: the producer's limit, or lower once the
        broker refused one as too large for the topic (`ProducerLink.topic_limits`)."""
        return min(self._request_limit,
                   self.link.topic_limits.get(self.topic, self._request_limit))

    def send_event(self, event: dict, key: bytes | None = None) -> None:
        """Queue one scored-record event (JSON). An event that would be larger than the
        producer's `max_request_size` (only a huge key can make it so) has its key cut to
        fit (`fit_event`): sent whole, it would be refused for ever and hold up every
        output after it."""
        whole = value = dumps(event)
        whole_key = key
        limit = self._limit if self.link.topic_limits else self._request_limit
        if len(value) + len(key or b"") + EVENT_OVERHEAD > limit:
            value, key = fit_event(event, value, key, limit)
        self.link.send(self.topic, value, key=key, refit=(_refit_event, event, whole, whole_key))

    def send_dead_letter(self, rec, reason, message, exc_class, group) -> None:
        """Queue the original value with `__streamgmm.errors.*` headers. A dead letter that
        would be larger than the producer's `max_request_size` (a `too_large` record over
        1 MiB, with the defaults; or a huge key or headers) is cut to fit (`fit_dead_letter`):
        sent whole, it would be refused for ever and hold up every output after it. The
        whole record stays at the topic, partition and offset the headers name. A tombstone
        (a key, no value) stays one. A header with a null value (legal in Kafka, refused by
        kafka-python's producer) is sent with an empty one. One the broker refuses as too
        large (the topic's `max.message.bytes` below `max_request_size`) is cut to half its
        size at the producer's rebuild, and so is the topic's next output over that size."""
        value = rec.value
        if value is None and rec.key is None:  # a record needs a key or a value
            value = b""
        headers = dead_letter_headers(rec, reason, message, exc_class, group)
        headers = [(k, b"" if v is None else v) for k, v in headers]
        key = rec.key
        limit = self._limit
        n_own = len(own_headers(rec))
        refit = (_refit_dead_letter, key, value, headers, n_own)
        if record_size(key, value, headers) > limit:
            key, value, headers = fit_dead_letter(key, value, headers, n_own, limit)
        self.link.send(self.topic, value, key=key, headers=headers, refit=refit)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for all acks (see ProducerLink.flush)."""
        self.link.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        if self._owns:
            self.link.close(timeout)


def _refit_event(event: dict, value: bytes, key, limit: int):
    """(value, key, headers) of an event cut to `limit` (a `ProducerLink` refit)."""
    return (*fit_event(event, value, key, limit), None)


def _refit_dead_letter(key, value, headers: list, n_original: int, limit: int):
    """(value, key, headers) of a dead letter cut to `limit` (a `ProducerLink` refit)."""
    key, value, headers = fit_dead_letter(key, value, headers, n_original, limit)
    return value, key, headers


def fit_dead_letter(key, value, headers: list, n_original: int, limit: int):
    """(key, value, headers) of a dead letter cut to `limit` bytes (`record_size`): the value
    first (its first bytes that fit, and its whole size in `__streamgmm.errors.value.truncated`);
    when the key and headers alone are too large, the record's own headers are dropped too
    (their number in `__streamgmm.errors.headers.dropped`), then the key is cut to at most a
    quarter of the limit (its whole size in `__streamgmm.errors.key.truncated`). The
    streamgmm headers (where the record is and why it is a dead letter) are always kept."""
    empty = None if value is None else b""
    notes: list = []
    if value is not None:
        notes.append((H_VALUE_TRUNCATED, str(len(value)).encode()))
    if record_size(key, empty, headers + notes) > limit and n_original:
        notes.append((H_HEADERS_DROPPED, str(n_original).encode()))
        headers = headers[n_original:]
    if key and record_size(key, empty, headers + notes) > limit:
        notes.append((H_KEY_TRUNCATED, str(len(key)).encode()))
        room = limit - record_size(b"", empty, headers + notes) - 4
        key = key[:max(0, min(room, limit // KEY_SHARE))]  # the value gets the rest
    if value is not None:
        room = limit - record_size(key, b"", headers + notes) - 4
        if len(value) <= room:  # it fits once the headers are gone
            notes = notes[1:]
        else:
            value = value[:max(0, room)]
    return key, value, headers + notes


def fit_event(event: dict, value: bytes, key: bytes | None, limit: int):
    """(value, key) of an event cut to `limit` bytes (`record_size`): the Kafka key to at most
    a quarter of the limit, then the event's `key` field (as a JSON string: the text of a
    non-string key) to its first characters that fit, with `"key_truncated": true`. An event
    that does not fit even with an empty key is left as it is (a `max_request_size` too
    small for any event: a configuration problem, reported when the send fails)."""
    if record_size(key, value) <= limit:
        return value, key
    whole_key = key
    if key and len(key) > limit // KEY_SHARE:
        key = key[:limit // KEY_SHARE]
    text = event.get("key")
    if text is not None and not isinstance(text, str):
        text = dumps(text).decode()

    def cut(n: int) -> bytes:
        return dumps({**event, "key": None if text is None else text[:n],
                      "key_truncated": True})
    if record_size(key, cut(0)) > limit:  # no key makes it fit: left as it is
        return value, whole_key
    if text is None:
        return cut(0), key
    lo, hi = 0, len(text)  # the longest prefix that fits (escaping may grow each character)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if record_size(key, cut(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo), key


def make_producer(kcfg, **overrides):
    """A kafka-python producer with acks=all (user producer/security settings on top).

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
                  max_block_ms=DEFAULT_MAX_BLOCK_MS,
                  compression_type=None if codec in (None, "none") else codec)
    kwargs.update(dict(kcfg.security or {}))
    kwargs.update(dict(kcfg.producer or {}))
    kwargs.update(overrides)
    if kwargs.get("acks") not in ("all", -1, "-1"):
        log.warning("kafka.producer.acks=%r weakens at-least-once delivery", kwargs.get("acks"))
    return KafkaProducer(**kwargs)
