"""Standardisation fitted on the fit window and stored with the model (the seeds: scale first)."""
from dataclasses import dataclass

import numpy as np


# A value further than this many robust standard deviations from its feature's median is
# left out of that feature's mean and scale: one 1e9 in a window of values near 100 would
# otherwise make every later value of the feature look ordinary (and 1e160 overflows the
# variance). The records themselves are still fitted and scored.
GROSS_SDS = 50.0
# Quantile pairs and their spread under a normal distribution: the robust sd is the largest
# of these, so that features mostly at one value (counts, flags) still get one.
_SPREADS = ((25.0, 75.0, 1.349), (1.0, 99.0, 4.653), (0.1, 99.9, 6.180))
# A scale this far below the mean's magnitude is rounding noise: the feature is constant.
CONSTANT_RTOL = 1e-12


# The largest |z| a scaled value keeps. A record a million sds out is as anomalous as it gets;
# beyond that, squares (1e12) and the fit's moment sums stay far from overflow and from
# cancellation in float64 and float32 alike (an absurd 1e308 still gets a finite score, and a
# fit window holding one keeps sane members).
Z_BOUND = 1e6


def _gross(X):
    """Mask of the values more than GROSS_SDS robust sds from their feature's median."""
    qs = np.percentile(X, [50.0] + [q for lo, hi, _ in _SPREADS for q in (lo, hi)], axis=0)
    med = qs[0]
    sd = np.max([(qs[2 + 2 * i] - qs[1 + 2 * i]) / c for i, (_, _, c) in enumerate(_SPREADS)],
                axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        return (sd > 0) & ~(np.abs(X - med) <= GROSS_SDS * sd)


@dataclass
class StandardScaler:
    """z = (x - mean_) / scale_; zero-variance features get scale 1 so they pass through centred."""

    mean_: np.ndarray = None
    scale_: np.ndarray = None

    def fit(self, X):
        """Learn per-feature mean and standard deviation, over each feature's values that are
        not gross outliers (see ``GROSS_SDS``)."""
        X = np.asarray(X, dtype=np.float64)
        gross = _gross(X) if len(X) else np.zeros(X.shape, dtype=bool)
        cols = np.flatnonzero(gross.any(axis=0))
        with np.errstate(over="ignore", invalid="ignore"):  # overflows only in gross columns
            mean, std = X.mean(axis=0), X.std(axis=0)
        for j in cols:  # the other columns' figures stay exactly the plain ones
            x = X[~gross[:, j], j]
            mean[j], std[j] = x.mean(), x.std()
        self.mean_ = mean
        tiny = ~(std > CONSTANT_RTOL * np.abs(mean)) | ~np.isfinite(std)
        self.scale_ = np.where(tiny, 1.0, std)
        return self

    def transform(self, X, dtype=np.float64):
        """Scale rows; the result is a new array of ``dtype``. Values are bounded at
        ±``Z_BOUND`` sds, so that an absurd but finite input (1e308) still gets a
        finite, very low log-density instead of an overflow."""
        with np.errstate(over="ignore"):  # float32: a value past 3.4e38 becomes inf, bounded
            out = np.asarray(X, dtype=dtype) - self.mean_.astype(dtype)
            out /= self.scale_.astype(dtype)
        np.clip(out, -Z_BOUND, Z_BOUND, out=out)
        return out

    def inverse_transform(self, Z):
        """Undo ``transform``."""
        return np.asarray(Z, dtype=np.float64) * self.scale_ + self.mean_

    @property
    def fitted(self):
        return self.mean_ is not None
