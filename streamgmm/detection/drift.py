"""Drift detection: CUSUM tests on block means, tuned by an expected run length.

Three detectors watch the stream after each (re)fit, once a reference period of
``reference_records`` held-out records has fixed their null distribution:

- ``score_cusum``: a downward shift of the log-density (the data no longer fits the model);
- ``anomaly_rate``: the flagged fraction rising above the configured percentile (Bernoulli);
- ``feature_cusum``: a shift of any scaled feature's mean, up or down (optional).

Records are grouped into blocks of ``block_size``. Each block mean is standardised against
everything seen since the fit (self-starting: the reference keeps absorbing every earlier
block). Real metrics are autocorrelated, so the variance of a block mean is not sd^2 / m: it is
estimated from the block means themselves (their variance plus twice their lag-1
autocovariance: a long-run variance, which covers AR(1) streams up to rho = 0.9 with blocks of
50), inflated by 1 + 1.5 / sqrt(blocks seen) for its own estimation error, and the reference
mean's error is counted too. Standardised values are clipped to +-4 (a single odd block cannot
raise an alarm on its own; a real 1-sigma shift still gives the maximum per block) and fed to a
log-likelihood-ratio CUSUM S = max(0, S + llr) designed for a shift of two standard errors.
The anomaly-rate CUSUM is a Bernoulli LLR for three times the rate, divided by the measured
over-dispersion of the flag counts (flags cluster on autocorrelated streams).

The score and feature CUSUMs average *ranks*, not raw values: each record's value becomes its
mid-rank in the reference, u = F_ref(x) in [0, 1] (``RANK_GRID`` reference quantiles, linear
in between). Under no change u is ~uniform whatever the shape of the data, so a block mean is
an average of bounded, equally spread terms and close to normal, which the Gaussian LLR and the
h = ln(ARL) design assume. Raw values, even winsorised, are not: a stream with a small fraction
q of far-away anomalies (real ones, stationary) puts a point mass far below the scores' bulk;
each block then holds Binomial(m, q) such records, and its mean is a compound binomial with a
long lower tail (1% at 30 sd: block-mean skewness -2.2, P(z < -3.5) 60x the normal's), so the
score CUSUM crossed h every ~300,000 records where 10^7 was designed. A clip at the reference's
0.5-99.5% quantiles does not help once q > 0.5% (the clip itself lies in the anomaly cluster).
With ranks a far anomaly counts as the lowest possible value, -0.5 against a per-record sd of
0.29, whatever the contamination's distance or (below the test's power) its rate; the rank
mean keeps ~95% of the raw mean's efficiency for a shift of normal data (3 / pi) and more for
skewed or heavy-tailed data.

An alarm fires when S > h, h = ln(ARL), ARL the run length per CUSUM in blocks: the
expected run length spread over all CUSUMs (Bonferroni). The CUSUM's last zero before the
alarm estimates where the change began (``change_start``).
"""
from dataclasses import dataclass, field

import numpy as np

from ..math.interp import RowInterp

DETECTORS = ("score_cusum", "anomaly_rate", "feature_cusum")
Z_CLIP = 4.0  # standardised block means are clipped to +-Z_CLIP before the LLR
RANK_GRID = 32  # reference quantiles per column that define the ranks (at (i + 0.5) / RANK_GRID)


def reference_grid(R, k=RANK_GRID):
    """The (k, columns) quantiles of the reference R at (i + 0.5) / k, i = 0..k-1: a summary
    of each column's distribution (interpolated order statistics, not records)."""
    return np.percentile(R, 100.0 * (np.arange(k) + 0.5) / k, axis=0)


@dataclass(frozen=True)
class RankTables:
    """The piecewise-linear CDFs of :func:`mid_ranks`, all columns stacked: the right-
    continuous one of every column, and the left-continuous one (on -x) of the columns whose
    quantiles tie (``tied``: their indices; ``left`` is None when there are none)."""

    right: RowInterp
    tied: np.ndarray
    left: RowInterp = None


