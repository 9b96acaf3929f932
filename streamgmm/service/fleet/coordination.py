"""Leadership and the leader's inbox: a one-partition coordination topic read by a consumer
group of all members (`<group>.fleet`).

Kafka's group coordinator assigns the topic's single partition to exactly one member: that
member is the leader. When it leaves or dies (session timeout) the partition moves to another
member, which reads on from the group's committed offset, so the syncs since the last
published version are merged again, not lost. Members send their syncs to the same topic.
Everything Kafka runs in one thread owned by this class (a KafkaConsumer is not thread-safe).
"""
from __future__ import annotations

import collections
import logging
import threading

from ..kafka_io.topics import ensure_topic

log = logging.getLogger("streamgmm.fleet")


def ensure_coordination_topic(kcfg, topic: str) -> bool:
    """Create the coordination topic if missing (1 partition, delete policy); True when
    created here. Raises with a one-line message naming the key and the topic."""
    try:
        return ensure_topic(kcfg, topic, "delete", f"{kcfg.client_id}-fleet",
                            what="coordination topic")
    except Exception as exc:  # noqa: BLE001 - authorization, cluster policy, ...
        raise RuntimeError(f"fleet.topic: cannot create the coordination topic {topic!r}: "
                           f"{type(exc).__name__}: {exc}") from None


class Coordinator(threading.Thread):
    """Owns the coordination consumer: `leader` tells whether this member holds the
    partition, `epoch` changes at every gain of leadership, `take()` returns the records
    read since (as leader), `commit(offset)` asks for the group offset to be committed."""

    def __init__(self, kcfg, topic: str, group: str, member_id: str):
        super().__init__(name="streamgmm-fleet-coordination", daemon=True)
        self.kcfg, self.topic, self.group_id = kcfg, topic, f"{group}.fleet"
        self.member_id = member_id
        self.leader = False
        self.epoch = 0
        self._inbox = collections.deque()
        self._lock = threading.Lock()
        self._commit_to = None
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def take(self) -> tuple:
        """(epoch, records) received since the last call while leader."""
        with self._lock:
            out = list(self._inbox)
            self._inbox.clear()
            return self.epoch, out

    def commit(self, offset: int, epoch: int) -> None:
        with self._lock:
            if epoch == self.epoch and self.leader:
                self._commit_to = int(offset)

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)

    def run(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        outer = self
        tp = TopicPartition(self.topic, 0)

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                with outer._lock:
                    if outer.leader:
                        log.info("fleet: this member (%s) is no longer the leader",
                                 outer.member_id)
                    outer.leader = False
                    outer._inbox.clear()
                    outer._commit_to = None

            def on_partitions_assigned(self, assigned):
                with outer._lock:
                    outer.leader = tp in set(assigned)
                    if outer.leader:
                        outer.epoch += 1
                        outer._inbox.clear()
                        log.info("fleet: this member (%s) is the leader (epoch %d)",
                                 outer.member_id, outer.epoch)

        kc = self.kcfg
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=list(kc.bootstrap_servers), group_id=self.group_id,
                client_id=f"{kc.client_id}-fleet", enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=kc.session_timeout_ms,
                heartbeat_interval_ms=kc.heartbeat_interval_ms, fetch_max_wait_ms=200,
                max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20,
                **dict(kc.security or {}))
            consumer.subscribe([self.topic], listener=Listener())
        except BaseException as exc:  # noqa: BLE001 - reported by the fleet on the main loop
            self.error = exc
            return
        try:
            while not self._halt.is_set():
                got = consumer.poll(timeout_ms=200, max_records=1000)
                with self._lock:
                    if self.leader:
                        for recs in got.values():
                            self._inbox.extend(recs)
                    commit_to, self._commit_to = self._commit_to, None
                if commit_to is not None:
                    try:
                        consumer.commit({tp: OffsetAndMetadata(commit_to, "", -1)})
                    except Exception as exc:  # noqa: BLE001 - re-read after a new leader
                        log.warning("fleet: committing the coordination offset failed: %s", exc)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            try:
                consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
