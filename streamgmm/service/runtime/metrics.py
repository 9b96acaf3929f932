"""Prometheus metrics of one daemon (names, types and labels per docs/architecture.md).

Each daemon owns a `CollectorRegistry` (no global state, several daemons per process in tests).
Per-record histograms (log-density, record age) are filled a whole batch at a time with NumPy
via `BatchHistogram`, so metrics cost stays off the per-record path.
"""
from __future__ import annotations

import platform
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily

from ..._version import __version__
from ...detection.drift import DETECTORS as DRIFT_DETECTORS
from ..records import REASONS as DEAD_LETTER_REASONS

if TYPE_CHECKING:
    from ..fleet.status import FleetStatus

REFIT_OUTCOMES = ("success", "failure")
# streamgmm_fleet_bytes_total: the two fleet topics (docs/fleet design) and the two directions
FLEET_TOPICS = ("coordination", "state")
FLEET_DIRECTIONS = ("sent", "received")

LOG_DENSITY_BUCKETS = (-1000.0, -500.0, -200.0, -100.0, -50.0, -40.0, -30.0, -25.0, -20.0,
                       -15.0, -12.0, -10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 5.0, 10.0)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               300.0, 900.0, 3600.0)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0)
REFIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                 600.0)


class BatchHistogram:
    """A Prometheus histogram observed with whole arrays at once (a custom collector)."""

    def __init__(self, name: str, documentation: str, buckets, registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(float(b) for b in buckets), dtype=float)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: above all bounds
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values) -> None:
        """Add every finite value of `values` (non-finite ones are skipped)."""
        v = np.asarray(values, dtype=float).ravel()
        if v.size == 0:
            return
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        idx = np.searchsorted(self.bounds, v, side="left")  # bucket i: bounds[i-1] < v <= bounds[i]
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(v.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def snapshot(self) -> tuple[np.ndarray, float]:
        """(per-bucket counts incl. +Inf bucket, sum)."""
        with self._lock:
            return self._counts.copy(), self._sum

    def collect(self):
        counts, total = self.snapshot()
        cum = np.cumsum(counts)
        buckets = [(_fmt_bound(b), float(c)) for b, c in zip(self.bounds, cum[:-1])]
        buckets.append(("+Inf", float(cum[-1])))
        fam = HistogramMetricFamily(self.name, self.documentation)
        fam.add_metric([], buckets, None)
        # prometheus-client leaves _count/_sum out when a bucket bound is negative (an
        # OpenMetrics rule); the Prometheus text format has them, and rate() needs _count.
        fam.add_sample(self.name + "_count", {}, float(cum[-1]))
        fam.add_sample(self.name + "_sum", {}, total)
        yield fam

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation)


class UndefinedUntilSet:
    """An unlabelled gauge with no sample until its first `set` (a custom collector).

    For values that do not exist yet, rather than are 0: the threshold before a model exists
    (0 nats would sit above most scores) and the flagged fraction before a record is scored
    (0% would read as a healthy ratio). The family is declared (HELP/TYPE) from the start;
    dashboards show no data and alert comparisons are empty until the value is defined.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self._value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def get(self) -> float | None:
        return self._value

    def collect(self):
        fam = GaugeMetricFamily(self.name, self.documentation)
        value = self._value
        if value is not None:
            fam.add_metric([], value)
        yield fam

    def describe(self):
        yield GaugeMetricFamily(self.name, self.documentation)


def _fmt_bound(b: float) -> str:
    return repr(float(b))


class RatioWindow:
    """Fraction of True over the last `size` booleans (ring buffer, vectorised updates)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._buf = np.zeros(self.size, dtype=bool)
        self._pos = 0
        self._n = 0
        self._true = 0

    def add(self, flags) -> None:
        f = np.asarray(flags, dtype=bool).ravel()
        if f.size >= self.size:
            self._buf[:] = f[-self.size:]
            self._pos, self._n, self._true = 0, self.size, int(self._buf.sum())
            return
        end = self._pos + f.size
        if end > self.size:  # wraps around: two contiguous writes
            first = self.size - self._pos
            self.add(f[:first])
            self.add(f[first:])
            return
        # unfilled slots are False, so subtracting the old slice is right before and after fill
        self._true += int(f.sum()) - int(self._buf[self._pos:end].sum())
        self._buf[self._pos:end] = f
        self._pos = end % self.size
        self._n = min(self.size, self._n + f.size)

    @property
    def ratio(self) -> float:
        return self._true / self._n if self._n else 0.0


