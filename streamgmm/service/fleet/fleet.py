"""One daemon's part in a fleet: its follower Detector, its syncs, and the leader's work
when Kafka makes it the leader. The daemon calls `tick()` once per loop iteration."""
from __future__ import annotations

import logging
import os
import socket
import time

from ...detection.detector import DetectionResult
from ...persistence import CheckpointError
from .coordination import Coordinator, ensure_topic
from .leader import Leader
from .member import MemberLink
from .messages import encode_sync
from .status import FleetStatus
from .tail import StateTail

log = logging.getLogger("streamgmm.fleet")

CATCH_UP_SECONDS = 30.0
REFIT_WAIT_SECONDS = 30.0


class FleetError(RuntimeError):
    """The fleet's topics cannot be used (one line, names the topic)."""


class Fleet:
    """Member (always) and leader (while it holds the coordination partition)."""

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
        self.leader = Leader(Detector, cfg, store, detector_config, features)
        self.version = 0
        self.status = FleetStatus(group=self.group)
        self._producer = None
        self._last_sync = time.monotonic()
        self._synced_at = time.monotonic()
        self._epoch = 0
        self._last_offset = None
        self._drift_seen = None
        self.coordinator = Coordinator(cfg.kafka, cfg.fleet.topic, self.group, self.member_id)
        self.tail = StateTail(cfg.kafka, store.topic, self.group, cfg.checkpoint.max_bytes)

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> DetectionResult:
        """Topics, threads, and the newest version adopted before anything is scored."""
        from ..kafka_io.producer import make_producer

        try:
            ensure_topic(self.cfg.kafka, self.cfg.fleet.topic)
        except RuntimeError as exc:
            raise FleetError(str(exc)) from None
        self._producer = make_producer(self.cfg.kafka, client_id=f"{self.cfg.kafka.client_id}"
                                       f"-fleet", linger_ms=20,
                                       max_request_size=16 << 20)
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

    def close(self, timeout: float = 5.0) -> None:
        try:
            if self._producer is not None:
                self._producer.flush(timeout)
                self._producer.close(timeout)
        except Exception:  # noqa: BLE001
            log.debug("closing the fleet producer", exc_info=True)
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
        self._sync_and_lead()
        if self.link.records_since_drift() > self._starve_limit:
            res = self._wait_for_refit(res)
        return res

    def _sync_and_lead(self) -> None:
        now = time.monotonic()
        if self.link.urgent or now - self._last_sync >= self.cfg.model.sync_seconds:
            self._last_sync = now
            self._send_sync()
        self._lead()

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
            more = self._adopt_newest()
            if len(more):
                res = DetectionResult.concat([res, more], list(res.events) + more.events)
            self._sync_and_lead()
        if self.det.model_version == gen:
            log.warning("fleet: no group refit within %.0fs; scoring on", REFIT_WAIT_SECONDS)
            self.link.forget_drift()
        return res

    def _adopt_newest(self) -> DetectionResult:
        newest = self.tail.newest()
        if newest is None:
            return DetectionResult.empty()
        version, data = newest
        if version <= self.version:
            self._synced_at = time.monotonic()
            return DetectionResult.empty()
        try:
            other = self.Detector.loads(data, origin=f"fleet version {version}")
        except CheckpointError as exc:
            log.warning("fleet: version %d refused (%s); keeping version %d", version, exc,
                        self.version)
            self.version = version  # do not retry the same bytes
            return DetectionResult.empty()
        generation = self.det.model_version
        res = self.det.adopt(other)
        if self.det.model_version != generation:
            log.info("fleet: member %s adopted version %d (model generation %d)",
                     self.member_id, version, self.det.model_version)
        self.version = version
        self._synced_at = time.monotonic()
        return res

    def _send_sync(self) -> None:
        meta, arrays = self.link.take(self.version)
        if not meta["n"] and not arrays and not meta["drift"]:
            return
        data = encode_sync(meta, arrays)
        self._producer.send(self.cfg.fleet.topic, value=data, key=self.group.encode())
        self.status.published += 1
        self.status.bytes[("coordination", "sent")] = \
            self.status.bytes.get(("coordination", "sent"), 0) + len(data)

    def _lead(self) -> None:
        epoch, recs = self.coordinator.take()
        if not self.coordinator.leader:
            return
        if epoch != self._epoch:
            self._epoch = epoch
            self.leader.take_over(self.tail.newest())
            self._last_offset = None
            self._lead_sync_at = time.monotonic()
        key = self.group.encode()
        for r in recs:
            if r.key == key and r.value is not None:
                self.status.bytes[("coordination", "received")] = \
                    self.status.bytes.get(("coordination", "received"), 0) + len(r.value)
                self.leader.receive(r)
            self._last_offset = r.offset + 1
        news = self.leader.drift is not None and self.leader.drift is not self._drift_seen
        self._drift_seen = self.leader.drift
        if news or time.monotonic() - self._lead_sync_at >= self.cfg.model.sync_seconds:
            self._lead_sync_at = time.monotonic()
            before = self.leader.version
            try:
                self.leader.sync()
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                log.error("fleet: publishing version %d failed: %s", before + 1, exc)
                return
            if self._last_offset is not None and self.leader.version > before:
                self.coordinator.commit(self._last_offset, epoch)

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
        s.members = sum(1 for t in self.leader.members.values()
                        if time.time() - t <= 3 * self.cfg.model.sync_seconds) \
            if s.leader else 0
        s.bytes[("state", "received")] = self.tail.bytes_read
        s.bytes[("state", "sent")] = self.leader.bytes_sent
        return s
