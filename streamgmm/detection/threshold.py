"""Percentile threshold on the log-density: flag the lowest p% of recent scores.

The threshold is the p-th percentile of the last ``window`` out-of-sample scores (a ring
buffer: bounded memory). At a (re)fit the ring starts from held-out scores of the fit window
(cross-validated, see ``calibration.py``), not the in-sample ones: a model scores its own
training records higher than new ones, so an in-sample percentile flags more than p% of the
stream and jumps when those scores leave the window. A far-out fence (Tukey: Q1 - 3 IQR) is
taken on the same window at each re-rank (adaptive: a fence fixed on the fit window flags
everything on small or wide warm-ups) and the threshold is max(p-th percentile, fence): a burst
of gross anomalies (more than p% of the window) is flagged in full instead of dragging the
threshold down to hide itself; on clean data the fence lies below the percentile.

Each score also gets a calibrated **rarity**: the fraction of the window's scores below it
(empirical: the bulk from a sorted sample, the lower tail, where the threshold sits, from the
window's exact lowest scores with np.percentile's convention, so a record is flagged iff its
rarity < p/100 while the percentile, not the fence, sets the threshold; beyond the lowest
EXTRAP_RANK scores and the scores under the fence an exponential tail through two order
statistics, so a gross anomaly is ranked against the normal tail, not against the other gross
ones in the window, and rarities below 1/window stay finite and ordered) and a
**severity** = -log10(rarity): a record of severity 4 is about as rare as 1 in 10,000 recent
records; the threshold sits at severity -log10(p/100) (2 for p = 1%).
"""
from dataclasses import dataclass, field

import numpy as np

# Lower-tail model: fit to the lowest max(TAIL_FACTOR * p, TAIL_MIN) share of the window.
TAIL_FACTOR = 5.0
TAIL_MIN = 0.02
TAIL_MAX = 0.25
SORTED_MAX = 4096  # scores in the sorted sample the bulk's rarity is read from
# Rarity below the EXTRAP_RANK-th lowest score of the window is extrapolated (exponential tail).
EXTRAP_RANK = 5
# The fence binds when the newest scores fall below it this many times as often as the rest.
BURST_RATIO = 3.0


def order_statistics(data, k, pairs, sample, stride):
    """(the k + 1 lowest values of ``data`` (finite, like the threshold's window), sorted;
    its order statistics at the ranks ``pairs`` (m, 2), same shape): exactly what sorting
    ``data`` gives.

    ``sample`` is ``np.sort(data[::stride])``. With stride 1 it is the sorted data. Otherwise
    a band of values around each wanted rank is read off the sample, and only the values of
    ``data`` inside it are counted and sorted: a few passes over the window instead of a
    partition at seven ranks (the re-rank's main cost). np.partition when a band misses.
    """
    if stride == 1:
        return sample[: k + 1].copy(), sample[pairs]
    low = _lowest(data, k + 1, sample, stride)
    stat = np.empty(pairs.shape)
    for i, (a, b) in enumerate(pairs):
        stat[i] = low[[a, b]] if low is not None and b <= k else \
            _in_band(data, a, b, sample, stride)
    if low is None or np.isnan(stat).any():
        part = np.partition(data, np.unique(np.concatenate([[k], pairs.ravel()])))
        return np.sort(part[: k + 1]), part[pairs]
    return low, stat


def _sample_margin(sample):
    """Sample ranks kept on either side of a wanted rank's place in the sample (its
    quantiles scatter by about sqrt(len) / 2 ranks; this is 1.5 to 8 times that)."""
    return 8 + len(sample) // 32


