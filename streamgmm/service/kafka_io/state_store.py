"""The detector's checkpoint in Kafka (`checkpoint.store: kafka`).

One record per checkpoint in a compacted one-partition topic, keyed by the consumer group id;
its value is the checkpoint bytes the file checkpoint writes (NPZ + checksummed manifest,
`persistence.dumps_state`). `save` produces it with acks=all and waits for the ack, so a
checkpoint is either in the topic whole or not at all. `load` reads the topic from the start to
its end offsets with a plain assigned consumer (no group) and returns the newest record for this
key that verifies: a torn, corrupted or incompatible record is refused with a log line and the
one before it is tried (as far back as compaction has left records). A tombstone (null value)
means "no state": nothing older is used.
"""
from __future__ import annotations

import logging
import time

from .producer import make_producer
from .topics import ensure_topic

log = logging.getLogger("streamgmm.state_store")

RECORD_OVERHEAD_BYTES = 16 * 1024   # key, headers, record and batch framing beyond the value
LOAD_TIMEOUT_SECONDS = 60.0
SEND_TIMEOUT_SECONDS = 30.0


class StateStoreError(RuntimeError):
    """The state topic cannot be created, read or written (the message says why)."""


class StateTooLarge(StateStoreError):
    """A checkpoint bigger than `checkpoint.max_bytes` (`size` and `limit`, in bytes)."""

    def __init__(self, message: str, size: int = 0, limit: int = 0):
        super().__init__(message)
        self.size, self.limit = int(size), int(limit)