class DaemonMetrics:
    """All daemon metrics on a private registry, plus helpers the loop calls per batch."""

    def __init__(self, ratio_window: int = 10000, target_ratio: float = 0.01,
                 registry: CollectorRegistry | None = None, checkpoints: bool = True):
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "streamgmm_"
        self.records = Counter(p + "records_processed", "Records scored.", registry=r)
        self.anomalies = Counter(p + "anomalies", "Records flagged as anomalies.", registry=r)
        self.dead_letters = Counter(p + "dead_letters", "Bad records sent to the dead-letter "
                                    "sink, by reason.", ["reason"], registry=r)
        self.anomaly_ratio = UndefinedUntilSet(p + "anomaly_ratio", "Flagged fraction over "
                                               "the last metrics.ratio_window scored records "
                                               "(no sample until a record is scored).", r)
        self.target_ratio = Gauge(p + "target_anomaly_ratio", "Configured threshold "
                                  "percentile / 100.", registry=r)
        self.log_density = BatchHistogram(p + "log_density", "Log-density of scored records.",
                                          LOG_DENSITY_BUCKETS, r)
        self.threshold = UndefinedUntilSet(p + "threshold", "Current log-density anomaly "
                                           "threshold (no sample until a model exists).", r)
        self.drift = Counter(p + "drift_events", "Drift detections, by detector.", ["detector"],
                             registry=r)
        self.refits = Counter(p + "refits", "Batch refits, by outcome.", ["outcome"], registry=r)
        self.refit_duration = Histogram(p + "refit_duration_seconds", "Batch refit wall time.",
                                        buckets=REFIT_BUCKETS, registry=r)
        self.batch_duration = Histogram(p + "batch_duration_seconds", "Time to decode, score "
                                        "and emit one polled batch.", buckets=BATCH_BUCKETS,
                                        registry=r)
        self.record_age = BatchHistogram(p + "record_age_seconds", "Now minus the record "
                                         "timestamp, at scoring.", AGE_BUCKETS, r)
        self.lag = Gauge(p + "consumer_lag_records", "High watermark minus consumer position.",
                         ["topic", "partition"], registry=r)
        self.components = Gauge(p + "model_components", "Components in the live model.",
                                registry=r)
        self.model_version = Gauge(p + "model_version", "Model version (increments at each "
                                   "model swap).", registry=r)
        self.last_checkpoint = Gauge(p + "last_checkpoint_timestamp_seconds", "Unix time of "
                                     "the last checkpoint (0 if none yet).", registry=r)
        self.checkpoint_age = Gauge(p + "checkpoint_age_seconds", "Seconds of learning not "
                                    "yet checkpointed: since the last checkpoint, or since the "
                                    "model became ready; 0 in warm-up or with checkpoints off.",
                                    registry=r)
        self.loop_age = Gauge(p + "loop_age_seconds", "Seconds since the daemon's loop last "
                              "made progress (read at scrape time; /healthz fails above its "
                              "liveness timeout).", registry=r)
        self.commit_failures = Counter(p + "commit_failures", "Failed offset commits.",
                                       registry=r)
        self.rebalances = Counter(p + "rebalances", "Consumer group rebalances this daemon "
                                  "took part in (assignments it received).", registry=r)
        self.ready = Gauge(p + "ready", "1 when the model is ready and, for Kafka, the group "
                           "has given this daemon its assignment; a standby (an empty "
                           "assignment) is ready with or without a model.",
                           registry=r)
        self.build = Info(p + "build", "Build information.", registry=r)
        self.build.info({"version": __version__, "python_version": platform.python_version()})

        # pre-create every label value so dashboards see zeros rather than gaps
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for det in DRIFT_DETECTORS:
            self.drift.labels(detector=det)
        for outcome in REFIT_OUTCOMES:
            self.refits.labels(outcome=outcome)
        self.target_ratio.set(target_ratio)

        self._window = RatioWindow(ratio_window)
        self._checkpoints = checkpoints
        self._unsaved_since: float | None = None  # None: nothing that needs a checkpoint
        self._paused_at: float | None = None  # the loop waits for Kafka outputs: no learning
        self.checkpoint_age.set_function(self._checkpoint_age)
        self._lag_labels: set = set()
        self._fleet: _FleetMetrics | None = None  # created by the first observe_fleet
        self._fleet_lock = threading.Lock()

    def exposition(self) -> bytes:
        """The Prometheus text page (without client-side `*_created` series)."""
        return generate_latest(_WithoutCreated(self.registry))

    content_type = CONTENT_TYPE_LATEST

    # --------------------------------------------------------------------- per-batch updates
    def observe_scored(self, scores, flags, ages=None) -> None:
        """Count a batch of scored records: totals, ratio window, score and age histograms."""
        n = len(scores)
        if n == 0:
            return
        flags = np.asarray(flags, dtype=bool)
        self.records.inc(n)
        k = int(flags.sum())
        if k:
            self.anomalies.inc(k)
        self._window.add(flags)
        self.anomaly_ratio.set(self._window.ratio)
        self.log_density.observe_many(scores)
        if ages is not None:
            self.record_age.observe_many(ages)

    def observe_dead_letter(self, reason: str, n: int = 1) -> None:
        self.dead_letters.labels(reason=reason).inc(n)

    def observe_event(self, event) -> None:
        """Count a DetectorEvent (drift, refit done/failed)."""
        kind = getattr(event, "kind", None)
        detail = getattr(event, "detail", None) or {}
        if kind == "drift":
            self.drift.labels(detector=getattr(event, "detector", None) or "unknown").inc()
        elif kind in ("refit_done", "refit_failed"):
            self.refits.labels(outcome="success" if kind == "refit_done" else "failure").inc()
            dur = _duration(detail)
            if dur is not None:
                self.refit_duration.observe(dur)

    def observe_model(self, det) -> None:
        """Copy the live model's threshold, components and version into gauges."""
        thr = getattr(det, "threshold_", None)
        if thr is not None:
            self.threshold.set(float(thr))
        if getattr(det, "ready", False):
            self.components.set(int(det.n_components))
            if self._checkpoints and self._unsaved_since is None:
                self._unsaved_since = time.time()  # from now on there is learning to lose
        self.model_version.set(int(getattr(det, "model_version", 0) or 0))

    def observe_checkpoint(self, when: float | None = None) -> None:
        when = time.time() if when is None else when
        self._unsaved_since = when
        self.last_checkpoint.set(when)

    def learning_paused(self, paused: bool) -> None:
        """The loop waits for Kafka to acknowledge its outputs (paused=True) or goes on.

        While it waits nothing is scored, so no learning accrues and the checkpoint age stands
        still: it counts seconds of learning a restart would lose, and a broker outage is not
        a checkpoint problem (StreamgmmNotReady reports it; StreamgmmCheckpointStale would
        otherwise fire after 20 minutes of outage with advice about disks).
        """
        now = time.time()
        if paused and self._paused_at is None:
            self._paused_at = now
        elif not paused and self._paused_at is not None:
            if self._unsaved_since is not None:
                self._unsaved_since += now - max(self._paused_at, self._unsaved_since)
            self._paused_at = None

    def _checkpoint_age(self) -> float:
        since = self._unsaved_since
        if since is None:
            return 0.0
        now = self._paused_at if self._paused_at is not None else time.time()
        return max(0.0, now - since)

    def set_lag(self, lags: dict) -> None:
        """Replace the per-partition lag gauges with {(topic, partition): lag}."""
        labels = {(t, str(p)) for t, p in lags}
        for gone in self._lag_labels - labels:
            try:
                self.lag.remove(*gone)
            except KeyError:
                pass
        for (t, p), v in lags.items():
            self.lag.labels(topic=t, partition=str(p)).set(v)
        self._lag_labels = labels


    def observe_fleet(self, status: FleetStatus) -> None:
        """Copy a member's `FleetStatus` into the fleet metrics (label `group`).

        The fleet series are registered on the first call, so a daemon without fleet exposes
        none. Gauges are set; the counters of `status` are totals since the member started and
        become increments of the totals seen last time. A total lower than the last one (an
        internal counter that restarted from 0) counts as new increments from 0: the Prometheus
        counter only ever goes up.
        """
        fleet = self._fleet
        if fleet is None:
            with self._fleet_lock:
                if self._fleet is None:
                    self._fleet = _FleetMetrics(self.registry)
                fleet = self._fleet
        fleet.observe(status)