def rank_tables(grid):
    """The :class:`RankTables` of the columns of ``grid`` (reference quantiles, see
    :func:`reference_grid`): knots at the quantiles, padded just outside them with 0 and 1."""
    grid = np.asarray(grid, dtype=np.float64)
    k = len(grid)
    P = (np.arange(k) + 0.5) / k
    fr, fl = np.concatenate([[0.0], P, [1.0]]), np.concatenate([[0.0], 1.0 - P[::-1], [1.0]])
    pad = 1e-300 + 1e-12 * np.abs(grid[[0, -1]])
    lo, hi = grid[0] - pad[0], grid[-1] + pad[1]
    xr = np.vstack([lo, grid, hi]).T
    tied = np.flatnonzero((np.diff(grid, axis=0) == 0).any(axis=0))
    left = None
    if len(tied):
        xl = np.vstack([-hi, -grid[::-1], -lo]).T[tied]
        left = RowInterp(xl, fl)
    return RankTables(RowInterp(xr, fr), tied, left)


def mid_ranks(V, tables):
    """Each column of V mapped to its mid-rank in [0, 1] against the reference quantiles
    behind ``tables`` (piecewise linear through (grid[i], (i + 0.5) / k); 0 below, 1 above;
    at a value several quantiles share, the middle of their span). All columns in one
    branch-free lookup (:class:`RowInterp`, the same values as ``np.interp`` per column)."""
    Vt = np.ascontiguousarray(np.asarray(V, dtype=np.float64).T)
    U = tables.right(Vt)
    if tables.left is not None:  # ties in the reference: average with the left-continuous CDF
        t = tables.tied
        U[t] = 0.5 * (U[t] + 1.0 - tables.left(-Vt[t]))
    return U.T


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
        self.grid_ = self.tables_ = self.mu_ = self.sd_ = None
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
        """Feed one batch (in stream order); return the alarms it raised, in order. Every
        block is tested whatever the batch's size: after an alarm the CUSUMs restart on the
        blocks that follow it (a batch holding a change raises the alarms that the same
        records in smaller batches would)."""
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
        self.grid_ = reference_grid(self.ref_buf_[:, :-1])
        self.tables_ = rank_tables(self.grid_)
        m = self.block_size
        nb = len(self.ref_buf_) // m
        vals = self._block_values(self.ref_buf_[: nb * m], nb)
        self.off_ = vals.mean(axis=0)
        dev = vals - self.off_
        self.nb_ = float(nb)
        self.sum1_ = dev.sum(axis=0)
        self.sum2_ = (dev * dev).sum(axis=0)
        self.lag1_ = (dev[1:] * dev[:-1]).sum(axis=0)
        self.prev_ = dev[-1].copy()
        self.mu_ = self.off_[:-1].copy()
        self.sd_ = np.sqrt(np.maximum(self._lrv(self.nb_, self.sum1_, self.sum2_,
                                                self.lag1_), 1e-18))[:-1]
        self.ref_ready_ = True
        self.ref_buf_ = np.empty((0, self.n_cols_ + 1))

    def _block_values(self, V, n_blocks):
        """Per block of ``block_size`` rows of V: the mean rank of each value column, and the
        number of flagged records."""
        m = self.block_size
        if getattr(self, "tables_", None) is None:
            self.tables_ = rank_tables(self.grid_)
        U = mid_ranks(V[:, :-1], self.tables_).reshape(n_blocks, m, -1).mean(axis=1)
        return np.concatenate([U, V[:, -1].reshape(n_blocks, m).sum(axis=1)[:, None]], axis=1)

    @staticmethod
    def _lrv(n, s1, s2, l1):
        """Long-run variance of the block means: var + 2 lag-1 autocovariance (>= var)."""
        mean = s1 / n
        g0 = np.maximum(s2 / n - mean * mean, 0.0)
        g1 = l1 / np.maximum(n - 1.0, 1.0) - mean * mean
        return np.maximum(g0 + 2.0 * g1, g0)

    def _feed(self, V):
        m = self.block_size
        V = np.vstack([self.rem_, V]) if len(self.rem_) else V
        n_blocks = len(V) // m
        self.rem_ = V[n_blocks * m:]
        alarms, done = [], 0
        while done < n_blocks:
            alarm, used = self._feed_blocks(V[done * m: n_blocks * m], n_blocks - done)
            done += used
            if alarm is not None:
                alarms.append(alarm)
        return alarms

    def _feed_blocks(self, V, n_blocks):
        """Test whole blocks up to the first alarm: (the alarm or None, blocks used)."""
        m = self.block_size
        vals = self._block_values(V, n_blocks)
        dev = vals - self.off_
        # Moments before each block = the reference plus all earlier blocks (self-starting).
        zero = np.zeros_like(dev[:1])
        n_before = self.nb_ + np.arange(n_blocks, dtype=np.float64)[:, None]
        s1 = self.sum1_ + np.vstack([zero, np.cumsum(dev, axis=0)[:-1]])
        s2 = self.sum2_ + np.vstack([zero, np.cumsum(dev * dev, axis=0)[:-1]])
        prev = np.vstack([self.prev_[None, :], dev[:-1]])
        lagp = dev * prev
        l1 = self.lag1_ + np.vstack([zero, np.cumsum(lagp, axis=0)[:-1]])
        lrv = self._lrv(n_before, s1, s2, l1)
        infl = (1.0 + 1.5 / np.sqrt(n_before)) ** 2
        mu_before = self.off_ + s1 / n_before
        se = np.sqrt(np.maximum(lrv * (1.0 + 1.0 / n_before) * infl, 1e-18))
        z = np.clip((vals[:, :-1] - mu_before[:, :-1]) / se[:, :-1], -Z_CLIP, Z_CLIP)
        c = vals[:, -1]
        p0 = self.percentile / 100.0
        p1 = min(0.5, self.rate_ratio * p0)
        # Over-dispersion of the flag counts against the binomial (>= 1).
        phi = np.maximum(1.0, lrv[:, -1] * infl[:, 0] / (m * p0 * (1 - p0)))
        d = self.shift
        L = np.empty((n_blocks, len(self.S_)))  # (blocks, cusums): the LLR of each block
        L[:, 0] = d * (-z[:, 0]) - d * d / 2
        L[:, 1] = (c * np.log(p1 / p0) + (m - c) * np.log((1 - p1) / (1 - p0))) / phi
        if self.feature_tests:
            zf, f = z[:, 1:], self.n_features_
            L[:, 2:2 + f] = d * zf - d * d / 2
            L[:, 2 + f:] = -d * zf - d * d / 2
        # S_t = C_t - min(-S_0, min_{j<=t} C_j), the CUSUM recursion in closed form.
        C = np.cumsum(L, axis=0)
        S = C - np.minimum(-self.S_, np.minimum.accumulate(C, axis=0))
        ends = self.record_ + m * np.arange(1, n_blocks + 1)
        # "Last zero": the last block end where S was low (<= h/4, not only 0, so noise that
        # lifted S a little before the change does not pull the change start back).
        zero_s = S <= self.h_ / 4
        alarms = S > self.h_
        first = None
        if alarms.any():
            b, j = np.argwhere(alarms)[0]
            first = (int(b), int(j))
            S, zero_s, ends = S[: b + 1], zero_s[: b + 1], ends[: b + 1]
        used = len(S)
        self.sum1_ = self.sum1_ + dev[:used].sum(axis=0)
        self.sum2_ = self.sum2_ + (dev[:used] ** 2).sum(axis=0)
        self.lag1_ = self.lag1_ + lagp[:used].sum(axis=0)
        self.prev_ = dev[used - 1].copy()
        self.nb_ += used
        self.mu_ = (self.off_ + self.sum1_ / self.nb_)[:-1]
        self.sd_ = np.sqrt(self._lrv(self.nb_, self.sum1_, self.sum2_, self.lag1_))[:-1]
        self._note_last_zeros(zero_s, ends)
        self.S_ = S[-1].copy()
        self.record_ = int(ends[-1])
        if first is None:
            return None, used
        b, j = first
        label = self._labels()[j]
        detail = {"statistic": float(S[b, j]), "threshold": self.h_}
        if label == "feature_cusum":
            f = (j - 2) % self.n_features_
            detail["feature"] = (self.feature_names[f] if self.feature_names else f"x{f}")
            detail["direction"] = "up" if j - 2 < self.n_features_ else "down"
        # Change start: the latest last zero among the CUSUMs that have clearly risen (an
        # abrupt change moves several; one CUSUM's last zero is often early by noise).
        risen = S[b] > self.h_ / 2
        start = int(self.last_zero_[risen].max()) if risen.any() else int(self.last_zero_[j])
        alarm = DriftAlarm(label, int(ends[b]), start, float(S[b, j]), detail)
        self.S_[:] = 0.0
        self.last_zero_[:] = self.record_
        return alarm, used

    def _note_last_zeros(self, low, ends):
        """Per CUSUM with a low block among ``low`` (blocks, cusums): its last such block's
        end ``ends[b]`` becomes its last zero (all CUSUMs at once, no loop over them)."""
        seen = low.any(axis=0)
        last = len(low) - 1 - np.argmax(low[::-1], axis=0)
        self.last_zero_[seen] = ends[last[seen]]

    _MOMENTS = ("off", "sum1", "sum2", "lag1", "prev", "grid")

    def get_state(self):
        meta = {k: getattr(self, k) for k in ("percentile", "expected_run_length",
                                              "feature_tests", "reference_records",
                                              "block_size", "shift", "rate_ratio")}
        meta.update(n_features=self.n_features_, record=int(self.record_),
                    ref_ready=bool(self.ref_ready_), h=self.h_,
                    nb=float(getattr(self, "nb_", 0.0)),
                    feature_names=list(self.feature_names or []))
        arrays = {"ref_buf": self.ref_buf_, "rem": self.rem_, "S": self.S_,
                  "last_zero": self.last_zero_}
        if self.ref_ready_:
            arrays.update({k: getattr(self, k + "_") for k in self._MOMENTS})
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        mon = cls(percentile=meta["percentile"], expected_run_length=meta["expected_run_length"],
                  feature_tests=meta["feature_tests"], reference_records=meta["reference_records"],
                  block_size=meta["block_size"], shift=meta["shift"],
                  rate_ratio=meta["rate_ratio"], feature_names=meta["feature_names"] or None)
        mon.reset(meta["n_features"], meta["record"])
        if meta["ref_ready"] and not all(k in arrays for k in cls._MOMENTS):
            return mon  # a state from before the ranks (or the long-run variance): collect a
            #            new reference
        mon.ref_ready_ = meta["ref_ready"]
        mon.ref_buf_ = np.array(arrays["ref_buf"]).reshape(-1, mon.n_cols_ + 1)
        mon.rem_ = np.array(arrays["rem"]).reshape(-1, mon.n_cols_ + 1)
        mon.S_ = np.array(arrays["S"], dtype=np.float64)
        mon.last_zero_ = np.array(arrays["last_zero"], dtype=np.int64)
        if mon.ref_ready_:
            for k in cls._MOMENTS:
                setattr(mon, k + "_", np.array(arrays[k], dtype=np.float64))
            mon.nb_ = float(meta["nb"])
            mon.mu_ = (mon.off_ + mon.sum1_ / mon.nb_)[:-1]
            mon.sd_ = np.sqrt(mon._lrv(mon.nb_, mon.sum1_, mon.sum2_, mon.lag1_))[:-1]
        return mon
