"""One daemon's part in a fleet: its follower Detector, its syncs, and the leader's work
when Kafka makes it the leader. The daemon calls `tick()` once per loop iteration."""
from __future__ import annotations

import logging
import os
import socket
import time

from ...detection.detector import DetectionResult
from ...persistence import CheckpointError
from ..kafka_io.producer import ProducerLink, make_producer
from ..kafka_io.state_store import StateTooLarge
from .coordination import Coordinator, ensure_coordination_topic
from .leader import Leader
from .member import MemberLink
from .messages import encode_sync, member_header, member_of
from .publisher import VersionPublisher
from .status import FleetStatus
from .tail import StateTail

log = logging.getLogger("streamgmm.fleet")

CATCH_UP_SECONDS = 30.0
ALONE_SYNCS = 3          # sync intervals without another member's sync: the leader is alone
REFIT_WAIT_SECONDS = 30.0
# A version not acknowledged this long is reported (once per episode of failures); it is
# written off the loop (publisher.py), so nothing waits for it meanwhile. At shutdown the
# lone member's last version is waited for at most this long.
PUBLISH_LATE_SECONDS = 5.0


class FleetError(RuntimeError):
    """The fleet's topics cannot be used (one line, names the topic)."""


class Fleet:
    """Member (always) and leader (while it holds the coordination partition).

    A leader that hears no other member runs *solo*: its Detector runs its own policy
    exactly as a single daemon's (online steps every batch_size records, threshold, drift,
    refits) and its state is published as a version every `model.sync_seconds`, so a lone
    member is today's daemon with its checkpoints in Kafka. The first sync of another member
    turns the group shared again: the leader's model becomes the group's, its Detector a
    follower; after ALONE_SYNCS intervals without another member it goes solo again.
    """

    def __init__(self, cfg, store, Detector, detector_config):
        self.cfg, self.store, self.Detector = cfg, store, Detector
        self.group = cfg.kafka.group_id
        self.member_id = f"{cfg.kafka.client_id}@{socket.gethostname()}:{os.getpid()}"
        features = list(cfg.records.features)
        self.det = Detector(detector_config, feature_names=features)
        self.link = MemberLink(self.member_id, cfg.fleet.sample_records,
                               cfg.detector.warmup_records)
        self.link.det = self.det
        self.det.follow(self.link)
        self.leader = Leader(Detector, cfg, detector_config, features)
        self.publisher = VersionPublisher(store)
        self.version = 0
        self.status = FleetStatus(group=self.group)
        self._link = None   # the coordination producer (a ProducerLink: rebuilt when fatal)
        self._sync_failing_since = None
        self._last_sync = time.monotonic()
        self._synced_at = time.monotonic()
        self._epoch = 0
        self._last_offset = None
        self._drift_seen = None
        self.solo = False
        self._refused: set = set()   # versions that did not verify
        self._failing_since = None   # publishes failing since (monotonic), or None
        self._failing_kind = None    # the kind of failure reported for this episode
        self._others_at = None   # when another member's sync last arrived (as leader)
        self.coordinator = Coordinator(cfg.kafka, cfg.fleet.topic, self.group, self.member_id)
        self.tail = StateTail(cfg.kafka, store.topic, self.group, cfg.checkpoint.max_bytes)

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> DetectionResult:
        """Topics, threads, and the newest version adopted before anything is scored."""
        try:
            ensure_coordination_topic(self.cfg.kafka, self.cfg.fleet.topic)
        except RuntimeError as exc:
            raise FleetError(str(exc)) from None
        self._link = ProducerLink(self.cfg.kafka, factory=self._make_producer)
        self.tail.start()
        if not self.tail.caught_up.wait(CATCH_UP_SECONDS):
            log.warning("fleet: the state topic %s was not read to its end within %.0fs; "
                        "records wait for the first version", self.store.topic,
                        CATCH_UP_SECONDS)
        if self.tail.error is not None:
            raise FleetError(f"checkpoint.topic: cannot read the state topic "
                             f"{self.store.topic!r}: {self.tail.error}")
        self.coordinator.start()
        res = self._adopt_newest()
        if self.det.ready:
            log.info("fleet: member %s starts on version %d (model generation %d), no warm-up",
                     self.member_id, self.version, self.det.model_version)
        else:
            log.info("fleet: member %s waits for the group's first version (the leader fits "
                     "it on %d records from all members)", self.member_id,
                     self.cfg.detector.warmup_records)
        return res

    def _make_producer(self, **overrides):
        return make_producer(self.cfg.kafka, **{"client_id": f"{self.cfg.kafka.client_id}-fleet",
                                                "linger_ms": 20, "max_request_size": 16 << 20,
                                                **overrides})

    def close(self, timeout: float = 5.0) -> None:
        if self.solo and self.coordinator.leader:  # the final checkpoint of a lone member
            deadline = time.monotonic() + min(timeout, PUBLISH_LATE_SECONDS)
            self.publisher.wait(deadline - time.monotonic())   # the one in flight first
            self._publish_outcome()
            self._publish_own(self._epoch)
            self.publisher.wait(deadline - time.monotonic())
            self._publish_outcome()
        if self._link is not None:
            try:
                self._link.flush(timeout)
            except Exception:  # noqa: BLE001 - syncs not acknowledged are superseded anyway
                log.debug("flushing the fleet producer", exc_info=True)
            self._link.close(timeout)
        self.coordinator.stop(timeout)
        self.tail.stop(timeout)
        self.leader.wait(0.5)

    # ------------------------------------------------------------------------------ loop
    def tick(self) -> DetectionResult:
        """Adopt a newer version; send this member's sync and, as leader, merge and publish
        when an interval has passed. Results of records that waited for a first version."""
        for t in (self.coordinator, self.tail):
            if t.error is not None:
                raise FleetError(f"fleet: {t.name} failed: {type(t.error).__name__}: "
                                 f"{t.error}")
        res = self._adopt_newest()
        res = _joined(res, self._sync_and_lead())
        if not self.solo and self.link.records_since_drift() > self._starve_limit:
            res = self._wait_for_refit(res)
        return res

    def _sync_and_lead(self) -> DetectionResult:
        now = time.monotonic()
        if not self.solo and (self.link.urgent or
                              now - self._last_sync >= self.cfg.model.sync_seconds):
            self._last_sync = now
            self._send_sync()
        return self._lead()

    @property
    def _starve_limit(self) -> int:
        r = self.cfg.detector.refit
        return r.min_records + r.max_pending_records

    def _wait_for_refit(self, res) -> DetectionResult:
        """A fast stream must not starve the group refit this member asked for (as
        `refit.max_pending_records` in the single detector): wait for the new generation,
        at most REFIT_WAIT_SECONDS, syncing (and leading) meanwhile."""
        gen, deadline = self.det.model_version, time.monotonic() + REFIT_WAIT_SECONDS
        log.info("fleet: %d records scored since this member's drift report; waiting for "
                 "the group's refit (at most %.0fs)", self.link.records_since_drift(),
                 REFIT_WAIT_SECONDS)
        while self.det.model_version == gen and time.monotonic() < deadline:
            time.sleep(0.05)
            res = _joined(res, self._adopt_newest())
            res = _joined(res, self._sync_and_lead())
            if self.solo:
                break
        if self.det.model_version == gen:
            log.warning("fleet: no group refit within %.0fs; scoring on", REFIT_WAIT_SECONDS)
            self.link.forget_drift()
        return res

    def _adopt_newest(self) -> DetectionResult:
        """Adopt the newest version that verifies (a torn or corrupt one is refused, once,
        and the one before it is used, as with the file checkpoint)."""
        if self.solo:  # solo: the newest version is this member's own
            return DetectionResult.empty()
        for version, data in self.tail.candidates():
            if version <= self.version:
                self._synced_at = time.monotonic()
                return DetectionResult.empty()
            if version in self._refused:
                continue
            try:
                other = self.Detector.loads(data, origin=f"fleet version {version}")
            except CheckpointError as exc:
                log.warning("fleet: version %d refused (%s); trying the one before",
                            version, " ".join(str(exc).split()))
                self._refused.add(version)
                continue
            return self._adopt(version, other)
        return DetectionResult.empty()

    def _adopt(self, version, other) -> DetectionResult:
        generation = self.det.model_version
        res = self.det.adopt(other)
        if self.det.model_version != generation:
            log.info("fleet: member %s adopted version %d (model generation %d)",
                     self.member_id, version, self.det.model_version)
        self.version = version
        self._synced_at = time.monotonic()
        return res

    def _send_sync(self) -> None:
        """This member's statistics to the coordination topic. Counted when the cluster
        acknowledges them. A send that fails for good (the producer declared fatal, e.g.
        after a broker lost its producer state) gets the producer rebuilt before the next
        sync, as the sinks' producer is; the statistics of a failed sync are lost (the
        leader merges the next ones), never the records.

        Sent at every interval, with nothing to report too: a sync is also how the leader
        knows the member is there. A member waiting for the first version has nothing to
        send once its rows are out; silent, it made the leader take itself for alone (no
        sync for ALONE_SYNCS intervals), go solo and wait for a warm-up of its own
        partitions, without the rows the member had sent."""
        messages = [encode_sync(meta, arrays) for meta, arrays in self.link.take_all(self.version)]
        if self._link.failed:
            self._sync_failed(self._link.error)
            try:
                self._link.rebuild()
            except Exception as exc:  # noqa: BLE001 - retried at the next sync
                log.debug("fleet: rebuilding the producer: %s: %s", type(exc).__name__, exc)
                return
        for data in messages:  # the sync, then the rows that did not fit in it
            if not self._link.send_once(self.cfg.fleet.topic, data, key=self.group.encode(),
                                        headers=member_header(self.member_id),
                                        on_ack=lambda n=len(data): self._sync_acked(n)):
                self._sync_failed(self._link.error)
                return

    def _sync_acked(self, size: int) -> None:  # on the producer's IO thread
        self.status.published += 1
        self.status.bytes[("coordination", "sent")] = \
            self.status.bytes.get(("coordination", "sent"), 0) + size
        if self._sync_failing_since is not None:
            log.info("fleet: statistics reach the coordination topic again after %.1fs",
                     time.monotonic() - self._sync_failing_since)
            self._sync_failing_since = None

    def _sync_failed(self, exc: BaseException | None) -> None:
        """One warning per episode of failed syncs (the producer is rebuilt before the next)."""
        if self._sync_failing_since is None:
            self._sync_failing_since = time.monotonic()
            log.warning("fleet: sending statistics to %s failed (%s: %s); the producer is "
                        "rebuilt and the next sync retried", self.cfg.fleet.topic,
                        type(exc).__name__ if exc else "no producer", exc or "")

    def _lead(self) -> DetectionResult:
        res = DetectionResult.empty()
        self._publish_outcome()
        epoch, recs = self.coordinator.take()
        if not self.coordinator.leader:
            if self.solo:
                self._to_follower()
            return res
        now = time.monotonic()
        if epoch != self._epoch:
            self._epoch = epoch
            self.leader.take_over(self.tail.candidates())
            self._last_offset = None
            self._lead_sync_at = now
            self._others_at = None
            if not self.solo:  # alone until another member is heard from
                res = _joined(res, self._to_solo())
        key = self.group.encode()
        for r in recs:
            if r.key == key and r.value is not None:
                self.status.bytes[("coordination", "received")] = \
                    self.status.bytes.get(("coordination", "received"), 0) + len(r.value)
                if member_of(r.headers) != self.member_id:
                    self._others_at = now
                    if self.solo and not self._to_fleet():
                        continue   # a refit of its own is running: shared from the next sync
                if not self.solo:
                    self.leader.receive(r)
            self._last_offset = r.offset + 1
        if self.solo:
            if now - self._lead_sync_at >= self.cfg.model.sync_seconds:
                self._lead_sync_at = now
                self._publish_own(epoch)
            return res
        if (self._others_at is None or now - self._others_at >
                ALONE_SYNCS * self.cfg.model.sync_seconds) and not self.leader.fitting:
            return _joined(res, self._to_solo())
        news = self.leader.drift is not None and self.leader.drift is not self._drift_seen
        self._drift_seen = self.leader.drift
        if news or time.monotonic() - self._lead_sync_at >= self.cfg.model.sync_seconds:
            self._lead_sync_at = time.monotonic()
            try:
                self.leader.sync()
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                self._publish_failed(self.leader.version + 1, exc)
                return res
            if self.leader.unpublished and self.leader.det is not None and \
                    self._publish(self.leader.version + 1, self.leader.det, epoch, solo=False):
                self.leader.unpublished = False
        return res

    # ------------------------------------------------------------------- alone or shared
    def _to_solo(self) -> DetectionResult:
        """Alone in the group: this member's Detector runs its own policy from the group's
        current model (the leader's copy, when there is one)."""
        res = DetectionResult.empty()
        if self.leader.det is not None and self.leader.det.ready:
            res = self.det.adopt(self.Detector.loads(self.leader.det.dumps()))
        self.link.forget_drift()
        res = _joined(res, self.det.unfollow())
        self.solo = True
        log.info("fleet: member %s is alone in group %s: it runs the model itself, as a "
                 "single daemon, and publishes it every %.1fs", self.member_id, self.group,
                 self.cfg.model.sync_seconds)
        return res

    def _to_fleet(self) -> bool:
        """Another member is here: this member's model becomes the group's; False (stay solo
        for now) while a refit of its own is running."""
        if self.det.refit_running:
            return False
        self.leader.det = (self.Detector.loads(self.det.dumps()) if self.det.ready else None)
        self.leader.version = self.version
        self.leader.drift = None
        self.link.restart_warm_rows()
        self.det.follow(self.link)
        self.solo = False
        log.info("fleet: another member joined group %s: one shared model from version %d",
                 self.group, self.version)
        return True

    def _to_follower(self) -> None:
        """Leadership went elsewhere while solo: follow the group's versions again."""
        self.link.restart_warm_rows()
        self.det.follow(self.link)
        self.solo = False

    def _publish_own(self, epoch: int) -> None:
        """Solo: this member's Detector is the group's model; publish it as the next
        version (it is also the checkpoint a new or restarted member restores)."""
        if not self.det.ready:
            return
        newest = self.tail.newest()  # numbers go on above every version seen (a refused too)
        nxt = max(self.version, self.leader.version, newest[0] if newest else 0) + 1
        self._publish(nxt, self.det, epoch, solo=True)

    def _publish(self, version: int, det, epoch: int, solo: bool) -> bool:
        """Hand `det`'s state to the publisher as `version` (written off the loop; its
        outcome is looked at by `_publish_outcome`). False when it was not handed on: a
        version still in flight (the newer state goes at a later sync), or a failure."""
        if self.publisher.in_flight is not None:
            return False
        try:
            self.publisher.submit(version, det.dumps(), epoch=epoch, solo=solo,
                                  offset=self._last_offset)
        except Exception as exc:  # noqa: BLE001 - StateTooLarge; retried at the next sync
            self._publish_failed(version, exc)
            return False
        return True

    def _publish_outcome(self) -> None:
        """What became of the version in flight: acknowledged (the version counts, and the
        coordination offset of the syncs merged into it is committed), failed, or late."""
        job = self.publisher.take()
        if job is None:
            job = self.publisher.in_flight
            if job is not None and time.monotonic() - job.started > PUBLISH_LATE_SECONDS:
                self._publish_failed(job.version, None)
            return
        if job.error is not None:
            self._publish_failed(job.version, job.error)
            if not job.tag["solo"]:
                self.leader.unpublished = True  # the group's state goes at the next sync
            return
        self._published_ok()
        self.leader.bytes_sent += job.size
        self.leader.version = max(self.leader.version, job.version)
        if job.tag["epoch"] != self._epoch or not self.coordinator.leader:
            return  # leadership changed meanwhile: its offsets are another epoch's
        if job.tag["solo"]:
            self.version = max(self.version, job.version)
            self._synced_at = time.monotonic()
        if job.tag["offset"] is not None:
            self.coordinator.commit(job.tag["offset"], job.tag["epoch"])

    def _publish_failed(self, version: int, exc: BaseException | None) -> None:
        """One error line per episode of failed publishes (a broker outage, a state over
        checkpoint.max_bytes), not one per sync, and one more if the state turns out too
        large meanwhile; retried at every sync meanwhile. `exc` None: the version in
        flight is not acknowledged after PUBLISH_LATE_SECONDS (the brokers do not answer)."""
        name = type(exc).__name__ if exc is not None else ""
        too_large = isinstance(exc, StateTooLarge) or "TooLarge" in name
        if self._failing_since is not None and too_large == self._failing_kind:
            log.debug("fleet: publishing version %d failed again: %s", version,
                      exc or "not acknowledged yet")
            return
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._failing_kind = too_large
        have = self.version or self.leader.version
        meanwhile = (f"members keep version {have}" if have else
                     "members waiting for the group's first version hold their input")
        if too_large:
            size = getattr(exc, "size", 0)
            if isinstance(exc, StateTooLarge):
                why = (f"the group's model is {size:,} bytes, over checkpoint.max_bytes "
                       f"({exc.limit:,})")
            else:  # the brokers refused it: the topic's max.message.bytes
                why = f"the brokers refused it as too large ({name}: {exc})"
            log.error("fleet: version %d cannot be published to %s: %s. Set "
                      "checkpoint.max_bytes%s on every member and the state topic's "
                      "max.message.bytes to match, or make the model smaller "
                      "(detector.covariance_type: diag, fewer components or features); "
                      "until then %s", version, self.store.topic, why,
                      f" to at least {size:,}" if size else "", meanwhile)
        elif exc is None:
            log.error("fleet: version %d is not acknowledged by %s after %.0fs (brokers "
                      "unreachable?); it is written in the background, scoring goes on, "
                      "%s", version, self.store.topic, PUBLISH_LATE_SECONDS, meanwhile)
        else:
            log.error("fleet: publishing version %d to %s failed (%s: %s); retried at the "
                      "next sync (every %.1fs), %s", version, self.store.topic, name, exc,
                      self.cfg.model.sync_seconds, meanwhile)

    def _published_ok(self) -> None:
        if self._failing_since is not None:
            log.info("fleet: versions are published again after %.1fs",
                     time.monotonic() - self._failing_since)
            self._failing_since = self._failing_kind = None

    def take_events(self) -> list:
        return self.leader.take_events()

    def snapshot(self) -> FleetStatus:
        s = self.status
        s.version = self.version
        s.leader = bool(self.coordinator.leader)
        newest = self.tail.newest()
        s.sync_age = 0.0 if newest is None or newest[0] <= self.version else \
            time.monotonic() - (self.tail.seen_at or time.monotonic())
        s.merged = self.leader.merged
        s.members = 0 if not s.leader else 1 if self.solo else \
            sum(1 for t in self.leader.members.values()
                if time.time() - t <= ALONE_SYNCS * self.cfg.model.sync_seconds)
        s.bytes[("state", "received")] = self.tail.bytes_read
        s.bytes[("state", "sent")] = self.leader.bytes_sent
        return s


def _joined(a: DetectionResult, b: DetectionResult) -> DetectionResult:
    """Two consecutive results as one (events of both)."""
    if not len(b) and not b.events:
        return a
    if not len(a) and not a.events:
        return b
    return DetectionResult.concat([a, b], list(a.events) + list(b.events))
