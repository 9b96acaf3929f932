"""The leader's work: merge the members' syncs into the group model and publish versions.

Each `model.sync_seconds` the leader pools the statistics of every member's sync (one online
step of the pooled average, `models.pooled.apply`), adds their normal scores to the group
threshold and marks the group model `unpublished`: the fleet then publishes it as the next
version to the state topic (`publisher.py`, off the loop). The first version is fitted on
the rows members buffered for it, each member's share in proportion to the rows it sent (so
one member's large sync does not crowd the others' partitions out); a drift alarm from any
member starts one refit for the whole group, on the pooled row sample since the estimated
change; alarms about an older generation (the refit already landed) are ignored. Refits run
in a background thread.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ...detection.detector import MIN_RESTART_SCORES, DetectorEvent
from ...models import pooled
from ...persistence import CheckpointError
from .messages import decode_sync
from .sampling import proportional

log = logging.getLogger("streamgmm.fleet")


class _Ring:
    """The newest `cap` rows (2-D) or values (1-D) with their wall times."""

    def __init__(self, cap: int):
        self.cap = int(cap)
        self.values = None
        self.times = np.zeros(0)

    def add(self, values, times) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.values = values if self.values is None else np.concatenate([self.values, values])
        self.times = np.concatenate([self.times, np.asarray(times, dtype=np.float64)])
        if len(self.times) > self.cap:
            self.values, self.times = self.values[-self.cap:], self.times[-self.cap:]

    def since(self, t: float):
        if self.values is None:
            return np.zeros((0,))
        return self.values[self.times >= t]

    def __len__(self) -> int:
        return len(self.times)


class Leader:
    """The group detector and what is pending for the next version."""

    def __init__(self, Detector, cfg, detector_config, feature_names):
        self.Detector, self.cfg = Detector, cfg
        self.detector_config, self.feature_names = detector_config, feature_names
        self.det = None
        self.version = 0              # the newest version acknowledged by the state topic
        self.unpublished = False      # the group model changed since the last version sent
        self.rows = _Ring(cfg.detector.refit.window)
        self.scores = _Ring(cfg.detector.threshold.window)
        self.warm: dict = {}          # member id -> its warm-up rows, for the first version
        self._reset_pending()
        self.members: dict = {}       # member id -> wall time of its last sync
        self.merged = 0
        self.drift = None             # {"generation", "change_time", ...} being acted on
        self._post_records = 0        # records the members scored since the drift report
        self._job = None              # (thread, result box, reason, started)
        self.events: list = []
        self.bytes_sent = 0

    @property
    def fitting(self) -> bool:
        """A group fit or refit is running (or finished, not yet swapped in)."""
        return self._job is not None

    def _reset_pending(self):
        self._stats = None
        self._n = self._steps = 0
        self._new_scores = []
        self._dirty = False

    # --------------------------------------------------------------------- taking over
    def take_over(self, candidates) -> None:
        """Become leader from the newest published version that verifies (candidates:
        newest first; none: warm-up). Version numbers go on from the newest."""
        self._reset_pending()
        self.rows = _Ring(self.cfg.detector.refit.window)
        self.scores = _Ring(self.cfg.detector.threshold.window)
        self.warm = {}
        self.drift = None
        self.det = None
        self.unpublished = False
        self.version = int(candidates[0][0]) if candidates else 0
        for version, data in candidates:
            try:
                self.det = self.Detector.loads(data, origin=f"fleet version {version}")
                break
            except CheckpointError as exc:
                log.warning("fleet: version %d refused (%s); trying the one before", version,
                            " ".join(str(exc).split()))
        if self.det is not None:
            self.det.reconfigure(self.detector_config)
        elif candidates:
            log.error("fleet: no published version verifies; warming the group up again")

    # ------------------------------------------------------------------------- inbox
    def receive(self, rec) -> None:
        """One member sync from the coordination topic."""
        try:
            meta, arrays = decode_sync(rec.value, f"fleet sync at offset {rec.offset}")
        except CheckpointError as exc:
            log.warning("fleet: %s; skipped", exc)
            return
        self.members[meta["member"]] = time.time()
        if "rows" in arrays:
            self.rows.add(arrays["rows"], arrays["row_times"])
            if self.det is None:
                self._add_warm(meta["member"], meta.get("warm_from"), arrays["rows"])
        det = self.det
        if det is None or meta["generation"] != det.model_version:
            return  # before the first version, or about a generation a refit replaced
        if meta["n"] > 0:
            stats = pooled.from_arrays(arrays, meta["n_mixtures"])
            if pooled.compatible(det.model_, stats):
                if self._stats is None:
                    self._stats, self._n = stats, meta["n"]
                else:
                    self._stats, self._n = pooled.merge(det.model_, self._stats, self._n,
                                                        stats, meta["n"])
                self._steps += int(meta["steps"])
                self.merged += 1
                self._dirty = True
        if "scores" in arrays:
            self.scores.add(arrays["scores"], arrays["score_times"])
            self._new_scores.append(np.asarray(arrays["scores"]))
            self._dirty = True
        d = meta.get("drift")
        if d and self.drift is None and self._job is None and d["generation"] == det.model_version:
            self.drift, self._post_records = d, 0
            log.info("fleet: drift (%s) reported by %s; one refit for the group, on the "
                     "sample since %.3f", d["detector"], d["member"], d["change_time"])
        if self.drift is not None:
            self._post_records += int(meta.get("scored", 0))

    # ------------------------------------------------------------------------ the sync
    def sync(self):
        """Merge, refit or fit if due; `unpublished` when anything changed (the fleet
        publishes it as version + 1). The current version."""
        self._land_job()
        if self.det is None:
            n = self.cfg.detector.warmup_records
            if self._job is None and sum(map(len, self.warm.values())) >= n:
                self._start_fit(proportional(self.warm.values(), n), "warmup")
            return self.version
        det = self.det
        if self._stats is not None:
            seeds = self.rows.values[-64:] if len(self.rows) else None
            if seeds is not None:
                seeds = det.scaler_.transform(seeds, det.dtype)
            pooled.apply(det.model_, self._stats, self._n, self._steps, seeds)
        th = det.threshold_model_
        if self.drift is not None:
            post = self.scores.since(self.drift["change_time"])
            if len(post) >= MIN_RESTART_SCORES:
                det.threshold_model_ = th.restarted(post)
                self._dirty = True
            # The sample is thinned: count the records the members scored since the report,
            # and ask the sample only for enough rows to fit.
            rows = self.rows.since(self.drift["change_time"])
            enough = max(det.min_fit_records(), 20 * det.n_features_)
            if self._job is None and len(rows) >= enough and \
                    self._post_records >= self.cfg.detector.refit.min_records:
                self._start_fit(rows, self.drift["detector"])
        elif self._new_scores:
            th.push(np.concatenate(self._new_scores))
            th.refresh()
        if self._dirty:
            self.unpublished = True
        self._reset_pending()
        return self.version

    def _add_warm(self, member: str, start, rows) -> None:
        """A member's warm-up rows from position `start` of its buffer on (a member that was
        a solo leader resends its buffer from 0: replaced, not counted twice); rows without
        a position (a refit sample) are appended."""
        have = self.warm.get(member)
        rows = np.asarray(rows, dtype=np.float64)
        if have is not None and (start is None or start > 0):
            rows = np.concatenate([have[:start], rows])
        n = self.cfg.detector.warmup_records
        self.warm[member] = rows[-n:] if start is None else rows[:n]

    def _start_fit(self, X, reason: str) -> None:
        det = self.det if self.det is not None else \
            self.Detector(self.detector_config, feature_names=self.feature_names)
        box: dict = {}

        def work():
            try:
                box["trained"] = det.train(X)
            except BaseException as exc:  # noqa: BLE001 - reported as refit_failed
                box["error"] = exc

        t = threading.Thread(target=work, name="streamgmm-fleet-fit", daemon=True)
        t.start()
        self._job = (t, box, reason, time.perf_counter(), det, len(X))
        self.events.append(DetectorEvent("refit_started", detail={"n_records": len(X),
                                                                   "reason": reason}))

    def _land_job(self) -> None:
        if self._job is None or self._job[0].is_alive():
            return
        _, box, reason, started, det, n = self._job
        self._job = None
        seconds = time.perf_counter() - started
        if "error" in box:
            det.counters["refit_failures"] += 1
            self.events.append(DetectorEvent("refit_failed", detail={
                "error": f"{type(box['error']).__name__}: {box['error']}", "seconds": seconds,
                "reason": reason}))
            self.drift = None
            return
        det.install(box["trained"])
        self.warm = {}
        if reason != "warmup":
            det.counters["refits"] += 1
        self.det, self.drift = det, None
        # statistics and scores gathered so far are of the replaced model's components
        self._reset_pending()
        self.scores = _Ring(self.cfg.detector.threshold.window)
        self._dirty = True
        kind = "warmup_done" if reason == "warmup" else "refit_done"
        self.events.append(DetectorEvent(kind, detail={
            "seconds": seconds, "n_records": n, "reason": reason,
            "n_components": det.n_components, "model_version": det.model_version}))

    def wait(self, timeout: float | None = None) -> None:
        if self._job is not None:
            self._job[0].join(timeout)

    def take_events(self) -> list:
        out, self.events = self.events, []
        return out
