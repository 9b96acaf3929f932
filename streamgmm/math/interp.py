"""Many piecewise-linear functions at once: ``np.interp`` row by row, without its branches.

``np.interp`` (like ``np.searchsorted``) finds each value's interval by a binary search that
branches on every comparison. On fresh stream data those branches are unpredictable: in the
detector's pipeline the drift tests' nine rank lookups per record cost ~0.3 us/record that
way, three times what a benchmark that repeats one batch (and so trains the branch predictor)
shows. ``RowInterp`` finds the intervals of all rows in one branch-free binary search (each
halving is one vectorised step over every value) and then evaluates ``np.interp``'s own
formula, so its results are bit for bit those of ``np.interp`` row by row.
"""
import numpy as np


class RowInterp:
    """Row i of ``xp`` (c, L) (non-decreasing) and ``fp`` (L,) or (c, L): one function, as
    ``np.interp(x, xp[i], fp[i])`` (fp[i, 0] below xp[i, 0], fp[i, -1] from xp[i, -1] on)."""

    def __init__(self, xp, fp):
        xp = np.array(xp, dtype=np.float64, ndmin=2)
        c, n_knots = xp.shape
        if n_knots < 2:
            raise ValueError("RowInterp needs at least two knots per row")
        fp = np.broadcast_to(np.asarray(fp, dtype=np.float64), (c, n_knots))
        self.n_knots = n_knots
        self.first_x, self.last_x = xp[:, :1].copy(), xp[:, -1:].copy()
        self.first_f, self.last_f = fp[:, :1].copy(), fp[:, -1:].copy()
        # Rows padded to a power of two (knots with +inf, so the search never passes them),
        # flattened: value j of row i sits at i * width + j.
        self.width = 1 << (n_knots - 1).bit_length()
        self.row_start = np.arange(c, dtype=np.intp)[:, None] * self.width
        self.x = self._padded(xp, np.inf)
        self.f = self._padded(fp, 0.0)
        # np.interp's slopes, computed as it computes them (the same operations and values;
        # like it, silently infinite or NaN between tied knots)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (fp[:, 1:] - fp[:, :-1]) / (xp[:, 1:] - xp[:, :-1])
        self.slope = self._padded(slope, 0.0)

    def _padded(self, a, fill):
        """``a`` (c, <= width) as the flat padded layout (see ``__init__``)."""
        out = np.full((a.shape[0], self.width), fill)
        out[:, :a.shape[1]] = a
        return out.ravel()

    def knots_at_or_below(self, X):
        """Per value of X (c, n): the flat index of its row's start plus how many of the
        row's knots are <= it (none for NaN). A branch-free binary search: at each halving
        ``step``, add it where the knot ``step`` beyond the count found so far is <= x."""
        pos = np.repeat(self.row_start, X.shape[1], axis=1)
        probe = np.empty(X.shape)
        below = np.empty(X.shape, dtype=bool)
        idx = np.empty(X.shape, dtype=np.intp)
        step = self.width
        while step > 1:
            step //= 2
            np.add(pos, step - 1, out=idx)
            np.take(self.x, idx, out=probe)
            np.less_equal(probe, X, out=below)
            if step == 1:
                pos += below
            else:
                np.multiply(below, step, out=idx)
                pos += idx
        return pos

    def __call__(self, X):
        """The functions at X (c, n), row i through function i: bit for bit np.interp."""
        X = np.asarray(X, dtype=np.float64)
        # j: the last knot <= x (flat index), kept inside the row's intervals
        j = self.knots_at_or_below(X)
        j -= self.row_start + 1
        np.clip(j, 0, self.n_knots - 2, out=j)
        j += self.row_start
        x0, f0, slope = self.x.take(j), self.f.take(j), self.slope.take(j)
        with np.errstate(invalid="ignore", over="ignore"):  # as np.interp: no warnings
            out = X - x0
            out *= slope
            out += f0                             # np.interp: slope * (x - x0) + f0
            if np.isnan(out).any():  # its fallbacks (an infinite slope); NaN stays NaN
                self._nan_fallback(out, X, j, slope, f0)
        np.copyto(out, f0, where=X == x0)         # on a knot: its value, no arithmetic
        np.copyto(out, self.first_f, where=X < self.first_x)
        np.copyto(out, self.last_f, where=X >= self.last_x)
        return out

    def _nan_fallback(self, out, X, j, slope, f0):
        """Where the formula gave NaN for a number: from the right knot, else the flat value
        (np.interp's order)."""
        bad = np.isnan(out) & ~np.isnan(X)
        if not bad.any():
            return
        x1, f1, f0 = self.x[j[bad] + 1], self.f[j[bad] + 1], f0[bad]
        redo = slope[bad] * (X[bad] - x1) + f1
        flat = np.isnan(redo) & (f0 == f1)
        redo[flat] = f0[flat]
        out[bad] = redo
