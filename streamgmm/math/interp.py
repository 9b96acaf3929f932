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
        self.first_x, self.last_x = xp[:, :1].copy(), xp[:, -1:].copy()
        self.first_f, self.last_f = fp[:, :1].copy(), fp[:, -1:].copy()
        # Rows padded with +inf knots (at least one) to a power of two, so the search never
        # passes the real ones, and flattened: knot j of row i sits at i * width + j. The search ends at the position
        # after the last knot <= x; the "before" tables hold, at each position, the knot (its
        # value, its slope) just before it, so the interval is read without index arithmetic.
        self.width = 1 << n_knots.bit_length()
        self.row_start = np.arange(c, dtype=np.intp)[:, None] * self.width
        self.x = self._padded(xp, np.inf)
        self.first_probe = self.x.reshape(c, self.width)[:, self.width // 2 - 1:self.width // 2]
        # np.interp's slopes, computed as it computes them (the same operations and values;
        # like it, silently infinite or NaN between tied knots)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (fp[:, 1:] - fp[:, :-1]) / (xp[:, 1:] - xp[:, :-1])
        self.f = self._padded(fp, 0.0)
        self.x_before = self._before(self.x)
        self.f_before = self._before(self.f)
        self.slope_before = self._before(self._padded(slope, 0.0))

    def _padded(self, a, fill):
        """``a`` (c, <= width) as the flat padded layout (see ``__init__``)."""
        out = np.full((a.shape[0], self.width), fill)
        out[:, :a.shape[1]] = a
        return out.ravel()

    @staticmethod
    def _before(flat):
        """``flat`` moved one position on: entry p holds flat[p - 1] (entry 0: NaN)."""
        return np.concatenate([[np.nan], flat[:-1]])

    def knots_at_or_below(self, X):
        """Per value of X (c, n): the flat index of its row's start plus how many of the
        row's knots are <= it (none for NaN). A branch-free binary search: at each halving
        ``step``, add it where the knot ``step`` beyond the count found so far is <= x (the
        first probe, the same knot for the whole row, is a broadcast comparison)."""
        step = self.width // 2
        below = self.first_probe <= X
        pos = np.empty(X.shape, dtype=np.intp)
        np.copyto(pos, below)
        pos *= step
        pos += self.row_start
        probe = np.empty(X.shape)
        add = np.empty(X.shape, dtype=np.intp)
        while step > 1:
            step //= 2
            # knot pos + step - 1, read from a view of the table that starts step - 1 on
            np.take(self.x[step - 1:], pos, out=probe, mode="clip")
            np.less_equal(probe, X, out=below)
            np.copyto(add, below)
            if step > 1:
                add *= step
            pos += add
        return pos

    def __call__(self, X):
        """The functions at X (c, n), row i through function i: bit for bit np.interp."""
        X = np.asarray(X, dtype=np.float64)
        # the last knot <= x and its slope. Below the first knot or from the last one on,
        # the ends are set below (and the values read here, from a neighbouring padding or
        # row, are not used); inside, the knot is the one np.interp's search finds.
        pos = self.knots_at_or_below(X)
        x0 = self.x_before.take(pos, mode="clip")
        f0 = self.f_before.take(pos, mode="clip")
        slope = self.slope_before.take(pos, mode="clip")
        with np.errstate(invalid="ignore", over="ignore"):  # as np.interp: no warnings
            out = X - x0
            out *= slope
            out += f0                             # np.interp: slope * (x - x0) + f0
            if np.isnan(out).any():  # its fallbacks (an infinite slope); NaN stays NaN
                self._nan_fallback(out, X, pos, slope, f0)
        np.copyto(out, f0, where=X == x0)         # on a knot: its value, no arithmetic
        np.copyto(out, self.first_f, where=X < self.first_x)
        np.copyto(out, self.last_f, where=X >= self.last_x)
        return out

    def _nan_fallback(self, out, X, pos, slope, f0):
        """Where the formula gave NaN for a number: from the next knot (at ``pos``), else
        the flat value (np.interp's order). Ends are overwritten by the caller."""
        bad = np.isnan(out) & ~np.isnan(X)
        if not bad.any():
            return
        at = np.minimum(pos[bad], len(self.x) - 1)
        x1, f1, f0 = self.x[at], self.f[at], f0[bad]
        redo = slope[bad] * (X[bad] - x1) + f1
        flat = np.isnan(redo) & (f0 == f1)
        redo[flat] = f0[flat]
        out[bad] = redo
