"""Percentile threshold on the log-density: flag the lowest p% of scores.

Set at (re)fit from the fit window's scores, then tracked on the stream as the p-th percentile
of the last ``window`` scores (a ring buffer: bounded memory). Scores below a far-out fence
(Tukey: Q1 - 3 IQR of the fit window's scores) are kept in the window only as a count: the
percentile of the rest is taken at p' = (p - f) / (1 - f), f the gross fraction, so the
overall flagged fraction stays p on clean data while a burst of gross anomalies (f > p) is
flagged in full instead of dragging the threshold down to hide itself.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PercentileThreshold:
    """Streaming p-th percentile of recent, non-gross scores."""

    percentile: float = 1.0
    window: int = 20000
    fence_iqr: float = 3.0
    value_: float = None
    fence_: float = -np.inf
    ring_: np.ndarray = field(default=None, repr=False)
    n_filled_: int = 0
    pos_: int = 0
    since_: int = 0

    def fit(self, scores):
        """Reset from the fit window's (clean) scores."""
        scores = np.asarray(scores, dtype=np.float64)
        q1, q3 = np.percentile(scores, [25, 75])
        self.fence_ = float(q1 - self.fence_iqr * (q3 - q1))
        self.ring_ = np.empty(self.window, dtype=np.float64)
        self.n_filled_ = self.pos_ = 0
        self._push(scores)
        self.value_ = float(np.percentile(scores, self.percentile))
        return self

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
        """Add a batch of scores and recompute the percentile over the window."""
        scores = np.asarray(scores, dtype=np.float64)
        self._push(np.where(scores >= self.fence_, scores, -np.inf))
        # Re-rank only once a tenth of the window is new: the percentile of a 20,000-score
        # window barely moves in fewer records, and each re-rank costs O(window).
        self.since_ += len(scores)
        if self.since_ < max(1, self.window // 10) and self.n_filled_ == self.window:
            return self.value_
        return self._rerank()

    def recent(self):
        """The window's scores, oldest first (gross ones as -inf)."""
        if self.n_filled_ < self.window:
            return self.ring_[: self.n_filled_].copy()
        return np.concatenate([self.ring_[self.pos_:], self.ring_[: self.pos_]])

    def resized(self, percentile, window):
        """A copy with another percentile and/or window, keeping the fence and the most
        recent scores, its value re-ranked at once (a config change on a restored model)."""
        t = PercentileThreshold(percentile=percentile, window=window, fence_iqr=self.fence_iqr)
        t.fence_ = self.fence_
        t.ring_ = np.empty(window, dtype=np.float64)
        kept = self.recent()
        if len(kept):
            t._push(kept)
            t._rerank()
        if t.value_ is None:  # nothing finite to rank yet
            t.value_ = self.value_
        return t

    def _rerank(self):
        self.since_ = 0
        data = self.ring_[: self.n_filled_]
        kept = data[np.isfinite(data)]
        if len(kept):
            f = 1.0 - len(kept) / len(data)
            p = max(0.0, (self.percentile / 100.0 - f) / (1.0 - f)) * 100.0
            self.value_ = float(np.percentile(kept, p))
        return self.value_

    def get_state(self):
        """Only the filled slots, oldest first (never the ring's unused, uninitialised ones)."""
        return ({"percentile": self.percentile, "window": self.window,
                 "fence_iqr": self.fence_iqr, "value": self.value_, "fence": self.fence_,
                 "n_filled": self.n_filled_, "pos": 0, "ring_layout": "recent",
                 "since": self.since_},
                {"ring": self.recent() if self.ring_ is not None else np.empty(0)})

    @classmethod
    def from_state(cls, meta, arrays):
        t = cls(percentile=meta["percentile"], window=meta["window"],
                fence_iqr=meta["fence_iqr"])
        t.value_, t.fence_ = meta["value"], meta["fence"]
        ring = np.array(arrays["ring"], dtype=np.float64)
        if meta.get("ring_layout") == "recent":  # the filled slots, oldest first
            if ring.ndim != 1 or len(ring) != meta["n_filled"] or len(ring) > t.window:
                raise ValueError("threshold ring buffer has the wrong shape")
            t.ring_ = np.zeros(t.window, dtype=np.float64)
            t._push(ring)
            t.since_ = int(meta.get("since", 0))
            return t
        t.n_filled_, t.pos_ = meta["n_filled"], meta["pos"]  # older files: the whole ring
        t.ring_ = ring
        if t.ring_.shape != (t.window,):
            raise ValueError("threshold ring buffer has the wrong shape")
        return t
