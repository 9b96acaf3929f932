"""The Detector: scaler, model, threshold, drift tests and refit policy behind one call.

``process(X)`` takes a batch of raw feature rows in stream order and:
scale -> score -> decide -> learn (by default not from flagged records) -> update threshold and
drift state -> maybe schedule a refit. It knows nothing of Kafka: arrays in, decisions out.
Results always cover the oldest records not yet returned, so during warm-up a call may return
nothing; the call that completes warm-up returns every buffered record plus the rest of its
batch, scored by the new model (see docs/architecture.md).

The result does not depend on how the stream is cut into calls: the warm-up takes exactly
``warmup_records`` records, one online-EM step covers exactly ``online.batch_size`` records
(a call is scored in segments ending at step boundaries, so every record is scored, and
learned from, with the parameters current at its position), and threshold, drift and refit
policy run at least every ``POLICY_CHUNK`` records, so a refit can land in a huge call.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import math as gm
from .._version import __version__
from ..exceptions import NotFittedError
from ..math.sufficient_stats import posteriors
from ..models import MixtureEnsemble
from ..models.validation import check_array
from ..persistence import dumps_state, export_joblib, save_state
from .config import DetectorConfig
from .drift import DriftMonitor
from .explain import feature_shares, precision_matrices, top_contributions
from .calibration import held_out_scores
from .refit import RefitScheduler
from .threshold import PercentileThreshold
from .training import fit_window


# Threshold, drift and refit policy run at least this often inside one process() call.
POLICY_CHUNK = 1000
# Fence (multiple of the IQR below Q1) of the threshold while the fit window's held-out scores
# are in it, for the auto ensemble (its lowest-member score; see _fit_fn).
FIT_FENCE_IQR = 20.0
# While the fit's held-out calibration scores stand in for the stream's, the threshold also
# re-ranks after this many live scores, then twice as many, four times...: a re-rank only
# every POLICY_CHUNK came too late for short streams and small warm-ups (a 24-row warm-up in
# 13 features flagged 15-54% of the next hundred records).
EARLY_RERANK = 10
# Scores kept at least when the threshold restarts after a drift alarm.
MIN_RESTART_SCORES = 200

# Shared, immutable "no contributions" marker for records that are not flagged (an empty
# tuple: falsy, iterable, JSON-encodes as []); building n fresh lists per batch was a hot spot.
_NO_CONTRIBUTIONS = ()


@dataclass
class DetectorEvent:
    """Something a batch caused: warmup_done, drift, drift_update, refit_started, refit_done,
    refit_failed."""

    kind: str
    detector: str = None
    detail: dict = field(default_factory=dict)


@dataclass
class DetectionResult:
    """Per-record decisions for one call, oldest record first."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    threshold: np.ndarray
    component: np.ndarray
    contributions: list
    events: list = field(default_factory=list)
    # Fraction of recent scores below each record's (calibrated, tail extrapolated), (0, 1].
    rarity: np.ndarray = None
    # -log10(rarity): 2 = one in a hundred recent records, 4 = one in ten thousand.
    severity: np.ndarray = None

    def __len__(self):
        return len(self.scores)

    @classmethod
    def empty(cls, events=None):
        return cls(np.empty(0), np.empty(0, dtype=bool), np.empty(0),
                   np.empty(0, dtype=np.intp), [], list(events or []), np.empty(0),
                   np.empty(0))

    @classmethod
    def concat(cls, parts, events):
        """One result from consecutive parts (in stream order), with ``events``."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(events)
        if len(parts) == 1:
            out = parts[0]
            out.events = events
            return out
        contributions = []
        for p in parts:
            contributions.extend(p.contributions)
        cat = np.concatenate
        return cls(cat([p.scores for p in parts]), cat([p.is_anomaly for p in parts]),
                   cat([p.threshold for p in parts]), cat([p.component for p in parts]),
                   contributions, events, cat([p.rarity for p in parts]),
                   cat([p.severity for p in parts]))


class Detector:
    """Streaming GMM anomaly detector (see the module docstring for the order of work)."""

    def __init__(self, config=None, feature_names=None, dtype=np.float64, background_refit=True):
        self.config = (config if isinstance(config, DetectorConfig)
                       else DetectorConfig.from_dict(config))
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.dtype = np.dtype(dtype)
        self.background_refit = background_refit
        self.n_features_ = len(self.feature_names) if self.feature_names else None
        self.scaler_ = self.model_ = self.threshold_model_ = self.monitor_ = None
        self.scheduler_ = None
        self.model_version = 0
        self.train_info_ = {}
        self.counters = {"records": 0, "anomalies": 0, "drift_events": 0, "refits": 0,
                         "refit_failures": 0}
        self._warm = []
        self._learn = []
        self._learn_n = 0
        self._fill = 0      # records scored since the last online step (flagged or not)
        self._since_change = None
        self._alarms = []   # drift alarms raised since the last policy boundary
        self._precisions = None
        self.link_ = None   # a shared model's link (fleet member): see ``follow``

    @classmethod
    def from_dict(cls, d, feature_names=None, **kwargs):
        """Build from the YAML ``detector`` section as a plain dict."""
        return cls(DetectorConfig.from_dict(d), feature_names=feature_names, **kwargs)

    # ------------------------------------------------------------ properties
    @property
    def ready(self):
        """A model exists and records are being scored."""
        return self.model_ is not None

    @property
    def pending(self):
        """Records buffered for warm-up that have no result yet."""
        return int(sum(len(x) for x in self._warm))

    @property
    def threshold_(self):
        return None if self.threshold_model_ is None else self.threshold_model_.value_

    @property
    def n_components(self):
        return 0 if self.model_ is None else int(self.model_.n_components)

    @property
    def refit_running(self):
        return self.scheduler_ is not None and self.scheduler_.job is not None

    # ------------------------------------------------------------- internals
    def _check(self, X):
        X = check_array(X, ensure_min_samples=0, n_features=self.n_features_)
        if self.n_features_ is None:
            self.n_features_ = X.shape[1]
        if self.feature_names is None:
            self.feature_names = [f"x{j}" for j in range(self.n_features_)]
        return X

    def adopt_feature_names(self, names):
        """Name the columns of a model that knows them by position only (imported from
        scikit-learn fitted on a bare array); returns whether it did."""
        if not self.train_info_.get("positional_features") or len(names) != self.n_features_:
            return False
        self.feature_names = [str(n) for n in names]
        if self.monitor_ is not None:
            self.monitor_.feature_names = list(self.feature_names)
        self.train_info_ = dict(self.train_info_, positional_features=False)
        return True

    def _ensure_scheduler(self):
        if self.scheduler_ is None:
            self.scheduler_ = RefitScheduler(self.config.refit, self.n_features_,
                                             self._fit_fn, self.background_refit)

    def _fit_fn(self, X):
        """The training procedure, then the threshold restarted from held-out scores."""
        cfg, dtype = self.config, self.dtype
        trained = fit_window(X, cfg, dtype)
        folds = cfg.threshold.calibration_folds
        if folds >= 2:
            held, used = held_out_scores(np.asarray(X, dtype=np.float64), trained, cfg,
                                         lambda Xf, c: fit_window(Xf, c, dtype), folds,
                                         cfg.random_state or 0)
            ok = None if held is None else np.isfinite(held)
            if ok is not None and ok.any():
                # The ensemble's score is its members' lowest z-score: on held-out rows its
                # lower tail is steadily heavy (on real sets 2-13% below Q1 - 3 IQR, up to 4%
                # below Q1 - 20 IQR), so the fence (which also bounds what online EM learns
                # from) sits at FIT_FENCE_IQR while these are in the window; it binds from
                # the start only if the rows the fit dropped are too many for the percentile.
                wide = FIT_FENCE_IQR if getattr(trained.model, "combination", "") == "min" \
                    else None
                trained.threshold = PercentileThreshold(
                    cfg.threshold.percentile, cfg.threshold.window).fit(
                        held[ok], wide, gross=held[ok & ~trained.clean])
                trained.info["threshold_source"] = (
                    f"{used}-fold held-out scores" if used < len(X)
                    else "leave-one-out held-out scores")
        return trained

    def _install(self, trained):
        self.scaler_, self.model_ = trained.scaler, trained.model
        self.threshold_model_ = trained.threshold
        self.train_info_ = trained.info
        self.model_version += 1
        self._learn, self._learn_n, self._fill, self._precisions = [], 0, 0, None
        self._since_change = None  # set by a drift alarm until the next model swap
        self._alarms = []
        self._new_monitor()

    def _new_monitor(self):
        """Fresh drift tests (they collect a new reference from the next record on)."""
        self.monitor_ = DriftMonitor.from_config(self.config, self.feature_names).reset(
            self.n_features_, self.scheduler_.n_seen)

    def _poll_refit(self):
        if self.scheduler_ is None:
            return []
        job = self.scheduler_.take_finished()
        if job is None:
            return []
        seconds = time.perf_counter() - job.started_at
        if job.error is not None:
            self.counters["refit_failures"] += 1
            return [DetectorEvent("refit_failed", detail={
                "error": f"{type(job.error).__name__}: {job.error}", "seconds": seconds,
                "reason": job.reason})]
        self._install(job.result)
        self.counters["refits"] += 1
        return [DetectorEvent("refit_done", detail={
            "seconds": seconds, "n_records": job.n_records, "reason": job.reason,
            "n_components": self.n_components, "model_version": self.model_version})]

    def _decide(self, Xs):
        """One E-step: (scores, most likely components, posteriors, what the online step
        needs besides: the log-densities, per member for an ensemble) of the rows."""
        m = self.model_
        if isinstance(m, MixtureEnsemble):
            return m.decide(Xs)
        wlp = gm.weighted_log_prob(Xs, m.weights_, m.means_, m.precisions_cholesky_,
                                   m.covariance_type)
        comp = np.argmax(wlp, axis=1)
        resp, scores = posteriors(wlp)
        u = m.robust_weights(Xs)
        if u is not None:  # a robust mixture learns with its Student-t weights
            resp *= u
        return scores, comp, resp, scores

    def _explain(self, Xs, comp, is_anomaly):
        out = [_NO_CONTRIBUTIONS] * len(Xs)
        idx = np.flatnonzero(is_anomaly)
        if len(idx):
            if self._precisions is None:
                m = self.model_
                self._precisions = precision_matrices(m.precisions_cholesky_,
                                                      m.covariance_type, m.n_components,
                                                      self.n_features_)
            shares = feature_shares(Xs[idx], comp[idx], np.asarray(self.model_.means_,
                                                                   dtype=np.float64),
                                    self._precisions)
            for i, contrib in zip(idx, top_contributions(shares, self.feature_names)):
                out[i] = contrib
        return out

    def _learn_from(self, Xs, is_anomaly, gross, resp, scores):
        """Queue a segment's rows to learn from; step when ``online.batch_size`` records
        (flagged or not) have been scored since the last step.

        Segments end at step boundaries (``_score_chunk``), so the queue only ever holds rows
        scored with the current parameters and their posteriors from scoring are reused.
        """
        o = self.config.online
        if not o.learn_from_anomalies:
            # Not the gross outliers (below the threshold's far-out fence, Q1 - 3 IQR of the
            # window's scores, for at least half of the members: ``_gross``): one record 30 sd out pulls a
            # component's covariance, the normal records' scores wander for thousands of
            # records, and the drift tests see a change of the scores that is not in the data.
            # The flagged records above the fence are learned: on a clean stream they are the
            # normal data's own 1% tail, and leaving that out at every step narrows the
            # members step by step, so the threshold window lags behind their scores
            # (BENCHMARKS.md, "p means p on the generator's streams").
            keep = ~gross
            if not keep.all():  # (an ensemble's resp is a transposed view: np.compress
                #                  copies its rows twice as fast as resp[keep], into the same
                #                  C-ordered array)
                Xs, resp, scores = Xs[keep], np.compress(keep, resp, axis=0), scores[keep]
        if len(Xs):
            self._learn.append((Xs, resp, scores))
            self._learn_n += len(Xs)
        if self._fill >= o.batch_size:
            parts, self._learn, self._learn_n, self._fill = self._learn, [], 0, 0
            if not parts:
                return
            if len(parts) == 1:
                X, R, S = parts[0]
            else:
                X, R, S = (np.concatenate(p) for p in zip(*parts))
            if self.link_ is not None:  # the shared model is stepped by its leader
                self.link_.learn(self.model_, X, R, S)
                return
            self.model_.partial_fit_posteriors(X, R, S)
            self._precisions = None

    def _gross(self, scores, log_density):
        """Records too far out to learn from: below the threshold's far-out fence, and (an
        ensemble) for at least half of the members (``MixtureEnsemble.lenient``), so a minor
        mode of the normal data that the one-component members find far out is still learned
        (else it is never learned, its weight decays and ever more of it is flagged)."""
        fence = self.threshold_model_.fence_
        gross = scores < fence
        lenient = getattr(self.model_, "lenient", None)
        if lenient is not None and gross.any():
            idx = np.flatnonzero(gross)
            gross[idx] = lenient(np.asarray(log_density)[idx]) < fence
        return gross

    def _score_segment(self, Xs, learn):
        scores, comp, resp, log_density = self._decide(Xs)
        thr_value = self.threshold_model_.value_
        is_anomaly = scores < thr_value
        contributions = self._explain(Xs, comp, is_anomaly)
        if learn:
            self._fill += len(Xs)
            self._learn_from(Xs, is_anomaly, self._gross(scores, log_density), resp,
                             log_density)
        return scores, comp, is_anomaly, np.full(len(Xs), thr_value), contributions

    def _score_chunk(self, X, learn):
        """Scale, score and decide a chunk, learning in fixed ``online.batch_size`` steps."""
        Xs = self.scaler_.transform(X, self.dtype)
        learn = learn and self.config.online.enabled
        bs = self.config.online.batch_size
        n, i, segs = len(Xs), 0, []
        while i < n:
            j = min(n, i + bs - self._fill) if learn else n
            segs.append(self._score_segment(Xs[i:j], learn))
            i = j
        if len(segs) == 1:
            scores, comp, is_anomaly, threshold, contributions = segs[0]
        else:
            scores, comp, is_anomaly, threshold = (np.concatenate([sg[k] for sg in segs])
                                                   for k in range(4))
            contributions = [c for sg in segs for c in sg[4]]
        rarity, severity = self.threshold_model_.rarity_severity(scores)
        return Xs, DetectionResult(scores, is_anomaly, threshold, comp, contributions, [],
                                   rarity, severity)

    def _unstarve(self, events):
        """Swap a finished refit in; wait for one that has run for too many records."""
        events.extend(self._poll_refit())
        sch = self.scheduler_
        if (sch.job is not None and sch.background
                and sch.n_seen - sch.job.started_record >= self.config.refit.max_pending_records):
            sch.wait()
            events.extend(self._poll_refit())

    def _on_drift(self, alarm, events):
        """Report an alarm at once; act on it at the next policy boundary. One change, one
        ``drift`` event: an alarm while an earlier one still awaits its refit (the refit
        not started yet) only refines the change's start, reported as ``drift_update``."""
        detail = {"record": alarm.record, "change_start": alarm.change_start, **alarm.detail}
        if self._alarms or self.scheduler_.requested:
            events.append(DetectorEvent("drift_update", alarm.detector, detail))
        else:
            self.counters["drift_events"] += 1
            events.append(DetectorEvent("drift", alarm.detector, detail))
        self._alarms.append(alarm)

    def _act_on_drift(self):
        """Refit from the estimated change on; re-rank the threshold on the scores since it
        (the flagged fraction returns to p before the refit lands); test the new regime."""
        alarm, self._alarms = self._alarms[-1], []
        self.scheduler_.request(alarm.change_start, alarm.detector)
        th = self.threshold_model_
        n_post = max(self.scheduler_.n_seen - int(alarm.change_start), MIN_RESTART_SCORES)
        recent = th.recent()
        self.threshold_model_ = th.restarted(recent[-min(n_post, len(recent)):])
        self._since_change = int(alarm.change_start)
        self._new_monitor()

    def _rescore_since_change(self):
        """Until the refit lands: the threshold re-ranked on the records since the change,
        re-scored with the current (online-adapting) model, at most its short window."""
        th, sch = self.threshold_model_, self.scheduler_
        n = min(sch.n_seen - self._since_change, th.window, sch.ring.filled)
        n = max(n, min(MIN_RESTART_SCORES, sch.ring.filled))
        Xs = self.scaler_.transform(sch.ring.last(n), self.dtype)
        th.fit(self.model_.score_samples(Xs))

    def _run(self, X, events, update=True, count=True):
        if not update:
            _, res = self._score_chunk(X, learn=False)
            res.events = events
            if count:
                self._count(res)
            return res
        parts, i = [], 0
        while i < len(X):
            # Policy boundaries sit at fixed record counts (every POLICY_CHUNK records of the
            # stream), so the same stream gives the same decisions whatever the call sizes.
            to_boundary = POLICY_CHUNK - self.scheduler_.n_seen % POLICY_CHUNK
            to_early = self._to_early_rerank()
            step = to_boundary if to_early is None else min(to_boundary, to_early)
            j = min(len(X), i + step)
            parts.append(self._run_chunk(X[i:j], events, j - i == to_boundary,
                                         j - i == to_early))
            i = j
        return DetectionResult.concat(parts, events)

    def _count(self, res):
        self.counters["records"] += len(res)
        self.counters["anomalies"] += int(res.is_anomaly.sum())

    def _to_early_rerank(self):
        """Records to the threshold's next early re-rank (see
        ``PercentileThreshold.to_early_rerank``), or None: none due, or the threshold is not
        this detector's to re-rank (a follower's, or the short one after a drift alarm)."""
        if self.link_ is not None or self._since_change is not None:
            return None
        return self.threshold_model_.to_early_rerank(EARLY_RERANK)

    def _run_chunk(self, X, events, at_boundary, at_early=False):
        Xs, res = self._score_chunk(X, learn=True)
        self.scheduler_.observe(X)
        if self.link_ is not None:
            self.link_.scores(X, res.scores, res.is_anomaly)
        elif self._since_change is None:
            self.threshold_model_.push(res.scores)
        if self.config.drift.enabled and self.scheduler_.job is None:
            for alarm in self.monitor_.update(res.scores, Xs, res.is_anomaly):
                self._on_drift(alarm, events)
        if at_boundary:
            self._policy(events)
        elif at_early:
            self.threshold_model_.refresh()
        self._count(res)
        return res

    def _policy(self, events):
        """At a boundary: swap in (or wait for) a refit, act on drift, re-rank the threshold,
        start a refit that is due. A follower hands its drift alarms to the link instead."""
        if self.link_ is not None:
            if self._alarms:
                self.link_.drift(self._alarms[-1])
                self._alarms = []
                self._new_monitor()
            return
        self._unstarve(events)
        if self._alarms:
            self._act_on_drift()
        if self._since_change is None:
            self.threshold_model_.refresh()
        else:
            self._rescore_since_change()
        job = self.scheduler_.maybe_start()
        if job is not None:
            events.append(DetectorEvent("refit_started", detail={
                "n_records": job.n_records, "reason": job.reason}))
            if not self.background_refit:
                events.extend(self._poll_refit())

    # ------------------------------------------------------------------ API
    def process(self, X):
        """Score, decide and learn from one batch; see the module docstring."""
        X = self._check(X)
        self._ensure_scheduler()
        events = self._poll_refit()
        if self.ready:
            self._unstarve(events)
            return self._run(X, events)
        if self.link_ is not None:  # a follower never fits: it waits for the shared model
            if len(X):
                self._warm.append(X)
            return DetectionResult.empty(events)
        need = self.config.warmup_records - self.pending
        if len(X) < need:
            if len(X):
                self._warm.append(X)
            return DetectionResult.empty(events)
        self._warm.append(X[:need])
        res = self._complete_warmup(events)
        if len(X) == need:
            return res
        rest = self._run(X[need:], [])
        return DetectionResult.concat([res, rest], events + rest.events)

    def reconfigure(self, config):
        """Adopt another configuration, e.g. the daemon's YAML over a restored checkpoint or a
        pretrained model. Returns the changes as [(key, old, new)].

        Threshold settings re-rank the current score window at once; online settings apply
        from the next update; drift settings restart the drift tests (a new reference); a new
        refit window resizes the record ring; the rest (components, covariance type, warm-up,
        ...) apply at the next fit or refit. Not while a refit is running.
        """
        new = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(config)
        changes = self.config.changes(new)
        if not changes:
            return []
        if self.refit_running:
            raise RuntimeError("reconfigure() while a refit is running: wait_for_refit() first")
        keys = {k for k, _, _ in changes}

        def touched(section):
            return any(k.startswith(section + ".") for k in keys)

        self.config = new
        if self.ready:
            self._ensure_scheduler()
            if touched("threshold"):
                t = new.threshold
                self.threshold_model_ = self.threshold_model_.resized(t.percentile, t.window)
            if touched("online"):
                o = new.online
                self.model_.set_params(step=o.step, alpha=o.alpha, t0=o.t0,
                                       half_life=o.half_life)
            if touched("drift") or "threshold.percentile" in keys:
                self._new_monitor()
        if self.scheduler_ is not None and touched("refit"):
            self.scheduler_.cfg = new.refit
            if new.refit.window != len(self.scheduler_.ring.buf):
                self.scheduler_.ring = self.scheduler_.ring.resized(new.refit.window)
        return changes

    def follow(self, link):
        """Share the model of a group: from now on learning, threshold updates and drift
        actions go to ``link`` (``learn(model, X, resp, log_density)``, ``scores(X, scores,
        is_anomaly)``, ``drift(alarm)``) and the model changes only by ``adopt``."""
        self.link_ = link
        return self

    def unfollow(self):
        """Run its own policy again (a fleet member alone in its group). Records buffered
        while following are processed now, as a single detector would have: their results
        are returned (none while the buffer is still short of the warm-up)."""
        self.link_ = None
        if self.ready or self.pending < self.config.warmup_records:
            return DetectionResult.empty()
        return self.process(self._pop_warm())

    def adopt(self, other):
        """Score with ``other``'s scaler, model and threshold from now on (a published
        version of the shared model). A new model generation (a refit) restarts the drift
        tests; a follower that was waiting scores its buffered records: they are returned."""
        self._ensure_scheduler()
        generation = other.model_version != self.model_version or not self.ready
        if self.ready and self._learn and self.link_ is not None:  # scored under the old one
            X, R, S = (np.concatenate(p) for p in zip(*self._learn))
            self.link_.learn(self.model_, X, R, S)
        self.scaler_, self.model_ = other.scaler_, other.model_
        self.threshold_model_ = other.threshold_model_
        self.train_info_, self.model_version = other.train_info_, other.model_version
        self._precisions = None
        self._learn, self._learn_n, self._fill = [], 0, 0
        if generation:
            self._alarms = []
            self._new_monitor()
        if not self._warm:
            return DetectionResult.empty()
        return self._run(self._pop_warm(), [])

    def train(self, X):
        """Fit scaler, model and calibrated threshold on X and return them without swapping
        them in (``install`` does): reads only the configuration, so it may run in another
        thread while this detector keeps scoring (a fleet leader's group refit)."""
        X = self._check(X)
        return self._fit_fn(X)

    def install(self, trained):
        """Swap a ``train`` result in: a new model generation (``model_version`` + 1)."""
        self._ensure_scheduler()
        self._install(trained)
        return self

    def buffered(self):
        """Rows waiting for a first model (warm-up, or a follower's first version), oldest
        first, as one array (empty when none)."""
        if not self._warm:
            return np.zeros((0, self.n_features_ or 0))
        return np.vstack(self._warm)

    def _pop_warm(self):
        """The buffered rows as one array; the buffer is emptied."""
        X, self._warm = np.vstack(self._warm), []
        return X

    @property
    def records_seen(self):
        """Records this detector has scored and learned from (its stream position)."""
        return 0 if self.scheduler_ is None else int(self.scheduler_.n_seen)

    def min_fit_records(self):
        """The fewest records a fit accepts (10, or twice the fixed component count)."""
        k = self.config.n_components
        return max(2 * k, 10) if isinstance(k, int) else 10

    def finish_warmup(self):
        """End of a finite input during warm-up: fit on what is buffered and score it.

        Returns the buffered records' results; an empty result (records stay pending) when
        there are fewer than ``min_fit_records()`` of them or a model already exists.
        """
        if self.ready or self.pending < self.min_fit_records():
            return DetectionResult.empty()
        self._ensure_scheduler()
        return self._complete_warmup(self._poll_refit())

    def _complete_warmup(self, events):
        Xw = self._pop_warm()
        t0 = time.perf_counter()
        trained = self._fit_fn(Xw)
        seconds = time.perf_counter() - t0
        self.scheduler_.observe(Xw)
        self._install(trained)
        events.append(DetectorEvent("warmup_done", detail={
            "n_records": len(Xw), "seconds": round(seconds, 3),
            "n_components": self.n_components,
            "n_dropped": trained.info["n_dropped"], "threshold": self.threshold_}))
        return self._run(Xw, events, update=False)

    def fit(self, X):
        """Fit scaler, model and threshold on all of X now (no warm-up)."""
        X = self._check(X)
        self._ensure_scheduler()
        trained = self._fit_fn(X)
        self.scheduler_.observe(X)
        self._warm = []
        self._install(trained)
        return self

    def score(self, X):
        """Decisions for X with the current model, changing no state."""
        if not self.ready:
            raise NotFittedError("This Detector has no model yet: call fit, or process "
                                 "warmup_records records first.")
        X = self._check(X)
        return self._run(X, [], update=False, count=False)

    def wait_for_refit(self, timeout=None):
        """Wait for a running refit; swap it in now; return the events that caused."""
        if self.scheduler_ is None:
            return []
        self.scheduler_.wait(timeout)
        return self._poll_refit()

    def close(self, timeout=None):
        """Let a running refit finish (bounded by ``timeout``); nothing else to release."""
        if self.scheduler_ is not None:
            self.scheduler_.wait(timeout)

    def describe(self):
        """A JSON-able summary for ``streamgmm inspect``."""
        out = {"library_version": __version__, "ready": self.ready,
               "model_version": self.model_version, "feature_names": self.feature_names,
               "n_features": self.n_features_, "dtype": self.dtype.name,
               "config": self.config.to_dict(),
               "counters": dict(self.counters), "training": dict(self.train_info_)}
        if self.ready:
            m = self.model_
            out.update({
                "n_components": self.n_components, "covariance_type": m.covariance_type,
                "weights": np.round(np.asarray(m.weights_, dtype=float), 6).tolist(),
                "means": np.round(self.scaler_.inverse_transform(m.means_), 6).tolist(),
                "threshold": self.threshold_,
                "percentile": self.config.threshold.percentile,
                "scaler": {"mean": self.scaler_.mean_.tolist(),
                           "scale": self.scaler_.scale_.tolist()}})
        return out

    # ------------------------------------------------------------ persistence
    def get_state(self, include_recent_records=False):
        """(meta, arrays): the whole state as JSON-able metadata and plain numpy arrays.

        Parameters, summary statistics and scores only, unless ``include_recent_records``:
        then also the recent input rows kept for a refit, online learning and the drift
        tests (raw data; for a checkpoint that must refit right after a restart).
        """
        from .state import detector_state
        return detector_state(self, include_recent_records=include_recent_records)

    @classmethod
    def from_state(cls, meta, arrays):
        """Rebuild a Detector from ``get_state``'s output."""
        from .state import detector_from_state
        return detector_from_state(cls, meta, arrays)

    def save(self, path, include_recent_records=False):
        """Atomically write a checkpoint (NPZ + JSON manifest, no pickle) to ``path``: no
        input rows unless ``include_recent_records`` (see ``get_state``)."""
        save_state(path, *self.get_state(include_recent_records=include_recent_records))

    def dumps(self, include_recent_records=False):
        """The checkpoint as bytes (the NPZ + checksummed manifest ``save`` writes)."""
        return dumps_state(*self.get_state(include_recent_records=include_recent_records))

    @classmethod
    def loads(cls, data, origin="state"):
        """A Detector from ``dumps`` bytes; torn or corrupted bytes raise CheckpointError
        (its message starts with ``origin``)."""
        from .state import detector_from_bytes
        return detector_from_bytes(cls, data, origin)

    @classmethod
    def load(cls, path, trusted=False):
        """Load a checkpoint; pickle-based joblib files need ``trusted=True``."""
        from .state import load_detector
        return load_detector(cls, path, trusted=trusted)

    def export_joblib(self, path):
        """Write the state as a joblib file of plain dicts and arrays (the seeds' workflow)."""
        export_joblib(path, *self.get_state())

    @classmethod
    def from_sklearn(cls, gmm, scaler=None, percentile=1.0, X_fit=None, feature_names=None,
                     config=None):
        """Wrap a fitted scikit-learn GaussianMixture (+ optional StandardScaler)."""
        from .state import detector_from_sklearn
        return detector_from_sklearn(cls, gmm, scaler, percentile, X_fit, feature_names,
                                     config)
