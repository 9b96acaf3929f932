"""The Kafka source: a KafkaConsumer in a consumer group, manual commits, a rebalance listener.

Same polled-batch interface as every source: `poll(timeout_ms, max_records) -> Batch`,
`commit(offsets) -> bool`, `assignment()`, `lag()`, `ready`, `exhausted`, `close()`.
"""
from __future__ import annotations

import logging

import re

from ..messages import EMPTY, Batch, SourceError

log = logging.getLogger(__name__)

#: how long a lag refresh (outputs held up, no polling) waits for the brokers' end offsets
LAG_REFRESH_TIMEOUT_MS = 500


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
        self._in_group = False  # an assignment (maybe empty) received since the last loss
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
            if lost or not self._assigned:
                self._in_group = False  # between a rebalance's revocation and assignment
        return fut

    def _commit_failed(self, exc) -> None:
        log.warning("offset commit on revocation failed (%s: %s); the partitions' new owner "
                    "re-reads from the previous commit", type(exc).__name__, exc)
        if self.on_commit_error is not None:
            self.on_commit_error(exc)

    def _assigned_cb(self, tps) -> None:
        tps = [(tp.topic, tp.partition) for tp in tps]
        self._assigned = set(tps)
        self._in_group = True
        log.info("partitions assigned: %s", _fmt(tps) or "(none: a standby while the group "
                 "has more members than partitions)")
        if self.on_assigned is not None:
            try:
                self.on_assigned(tps)
            except Exception:  # noqa: BLE001
                log.exception("rebalance callback failed")

    # polled-batch interface ------------------------------------------------------------------
    exhausted = False

    @property
    def ready(self) -> bool:
        """True once the group has given this consumer its assignment, even an empty one: a
        member with no partitions (more members than partitions) is a ready standby."""
        return self._in_group

    def connected(self) -> bool | None:
        """Whether the client holds a live connection to any broker (None: cannot tell).
        A consumer in a group always has one (coordinator, fetches) while the cluster is up."""
        try:
            conns = list(self.consumer._manager._conns.values())  # kafka-python 3 internals
            return any(getattr(c, "connected", False) for c in conns)
        except Exception:  # noqa: BLE001 - another client version: no outage detection
            return None

    def assignment(self) -> set:
        """The (topic, partition) pairs currently owned."""
        return set(self._assigned)

    def keepalive(self) -> None:
        """Show the group this member is alive while the main loop is busy elsewhere (a long
        warm-up fit): a poll of nothing, with every owned partition paused. kafka-python
        counts max_poll_interval_ms from the last poll; without this a fit longer than that
        (default 300 s) has the member evicted and its partitions given away, and the
        warm-up records are scored twice. A record the poll lets through anyway (from a
        partition assigned in that very poll) is sought back to: nothing is skipped."""
        owned = list(self.consumer.assignment())
        try:
            self.consumer.pause(*owned)
            polled = self.consumer.poll(timeout_ms=0)
            for tp, recs in polled.items():
                if recs:
                    self.consumer.seek(tp, recs[0].offset)
        except Exception as exc:  # noqa: BLE001 - the main loop's next poll meets it again
            log.debug("keep-alive poll: %s", exc)
        finally:
            now = self.consumer.assignment()
            try:
                self.consumer.resume(*[tp for tp in owned if tp in now])
            except Exception as exc:  # noqa: BLE001 - moved meanwhile: nothing to resume
                log.debug("keep-alive resume: %s", exc)

    def poll(self, timeout_ms: int, max_records: int) -> Batch:
        """Fetch up to `max_records` records (waiting at most `timeout_ms`)."""
        from kafka.errors import CorruptRecordError

        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except CorruptRecordError as exc:  # not skippable: stop before it, say where it is
            raise SourceError(_corrupt_message(exc, self._positions())) from None
        if not polled:
            return EMPTY
        records, nxt = [], {}
        for tp, recs in polled.items():
            if recs:
                records.extend(recs)
                nxt[(tp.topic, tp.partition)] = recs[-1].offset + 1
        return Batch(records, nxt)

    def _positions(self) -> dict:
        """{(topic, partition): the next offset to fetch} of the owned partitions (what is
        known of them without waiting)."""
        out = {}
        for tp in list(self.consumer.assignment()):
            try:
                pos = self.consumer.position(tp, timeout_ms=500)
            except Exception:  # noqa: BLE001 - partition moved, position unknown yet
                continue
            if pos is not None:
                out[(tp.topic, tp.partition)] = pos
        return out

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> bool:
        """Synchronously commit {(topic, partition): next_offset}; False (logged) on failure
        (CommitFailedError after a rebalance, timeouts, ...)."""
        if not offsets:
            return True
        from kafka.errors import KafkaError

        try:
            self.consumer.commit(_payload(offsets), timeout_ms=timeout_ms)
        except KafkaError as exc:
            return _retry_later(exc)
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
            return _retry_later(exc)
        return True

    def lag(self, refresh: bool = False) -> dict:
        """{(topic, partition): high watermark - position} for owned partitions known so far.
        The high watermarks come with the fetches; ``refresh`` asks the brokers for the end
        offsets instead (bounded wait), for when the loop is not polling (outputs held up)."""
        from kafka import TopicPartition

        out = {}
        tps = [TopicPartition(t, p) for t, p in list(self._assigned)]
        ends = {}
        if refresh and tps:
            try:
                ends = self.consumer.end_offsets(tps, timeout_ms=LAG_REFRESH_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 - brokers down: the fetched watermarks stand
                ends = {}
        for tp in tps:
            t, p = tp.topic, tp.partition
            try:
                hw = ends.get(tp)
                if hw is None:
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


def _corrupt_message(exc, positions: dict | None = None) -> str:
    """One line naming the corrupt batch's topic, partition and offset (kafka-python only says
    so in its message text). When the text does not say (a record kafka-python cannot parse,
    e.g. a header key that is not UTF-8), the partitions' positions: it is at or after one."""
    text = str(exc)
    for prefix in ("[Error 2] CorruptRecordError: ", "CorruptRecordError: "):
        text = text[len(prefix):] if text.startswith(prefix) else text
    m = re.search(r"topic='([^']*)', partition=(\d+)\) at offset (\d+)", text)
    if m:
        where = f"topic {m.group(1)} partition {m.group(2)} offset {m.group(3)}"
    elif positions:
        where = ("one of " + ", ".join(f"topic {t} partition {p} from offset {o}"
                                       for (t, p), o in sorted(positions.items())) +
                 " (kafka-python does not say which)")
    else:
        where = "a position kafka-python does not name"
    why = "CRC check failed" if "crc" in text.lower() else text
    if "UnicodeDecodeError" in text:
        why += ": a record header key that is not UTF-8, which kafka-python cannot read"
    return (f"corrupt record batch in {where} ({why}): stopping; nothing at or after it is "
            f"committed. Restarting reads it again: repair the topic or move the group's "
            f"offset past it (kafka-consumer-groups --reset-offsets) to skip it")


def _retry_later(exc) -> bool:
    """A failed commit of the main loop: logged; the next batch's commit carries it again."""
    log.warning("offset commit failed (%s: %s); will retry with the next batch",
                type(exc).__name__, exc)
    return False


def _fmt(tps) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))
