"""Drift detection: CUSUM tests on block means, tuned by an expected run length.

Three detectors watch the stream after each (re)fit, once a reference period of
``reference_records`` held-out records has fixed their null distribution:

- ``score_cusum``: a downward shift of the log-density (the data no longer fits the model);
- ``anomaly_rate``: the flagged fraction rising above the configured percentile (Bernoulli);
- ``feature_cusum``: a shift of any scaled feature's mean, up or down (optional).

Records are grouped into blocks of ``block_size``; each block mean is standardised against the
reference (self-starting: the reference mean keeps absorbing every earlier block since the
fit, and the standard error counts the reference's own uncertainty, so a 2,000-record
reference's sampling error cannot masquerade as drift) and fed to a log-likelihood-ratio CUSUM S = max(0, S + llr) designed for a shift of
two standard errors of the block mean (three times the rate for ``anomaly_rate``): a one-SE
design would make the reference's own sampling error (about 0.16 SE for 2,000 reference
records and blocks of 50) a sizeable fraction of the allowance and raise false alarms. Per-record
values are clipped to the reference's 0.5-99.5% range so isolated gross anomalies move a block
only a little (they are the threshold's business, not drift). An alarm fires when S > h with
h = ln(ARL), ARL the run length per CUSUM in blocks: the expected run length spread over all
CUSUMs (Bonferroni). Wald's bound makes the false-alarm run length at least that long.
"""
from dataclasses import dataclass, field

import numpy as np

DETECTORS = ("score_cusum", "anomaly_rate", "feature_cusum")


@dataclass
class DriftAlarm:
    """One drift detection: which test, at which record, and where the change likely began."""

    detector: str
    record: int
    change_start: int
    statistic: float
    detail: dict = field(default_factory=dict)


