"""Standardisation fitted on the fit window and stored with the model (the seeds: scale first)."""
from dataclasses import dataclass

import numpy as np


@dataclass
class StandardScaler:
    """z = (x - mean_) / scale_; zero-variance features get scale 1 so they pass through centred."""

    mean_: np.ndarray = None
    scale_: np.ndarray = None

    def fit(self, X):
        """Learn per-feature mean and standard deviation."""
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        tiny = std <= 1e-12 * np.maximum(1.0, np.abs(self.mean_))
        self.scale_ = np.where(tiny, 1.0, std)
        return self

    def transform(self, X, dtype=np.float64):
        """Scale rows; the result is a new array of ``dtype``."""
        out = np.asarray(X, dtype=dtype) - self.mean_.astype(dtype)
        out /= self.scale_.astype(dtype)
        return out

    def inverse_transform(self, Z):
        """Undo ``transform``."""
        return np.asarray(Z, dtype=np.float64) * self.scale_ + self.mean_

    @property
    def fitted(self):
        return self.mean_ is not None
