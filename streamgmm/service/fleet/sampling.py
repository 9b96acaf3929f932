"""A bounded, evenly thinned sample of what passed since the last take (rows and times)."""
from __future__ import annotations

import numpy as np


class Thinned:
    """Keeps at most `2 * cap` items: when full, every other item is dropped and from then on
    only every `stride`-th arriving item is kept, so the sample stays spread over the whole
    interval whatever the rate. `take()` returns at most `cap` items and starts afresh."""

    def __init__(self, cap: int):
        self.cap = max(1, int(cap))
        self._parts: list = []
        self._times: list = []
        self._n = 0
        self._stride = 1
        self._phase = 0

    def __len__(self) -> int:
        return self._n

    def add(self, values, when: float) -> None:
        values = np.asarray(values)
        if not len(values):
            return
        if self._stride > 1:
            start = (-self._phase) % self._stride
            self._phase = (self._phase + len(values)) % self._stride
            values = values[start::self._stride]
            if not len(values):
                return
        self._parts.append(values)
        self._times.append(np.full(len(values), when))
        self._n += len(values)
        while self._n > 2 * self.cap:
            vals, times = self._joined()
            self._parts, self._times = [vals[::2]], [times[::2]]
            self._n = len(self._parts[0])
            self._stride *= 2

    def _joined(self):
        return np.concatenate(self._parts), np.concatenate(self._times)

    def take(self):
        """(values, times) of the sample, at most `cap` evenly spread items; then empty."""
        if not self._parts:
            return None, None
        vals, times = self._joined()
        if len(vals) > self.cap:
            idx = np.linspace(0, len(vals) - 1, self.cap).round().astype(int)
            vals, times = vals[idx], times[idx]
        self._parts, self._times, self._n, self._stride, self._phase = [], [], 0, 1, 0
        return vals, times


def proportional(parts, n: int):
    """`n` rows drawn from `parts` (arrays, in a fixed order) in proportion to their sizes,
    each part evenly thinned (largest remainders, ties to the earlier part): every part that
    has rows keeps its share, and the same parts give the same rows. All rows when fewer."""
    parts = [np.asarray(p) for p in parts if len(p)]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    total = int(sizes.sum())
    if total <= n:
        return np.concatenate(parts) if parts else np.zeros((0,))
    share = sizes * n / total
    quota = np.floor(share).astype(np.int64)
    rest = n - int(quota.sum())
    order = sorted(range(len(parts)), key=lambda i: (-(share[i] - quota[i]), i))
    for i in order[:rest]:
        quota[i] += 1
    return np.concatenate([p[np.linspace(0, len(p) - 1, q).round().astype(int)]
                           for p, q in zip(parts, quota) if q > 0])