class KafkaStateStore:
    """`save(bytes)` / `load(verify)` on `topic`, keyed by `key` (the group id)."""

    def __init__(self, kcfg, topic: str, key: str, max_bytes: int = 1_000_000,
                 recent_records: bool = False):
        self.kcfg = kcfg
        self.topic = topic
        self.key = key.encode() if isinstance(key, str) else key
        self.max_bytes = int(max_bytes)
        self.recent_records = bool(recent_records)  # checkpoint.include_recent_records
        self._producer = None

    def _client_kwargs(self) -> dict:
        kw = dict(bootstrap_servers=list(self.kcfg.bootstrap_servers),
                  client_id=f"{self.kcfg.client_id}-state")
        kw.update(dict(self.kcfg.security or {}))
        return kw

    # ------------------------------------------------------------------------------ topic
    def ensure_topic(self) -> bool:
        """Create the topic if missing (1 partition, cleanup.policy=compact, the cluster's
        default replication factor). True when it was created here."""
        try:
            return ensure_topic(self.kcfg, self.topic, "compact",
                                f"{self.kcfg.client_id}-state", what="state topic",
                                on_existing=self._check_policy)
        except Exception as exc:  # noqa: BLE001 - authorization, cluster policy, ...
            raise StateStoreError(f"checkpoint.topic: cannot create the state topic "
                                  f"{self.topic!r}: {type(exc).__name__}: {exc}") from None

    def _check_policy(self, admin) -> None:
        """Warn when an existing topic is not compacted (it would grow without bound, or
        delete the state with retention). Best effort: unanswered means unchecked."""
        from kafka.admin import ConfigResource, ConfigResourceType
        try:
            res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, self.topic)],
                                         config_filter="all")
            policy = res.get("topic", {}).get(self.topic, {}).get("cleanup.policy", {})
            value = policy.get("value") if isinstance(policy, dict) else None
        except Exception as exc:  # noqa: BLE001
            log.debug("cannot describe the state topic's config: %s", exc)
            return
        if value is not None and "compact" not in str(value):
            log.warning("state topic %s has cleanup.policy=%s, not compact: old states are "
                        "kept until retention deletes them, and retention may delete the "
                        "newest one", self.topic, value)

    # ------------------------------------------------------------------------------- save
    def save(self, data: bytes, headers: list | None = None,
             timeout: float = SEND_TIMEOUT_SECONDS) -> int:
        """Write one checkpoint record (acks=all) and wait for its ack (at most `timeout`
        seconds): its offset."""
        self.check_size(data)
        if self._producer is None:
            kw = self._client_kwargs()
            kw.pop("bootstrap_servers")
            self._producer = make_producer(
                self.kcfg, client_id=kw.pop("client_id"), acks="all", linger_ms=0,
                max_request_size=self.max_bytes + RECORD_OVERHEAD_BYTES)
        meta = self._producer.send(self.topic, value=bytes(data), key=self.key,
                                   headers=headers).get(timeout=timeout)
        return meta.offset

    def check_size(self, data: bytes) -> None:
        """StateTooLarge when `data` is over `checkpoint.max_bytes` (never written)."""
        if len(data) > self.max_bytes:
            if self.recent_records:
                hint = ("Turn off checkpoint.include_recent_records or lower "
                        "detector.refit.window, or raise the topic's max.message.bytes and "
                        "then checkpoint.max_bytes")
            else:  # the model itself: full covariances grow with features^2 x components
                hint = ("Without checkpoint.include_recent_records this is the model itself, "
                        "which grows with the square of the number of features times the "
                        "components (150 features: ~4 MB); raise the topic's "
                        "max.message.bytes and then checkpoint.max_bytes, or use "
                        "checkpoint.store: file")
            raise StateTooLarge(
                f"the state is {len(data):,} bytes, over checkpoint.max_bytes "
                f"({self.max_bytes:,}); not written to {self.topic}. {hint}",
                len(data), self.max_bytes)

    def close(self, timeout: float | None = 5.0) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout)
            finally:
                self._producer = None

    # ------------------------------------------------------------------------------- load
    def read(self, timeout: float = LOAD_TIMEOUT_SECONDS) -> list:
        """This key's records, oldest first, from the start of the topic to its end offsets."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            **self._client_kwargs(), group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=max(1 << 20, self.max_bytes + RECORD_OVERHEAD_BYTES),
            fetch_max_bytes=max(50 << 20, self.max_bytes + RECORD_OVERHEAD_BYTES))
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                raise StateStoreError(f"checkpoint.topic: the state topic {self.topic!r} "
                                      f"does not exist")
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout
            out = []
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    where = ", ".join(f"{tp.partition}: {consumer.position(tp)}/{end[tp]}"
                                      for tp in tps)
                    raise StateStoreError(f"reading the state topic {self.topic!r} took over "
                                          f"{timeout:.0f}s (partition: offset/end {where})")
                for recs in consumer.poll(200).values():
                    out.extend(r for r in recs if r.key == self.key)
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            consumer.close()

    def load(self, verify, timeout: float = LOAD_TIMEOUT_SECONDS):
        """`(verify(value), offset)` of the newest record of this key that `verify` accepts
        (it raises on a bad one: logged, the previous record is tried); None when the key has
        no record or its newest is a tombstone. StateStoreError when records exist and none
        verifies (never started from a half-read state)."""
        recs = self.read(timeout)
        refused = 0
        for rec in reversed(recs):
            if rec.value is None:
                log.info("state topic %s: newest state of %s is a tombstone (deleted)",
                         self.topic, self.key.decode(errors="replace"))
                break
            try:
                return verify(rec.value), rec.offset
            except Exception as exc:  # noqa: BLE001 - refuse it, try the one before
                refused += 1
                log.warning("state record %s[%d]@%d (%d bytes) refused: %s; trying the "
                            "previous one", rec.topic, rec.partition, rec.offset,
                            len(rec.value), " ".join(str(exc).split()))
        if refused:
            raise StateStoreError(
                f"no valid state for key {self.key.decode(errors='replace')!r} in "
                f"{self.topic!r}: {refused} record(s) refused. To start afresh, delete it: "
                f"produce a tombstone (null value) with that key")
        return None