class _FleetMetrics:
    """The fleet series of one daemon (see DaemonMetrics.observe_fleet)."""

    def __init__(self, registry: CollectorRegistry):
        r, p = registry, "streamgmm_fleet_"
        self.version = Gauge(p + "model_version", "Fleet model version this member scores "
                             "with (0: none yet).", ["group"], registry=r)
        self.leader = Gauge(p + "leader", "1 when this member is the group's leader (owns "
                            "the coordination partition).", ["group"], registry=r)
        self.sync_age = Gauge(p + "sync_age_seconds", "Seconds since this member last "
                              "adopted the newest published version or confirmed it has it.",
                              ["group"], registry=r)
        self.published = Counter(p + "statistics_published", "Statistics messages this "
                                 "member sent to the coordination topic.", ["group"],
                                 registry=r)
        self.merged = Counter(p + "statistics_merged", "Members' statistics messages merged "
                              "by this member as leader.", ["group"], registry=r)
        self.bytes = Counter(p + "bytes", "Bytes of fleet messages, by fleet topic "
                             "(coordination, state) and direction (sent, received).",
                             ["group", "topic", "direction"], registry=r)
        self.members = Gauge(p + "members", "Leader only: members heard from in the last 3 "
                             "sync intervals (0 on other members).", ["group"], registry=r)
        self._lock = threading.Lock()
        self._totals: dict = {}        # (counter name, labels) -> last total seen
        self._groups: set = set()
        self._age: dict = {}           # group -> (sync_age reported, monotonic time of report)

    def observe(self, status: FleetStatus) -> None:
        group = str(status.group)
        with self._lock:
            if group not in self._groups:
                self._new_group(group)
            self.version.labels(group=group).set(int(status.version or 0))
            self.leader.labels(group=group).set(1 if status.leader else 0)
            self.members.labels(group=group).set(int(status.members or 0))
            self._age[group] = (max(0.0, float(status.sync_age or 0.0)), time.monotonic())
            self._advance(self.published.labels(group=group), ("published", group),
                          status.published)
            self._advance(self.merged.labels(group=group), ("merged", group), status.merged)
            for (topic, direction), total in (status.bytes or {}).items():
                child = self.bytes.labels(group=group, topic=str(topic),
                                          direction=str(direction))
                self._advance(child, ("bytes", group, str(topic), str(direction)), total)

    def _new_group(self, group: str) -> None:
        """Create every series of a group at once, so dashboards see zeros rather than gaps."""
        self._groups.add(group)
        self.published.labels(group=group)
        self.merged.labels(group=group)
        for topic in FLEET_TOPICS:
            for direction in FLEET_DIRECTIONS:
                self.bytes.labels(group=group, topic=topic, direction=direction)
        # the age keeps growing between reports: a loop that stops reporting stops syncing
        self.sync_age.labels(group=group).set_function(lambda g=group: self._sync_age(g))

    def _sync_age(self, group: str) -> float:
        age, at = self._age.get(group, (0.0, time.monotonic()))
        return age + max(0.0, time.monotonic() - at)

    def _advance(self, child, key, total) -> None:
        """Increment `child` by how much `total` grew since the last report (never negative)."""
        total = int(total or 0)
        if total < 0:
            total = 0
        last = self._totals.get(key, 0)
        step = total - last if total >= last else total  # went down: restarted from 0
        if step > 0:
            child.inc(step)
        self._totals[key] = total


class _WithoutCreated:
    """A view of a registry that drops the `*_created` samples prometheus-client adds."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        for fam in self.registry.collect():
            if fam.type in ("counter", "histogram", "summary"):
                fam.samples = [s for s in fam.samples if not s.name.endswith("_created")]
            yield fam


def _duration(detail: dict):
    for key in ("duration_seconds", "duration", "seconds", "elapsed", "elapsed_seconds"):
        v = detail.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


__all__ = ["DaemonMetrics", "BatchHistogram", "RatioWindow", "UndefinedUntilSet",
           "DEAD_LETTER_REASONS", "DRIFT_DETECTORS", "REFIT_OUTCOMES", "FLEET_TOPICS", "FLEET_DIRECTIONS"]