@dataclass
class DriftMonitor:
    """Block-mean LLR CUSUM bank over [score, features...] plus a Bernoulli rate CUSUM."""

    percentile: float          # these five come from DetectorConfig (no defaults of their own)
    expected_run_length: float
    feature_tests: bool
    reference_records: int
    block_size: int
    shift: float = 2.0
    rate_ratio: float = 3.0
    feature_names: list = None

    @classmethod
    def from_config(cls, config, feature_names=None):
        """The monitor a DetectorConfig asks for (its ``drift`` section and percentile)."""
        d = config.drift
        return cls(percentile=config.threshold.percentile,
                   expected_run_length=d.expected_run_length, feature_tests=d.feature_tests,
                   reference_records=d.reference_records, block_size=d.block_size,
                   feature_names=feature_names)

    def reset(self, n_features, start_record):
        """Forget everything; start collecting a new reference at ``start_record``."""
        self.n_features_ = n_features
        self.n_cols_ = 1 + (n_features if self.feature_tests else 0)
        self.ref_buf_ = np.empty((0, self.n_cols_ + 1))
        self.ref_ready_ = False
        self.lo_ = self.hi_ = self.mu_ = self.sd_ = None
        self.rem_ = np.empty((0, self.n_cols_ + 1))
        self.record_ = start_record
        self.S_ = np.zeros(self._n_cusums())
        self.last_zero_ = np.full(self._n_cusums(), start_record, dtype=np.int64)
        n_blocks = max(self.expected_run_length * self._n_cusums() / self.block_size, 2.0)
        self.h_ = float(np.log(n_blocks))
        return self

    def _n_cusums(self):
        return 2 + (2 * self.n_features_ if self.feature_tests else 0)

    def _labels(self):
        names = ["score_cusum", "anomaly_rate"]
        if self.feature_tests:
            names += ["feature_cusum"] * (2 * self.n_features_)
        return names

    def update(self, scores, Xs, is_anomaly):
        """Feed one batch (in stream order); return the alarms it raised (at most one)."""
        cols = [np.asarray(scores, dtype=np.float64)[:, None]]
        if self.feature_tests:
            cols.append(np.asarray(Xs, dtype=np.float64))
        cols.append(np.asarray(is_anomaly, dtype=np.float64)[:, None])
        V = np.hstack(cols)
        if not self.ref_ready_:
            need = self.reference_records - len(self.ref_buf_)
            take = V[:need]
            self.ref_buf_ = np.vstack([self.ref_buf_, take])
            self.record_ += len(take)
            V = V[need:]
            if len(self.ref_buf_) >= self.reference_records:
                self._fix_reference()
            if not len(V) or not self.ref_ready_:
                return []
        return self._feed(V)

    def _fix_reference(self):
        R = self.ref_buf_[:, :-1]
        self.lo_, self.hi_ = np.percentile(R, [0.5, 99.5], axis=0)
        C = np.clip(R, self.lo_, self.hi_)
        self.mu_ = C.mean(axis=0)
        self.sd_ = np.maximum(C.std(axis=0), 1e-9)
        self.ref_n_ = float(len(C))
        self.ref_ready_ = True
        self.ref_buf_ = np.empty((0, self.n_cols_ + 1))

    def _feed(self, V):
        m = self.block_size
        V = np.vstack([self.rem_, V]) if len(self.rem_) else V
        n_blocks = len(V) // m
        self.rem_ = V[n_blocks * m:]
        if n_blocks == 0:
            return []
        B = V[: n_blocks * m].reshape(n_blocks, m, -1)
        vals = np.clip(B[:, :, :-1], self.lo_, self.hi_).mean(axis=1)
        # Reference before each block = the initial reference plus all earlier blocks.
        n_before = self.ref_n_ + m * np.arange(n_blocks)
        sums = self.mu_ * self.ref_n_ + m * np.vstack([np.zeros_like(vals[:1]),
                                                      np.cumsum(vals, axis=0)[:-1]])
        mu_before = sums / n_before[:, None]
        se = self.sd_ * np.sqrt(1.0 / m + 1.0 / n_before)[:, None]
        z = (vals - mu_before) / se
        c = B[:, :, -1].sum(axis=1)
        p0 = self.percentile / 100.0
        p1 = min(0.5, self.rate_ratio * p0)
        d = self.shift
        llr = [d * (-z[:, 0]) - d * d / 2,
               c * np.log(p1 / p0) + (m - c) * np.log((1 - p1) / (1 - p0))]
        if self.feature_tests:
            zf = z[:, 1:]
            llr += list((d * zf - d * d / 2).T) + list((-d * zf - d * d / 2).T)
        L = np.stack(llr, axis=1)  # (blocks, cusums)
        # S_t = C_t - min(-S_0, min_{j<=t} C_j), the CUSUM recursion in closed form.
        C = np.cumsum(L, axis=0)
        S = C - np.minimum(-self.S_, np.minimum.accumulate(C, axis=0))
        ends = self.record_ + m * np.arange(1, n_blocks + 1)
        zero = S <= 0
        alarms = S > self.h_
        first = None
        if alarms.any():
            b, j = np.argwhere(alarms)[0]
            first = (int(b), int(j))
            S, zero, ends = S[: b + 1], zero[: b + 1], ends[: b + 1]
        used = len(S)
        self.mu_ = (self.mu_ * self.ref_n_ + m * vals[:used].sum(axis=0)) / (self.ref_n_ + m * used)
        self.ref_n_ += m * used
        for j in range(S.shape[1]):
            idx = np.nonzero(zero[:, j])[0]
            if len(idx):
                self.last_zero_[j] = ends[idx[-1]]
        self.S_ = S[-1].copy()
        self.record_ = int(ends[-1]) if first is None else self.record_ + n_blocks * m
        if first is None:
            return []
        b, j = first
        label = self._labels()[j]
        detail = {"statistic": float(S[b, j]), "threshold": self.h_}
        if label == "feature_cusum":
            f = (j - 2) % self.n_features_
            detail["feature"] = (self.feature_names[f] if self.feature_names else f"x{f}")
            detail["direction"] = "up" if j - 2 < self.n_features_ else "down"
        alarm = DriftAlarm(label, int(ends[b]), int(self.last_zero_[j]), float(S[b, j]), detail)
        self.S_[:] = 0.0
        self.last_zero_[:] = self.record_
        return [alarm]

    def get_state(self):
        meta = {k: getattr(self, k) for k in ("percentile", "expected_run_length",
                                              "feature_tests", "reference_records",
                                              "block_size", "shift", "rate_ratio")}
        meta.update(n_features=self.n_features_, record=int(self.record_),
                    ref_ready=bool(self.ref_ready_), h=self.h_,
                    ref_n=float(getattr(self, "ref_n_", 0.0)),
                    feature_names=list(self.feature_names or []))
        arrays = {"ref_buf": self.ref_buf_, "rem": self.rem_, "S": self.S_,
                  "last_zero": self.last_zero_}
        if self.ref_ready_:
            arrays.update(lo=self.lo_, hi=self.hi_, mu=self.mu_, sd=self.sd_)
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        mon = cls(percentile=meta["percentile"], expected_run_length=meta["expected_run_length"],
                  feature_tests=meta["feature_tests"], reference_records=meta["reference_records"],
                  block_size=meta["block_size"], shift=meta["shift"],
                  rate_ratio=meta["rate_ratio"], feature_names=meta["feature_names"] or None)
        mon.reset(meta["n_features"], meta["record"])
        mon.ref_ready_ = meta["ref_ready"]
        mon.ref_buf_ = np.array(arrays["ref_buf"]).reshape(-1, mon.n_cols_ + 1)
        mon.rem_ = np.array(arrays["rem"]).reshape(-1, mon.n_cols_ + 1)
        mon.S_ = np.array(arrays["S"], dtype=np.float64)
        mon.last_zero_ = np.array(arrays["last_zero"], dtype=np.int64)
        if mon.ref_ready_:
            mon.lo_, mon.hi_ = np.array(arrays["lo"]), np.array(arrays["hi"])
            mon.mu_, mon.sd_ = np.array(arrays["mu"]), np.array(arrays["sd"])
            mon.ref_n_ = float(meta["ref_n"])
        return mon