def _lowest(data, count, sample, stride):
    """The ``count`` lowest values of ``data`` sorted, from those at or below a sample value
    safely above them; None when fewer than ``count`` are."""
    i = min(len(sample) - 1, -(-count // stride) + _sample_margin(sample))
    band = data[data <= sample[i]]
    return np.sort(band)[:count] if len(band) >= count else None


def _in_band(data, a, b, sample, stride):
    """The order statistics of ``data`` at ranks a <= b, from the values between two sample
    values around them (all values below the band counted, the band sorted); NaN when the
    band does not hold both ranks."""
    g, m = _sample_margin(sample), len(sample)
    i, j = a // stride - g, -(-b // stride) + g
    inside = data <= sample[j] if j < m else np.ones(len(data), dtype=bool)
    below = 0
    if i > 0:
        at_or_above = data >= sample[i]
        below = len(data) - int(np.count_nonzero(at_or_above))
        inside &= at_or_above
    band = data[inside]
    if not below <= a <= b < below + len(band):
        return np.nan
    return np.partition(band, [a - below, b - below])[[a - below, b - below]]


def _insertion_points(sorted_values, keys):
    """``np.searchsorted(sorted_values, keys, side="left")``, searched in key order: on a
    batch of fresh scores the binary search mispredicts most of its branches, in key order
    far fewer (1,000 scores in 5,000: ~80 -> ~55 us, the argsort included)."""
    order = np.argsort(keys)
    out = np.empty(len(keys), dtype=np.intp)
    out[order] = np.searchsorted(sorted_values, keys[order], side="left")
    return out


@dataclass
class PercentileThreshold:
    """Streaming p-th percentile of recent scores, with rarity and severity per score."""

    percentile: float = 1.0
    window: int = 20000
    fence_iqr: float = 3.0     # None: no fence (the short threshold after a drift alarm)
    value_: float = None
    fence_: float = -np.inf
    ring_: np.ndarray = field(default=None, repr=False)
    n_filled_: int = 0
    pos_: int = 0
    since_: int = 0
    n_prior_: int = 0   # calibration scores at the start of the ring (from fit)
    burst_: bool = True  # the fence may set the threshold (see _rerank)
    live_: int = 0      # scores added by update() since fit


    def fit(self, scores, fit_fence_iqr=None, gross=None):
        """Reset from (held-out) scores of the fit window. ``fit_fence_iqr``: the fence's
        multiple of the IQR while these scores are in the window (default ``fence_iqr``).
        The fit window may hold gross anomalies, so the fence may set the threshold from the
        start; ``gross`` (the scores, among ``scores``, of the rows the fit dropped as far
        out) narrows that to when it is needed: more of them lie below the fence than the
        percentile's rank, (n - 1) p/100 + 1 scores, can hold (the percentile would sit
        among them). Otherwise the fence binds only in a burst of the stream's own scores (a
        fence bound by the kept rows' heavy held-out tail flagged 2-3p of normal digits
        through the calibration span; BENCHMARKS.md, "The fence binds from the fit only for
        the fit's own gross rows")."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        self.ring_ = np.empty(self.window, dtype=np.float64)
        self.n_filled_ = self.pos_ = 0
        self._push(scores)
        self.n_prior_, self.live_ = min(len(scores), self.window), 0
        # the fit window may hold gross anomalies: flag them in full while it is in the window
        self.fit_fence_iqr_ = fit_fence_iqr
        self.burst_, self.fit_burst_ = True, True
        self._rerank()
        if gross is not None and self.burst_:
            below = np.count_nonzero(np.asarray(gross, dtype=np.float64) < self.fence_)
            if below <= (self.n_filled_ - 1) * self.percentile / 100.0 + 1:
                self.burst_ = self.fit_burst_ = False
                self.value_ = float(self._qp)
        return self

    def prior_span(self):
        """Live scores after which the fit's calibration scores are dropped: as many as there
        were of them, and at least 10/p (ten expected flags)."""
        return int(min(self.window, max(self.n_prior_, 10 / (self.percentile / 100.0))))

    def to_early_rerank(self, first):
        """Live scores until the next early re-rank while the fit's calibration scores are in
        the window (after ``first`` live scores, then twice, four times as many...: fixed
        counts, so call sizes do not matter), or None once they have left it."""
        if not self.n_prior_:
            return None
        at = first
        while at <= self.live_:
            at *= 2
        return at - self.live_

    def restarted(self, scores):
        """A threshold on only ``scores`` (those since a detected change), re-ranked now, with
        a short window (20/p records, at least 1,000) and no fence: the flagged fraction
        returns to p on the new data before a refit lands, and follows the old model while it
        learns the new regime (its scores rise fast then). The refit's threshold replaces it.
        (The fence is for bursts of gross anomalies in a known regime; after a drift alarm a
        new component of 20% of the stream lies below the old fence, which kept the flagged
        fraction at 20% until the refit landed.)"""
        short = int(min(self.window, max(1000, 20 / (self.percentile / 100.0))))
        t = PercentileThreshold(self.percentile, short, None).fit(scores)
        t.n_prior_ = 0  # scores of the stream itself
        return t

    def _push(self, s):
        w = self.window
        if len(s) >= w:
            self.ring_[:] = s[-w:]
            self.pos_, self.n_filled_ = 0, w
            return
        end = self.pos_ + len(s)
        if end <= w:
            self.ring_[self.pos_:end] = s
        else:
            cut = w - self.pos_
            self.ring_[self.pos_:] = s[:cut]
            self.ring_[: end - w] = s[cut:]
        self.pos_ = end % w
        self.n_filled_ = min(w, self.n_filled_ + len(s))

    def update(self, scores):
        """Add a batch of scores; re-rank once a tenth of the window's content is new."""
        self.push(scores)
        return self.refresh()

    def push(self, scores):
        """Add scores to the window without re-ranking (``refresh`` does that): the Detector
        re-ranks only at fixed record counts, so decisions do not depend on call sizes."""
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            scores = scores[np.isfinite(scores)]
        self._push(scores)
        self.live_ += len(scores)
        self.since_ += len(scores)

    def refresh(self):
        """Re-rank if due: the calibration scores leave once enough of the stream's own are
        in; otherwise once a tenth of the window's content is new."""
        if self.n_prior_ and self.live_ >= self.prior_span():
            # The calibration scores (held-out scores of the fit window) only stand in for
            # the stream's until there are enough of those: on small or wide fit windows
            # they are a poor proxy (optdigits, d=64, 1,043 rows: held-out 1% at -82, the
            # stream's at -6; 3-4p of normals flagged while they were in the window).
            live = self.recent()[-min(self.live_, self.n_filled_):]
            self.ring_ = np.empty(self.window, dtype=np.float64)
            self.n_filled_ = self.pos_ = self.n_prior_ = 0
            self._push(live)
            if getattr(self, "fit_burst_", False):  # the fit window's reason is gone
                self.burst_ = self.fit_burst_ = False
            return self._rerank()
        # A re-rank costs O(window); the percentile of n scores barely moves in n/10 more.
        if self.since_ < max(1, self.n_filled_ // 10):
            return self.value_
        return self._rerank()

    def recent(self):
        """The window's scores, oldest first."""
        if self.n_filled_ < self.window:
            return self.ring_[: self.n_filled_].copy()
        return np.concatenate([self.ring_[self.pos_:], self.ring_[: self.pos_]])

    def resized(self, percentile, window):
        """A copy with another percentile and/or window, keeping the most recent scores, its
        value re-ranked at once (a config change on a restored model)."""
        t = PercentileThreshold(percentile=percentile, window=window, fence_iqr=self.fence_iqr)
        t.ring_ = np.empty(window, dtype=np.float64)
        kept = self.recent()
        t.live_, t.burst_ = self.live_, self.burst_
        if len(kept):
            t._push(kept)
            t._rerank()
        t.n_prior_ = max(0, min(self.n_prior_, t.n_filled_ - self.live_))
        if t.value_ is None:  # nothing to rank yet
            t.value_ = self.value_
        return t

    def _refresh(self):
        """Percentiles, fence and the lower tail's exact order statistics, and a sorted
        sample for the bulk's rarity: O(window) (the sort is of at most SORTED_MAX strided
        scores; the bulk needs no more resolution, and the tail, where the threshold sits, is
        read from the exact lowest scores; ``order_statistics`` finds those and the
        percentiles' neighbours from bands of the sample)."""
        data = self.ring_[: self.n_filled_]
        n = len(data)
        if n == 0:
            self.sorted_ = data.copy()
            self.low_ = data.copy()
            self.tail_k_, self.tail_frac_, self.tail_s_, self.tail_beta_ = 0, 1.0, -np.inf, 1.0
            return
        q = min(TAIL_MAX, max(TAIL_FACTOR * self.percentile / 100.0, TAIL_MIN))
        k = int(min(n - 1, max(10, q * n)))
        pos = (n - 1) * np.array([self.percentile / 100.0, 0.25, 0.75])
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        stride = max(1, n // SORTED_MAX)
        self.sorted_ = np.sort(data[::stride])
        # The k+1 lowest scores, exactly: score low_[i] has rarity i / (n - 1), the convention
        # of np.percentile, so a score at the p-th percentile has rarity p/100 exactly.
        self.low_, stat = order_statistics(data, k, np.stack([lo, hi], axis=1), self.sorted_,
                                           stride)
        at_lo, at_hi = stat[:, 0], stat[:, 1]
        at = at_lo + (pos - lo) * (at_hi - at_lo)
        qp, q1, q3 = (float(v) for v in at)  # linear interpolation, as np.percentile
        self.n_rank_ = max(n - 1, 1)
        self.tail_k_, self.tail_frac_ = k, k / self.n_rank_
        self.tail_s_ = float(self.low_[k])
        # Beyond the lowest EXTRAP_RANK scores, and beyond every score under the far-out
        # fence (gross anomalies: a new one is ranked against the normal tail, not against
        # the other gross ones in the window), an exponential tail through two order
        # statistics (the anchor and the k-th lowest). Quantile-based, so gross anomalies
        # do not inflate it (a mean excess did: flagged normals got rarities of 4-9 p).
        fence = float(q1 - (3.0 if self.fence_iqr is None else self.fence_iqr) * (q3 - q1))
        # The anchor never passes the percentile's own rank, so the threshold's neighbourhood
        # is read from the window itself: a record is flagged iff its rarity < p/100 (with
        # more gross scores than p% in a window and the percentile among them, an anchor past
        # it gave unflagged records rarities below p/100).
        m = int(min(max(EXTRAP_RANK, np.searchsorted(self.low_, fence)), max(k // 2, 0),
                    max(int(lo[0]), EXTRAP_RANK)))
        self.anchor_s_ = float(self.low_[m])
        self.anchor_r_ = max(m, 0.5) / self.n_rank_
        spread = self.tail_s_ - self.anchor_s_
        self.tail_beta_ = float(max(spread / np.log(self.tail_frac_ / self.anchor_r_), 1e-9)
                                if spread > 0 else 1e-9)
        self.fence_ = -np.inf if self.fence_iqr is None else fence
        wide = getattr(self, "fit_fence_iqr_", None)
        if wide is not None and self.n_prior_ and self.fence_iqr is not None:
            self.fence_ = float(q1 - wide * (q3 - q1))  # calibration scores in the window
        self._qp = qp

    def _burst(self):
        """True when the scores since the last re-rank fall below the fence much more often
        than the stream's earlier scores (a burst of gross anomalies), not a steady heavy tail.
        Only the stream's own scores count: the fit's calibration scores are a thinner-tailed
        proxy, so comparing with them would take any heavy-tailed stream for a burst."""
        n = self.n_filled_
        n_live = min(self.live_, n)
        m = min(self.since_, n_live)
        if not np.isfinite(self.fence_) or m == 0 or \
                n_live - m < 10.0 / (self.percentile / 100.0):
            return False
        live = self.recent()[n - n_live:]
        below = live < self.fence_
        new = np.count_nonzero(below[-m:])
        share_new, share_old = new / m, (np.count_nonzero(below) - new) / (n_live - m)
        return share_new > self.percentile / 100.0 and share_new > BURST_RATIO * share_old

    def _rerank(self):
        self._refresh()
        if len(self.sorted_):
            # The fence sets the threshold only in a burst: from its onset (the newest scores
            # fall below the fence far more often than the rest) while more than p% of the
            # window lies below it; and from a fit whose gross anomalies would otherwise set
            # the percentile (see ``fit``). On a steady heavy tail (optdigits, d=64: 5% of
            # normal scores below Q1 - 3 IQR) a fence that always bound flagged 4-5 p.
            if self._qp >= self.fence_:
                self.burst_ = False
            elif self._burst():
                self.burst_, self.fit_burst_ = True, False
            self.value_ = float(max(self._qp, self.fence_) if self.burst_ else self._qp)
        self.since_ = 0
        return self.value_

    def rarity_severity(self, scores):
        """(rarity, severity) of each score. Rarity: the fraction of recent scores below it,
        in [1e-300, 1]: the bulk from a sorted sample, the lower tail from the exact lowest
        scores (linear between order statistics, consistent with the threshold's percentile),
        beyond the lowest few an exponential tail. Severity: -log10(rarity), computed from
        the tail in log space, so it stays finite and ordered however far out a record is
        (rarity itself stops at 1e-300)."""
        if getattr(self, "low_", None) is None:
            self._refresh()
        s, n = self.sorted_, len(self.sorted_)
        scores = np.asarray(scores, dtype=np.float64)
        if n == 0:
            return np.ones(len(scores)), np.zeros(len(scores))
        r = (_insertion_points(s, scores) + 0.5) / (n + 1.0)
        low = scores < self.tail_s_
        # the bulk's sample never ranks a score above the tail's end below the tail's share
        if self.tail_k_:
            r[~low] = np.maximum(r[~low], self.tail_frac_)
        if not low.any():
            return r, -np.log10(r)
        sl = scores[low]
        rl = np.interp(sl, self.low_, np.arange(self.tail_k_ + 1) / self.n_rank_)
        with np.errstate(divide="ignore"):
            ln = np.log(rl)
        far = sl < self.anchor_s_
        if far.any():
            ln[far] = np.log(self.anchor_r_) + (sl[far] - self.anchor_s_) / self.tail_beta_
        ln = np.minimum(ln, 0.0)
        sev = -np.log10(r)
        sev[low] = -ln / np.log(10.0)
        with np.errstate(under="ignore"):
            r[low] = np.maximum(np.exp(ln), 1e-300)
        return r, sev

    def rarity(self, scores):
        """Fraction of recent scores below each score (see ``rarity_severity``)."""
        return self.rarity_severity(scores)[0]

    def get_state(self):
        """Only the filled slots, oldest first (never the ring's unused, uninitialised ones)."""
        return ({"percentile": self.percentile, "window": self.window,
                 "fence_iqr": self.fence_iqr, "value": self.value_, "fence": self.fence_,
                 "n_filled": self.n_filled_, "pos": 0, "ring_layout": "recent",
                 "since": self.since_, "n_prior": self.n_prior_, "live": self.live_,
                 "burst": self.burst_, "fit_burst": bool(getattr(self, "fit_burst_", False)),
                 "fit_fence_iqr": getattr(self, "fit_fence_iqr_", None)},
                {"ring": self.recent() if self.ring_ is not None else np.empty(0)})

    @classmethod
    def from_state(cls, meta, arrays):
        t = cls(percentile=meta["percentile"], window=meta["window"],
                fence_iqr=meta.get("fence_iqr", 3.0))
        t.value_, t.fence_ = meta["value"], meta.get("fence", -np.inf)
        ring = np.array(arrays["ring"], dtype=np.float64)
        if meta.get("ring_layout") == "recent":  # the filled slots, oldest first
            if ring.ndim != 1 or len(ring) != meta["n_filled"] or len(ring) > t.window:
                raise ValueError("threshold ring buffer has the wrong shape")
            kept = ring
        else:  # older files: the whole ring
            if ring.shape != (t.window,):
                raise ValueError("threshold ring buffer has the wrong shape")
            t.ring_, t.n_filled_, t.pos_ = ring, meta["n_filled"], meta["pos"]
            kept = t.recent()
        # states from before the adaptive threshold stored "gross" scores as -inf: drop them
        kept = kept[np.isfinite(kept)]
        t.ring_ = np.zeros(t.window, dtype=np.float64)
        t.n_filled_ = t.pos_ = 0
        t._push(kept)
        t.since_ = int(meta.get("since", 0))
        t.n_prior_, t.live_ = int(meta.get("n_prior", 0)), int(meta.get("live", 0))
        t.burst_ = bool(meta.get("burst", True))
        t.fit_burst_ = bool(meta.get("fit_burst", False))
        t.fit_fence_iqr_ = meta.get("fit_fence_iqr")
        return t
