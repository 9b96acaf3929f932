"""An ensemble of online Gaussian mixtures whose standardized log-densities are averaged.

Why: no single mixture ranks anomalies well on every data set. One full-covariance Gaussian
misses multi-modal data; many components fit anomaly clusters; full covariances overfit wide
data where diagonal mixtures (axis-aligned, like trees) hold. Averaging members that differ in
size and covariance type ranks more robustly than any one of them (measured in BENCHMARKS.md).

Each member is an ``OnlineGaussianMixture`` with its own sufficient statistics, updated online
from the same batches. The combined score of a row is the mean over members of
``(log p_m(x) - loc_m) / scale_m``, with ``loc_m``/``scale_m`` the median and interquartile
range of member m's log-densities on its (clean) fit window: a robust z-score, so that no
member dominates by the scale of its densities. It is not a log-density; lower is more
anomalous, as with one. ``loc``/``scale`` are fixed at fit time (a refit sets them again).

The first member is the *primary*: its parameters are the ensemble's ``weights_``,
``means_``, ... (for explanations, ``component`` and ``describe``).
"""
import numbers

import numpy as np

from .. import math as gm
from ..math.sufficient_stats import posteriors
from .online import OnlineGaussianMixture

STATE_FORMAT = "streamgmm.MixtureEnsemble"
STATE_VERSION = 1

_DELEGATED = ("n_components", "covariance_type", "weights_", "means_", "covariances_",
              "precisions_cholesky_", "n_features_in_", "n_steps_", "n_seen_", "n_reseeds_",
              "n_repairs_", "converged_", "n_iter_", "lower_bound_", "last_eta_",
              "random_state", "reg_covar")


class MixtureEnsemble:
    """Online mixtures scored together (see the module docstring)."""

    def __init__(self, members, loc=None, scale=None):
        self.members = list(members)
        m = len(self.members)
        self.loc_ = np.zeros(m) if loc is None else np.asarray(loc, dtype=np.float64)
        self.scale_ = np.ones(m) if scale is None else np.asarray(scale, dtype=np.float64)
        self._offsets = np.cumsum([0] + [int(mm.n_components) for mm in self.members])

    def __getattr__(self, name):
        members = self.__dict__.get("members")
        if name in _DELEGATED and members:
            return getattr(members[0], name)
        raise AttributeError(name)

    @property
    def n_members(self):
        return len(self.members)

    @property
    def total_components(self):
        """Columns of the stacked posteriors ``decide`` returns."""
        return int(self._offsets[-1])

    def calibrate(self, X):
        """Set each member's loc/scale from its log-densities on X (the clean fit window)."""
        for i, m in enumerate(self.members):
            s = m.score_samples(X)
            q1, q2, q3 = np.percentile(s, [25, 50, 75])
            self.loc_[i] = q2
            self.scale_[i] = max(q3 - q1, 1e-12 * max(1.0, abs(q2)))
        return self

    def decide(self, X):
        """(combined scores, primary member's component, stacked posteriors (n, K),
        member log-densities (n, M)) of the rows, one E-step per member."""
        n = X.shape[0]
        resp = np.empty((n, self.total_components))
        logd = np.empty((n, self.n_members))
        comp = None
        for i, m in enumerate(self.members):
            wlp = gm.weighted_log_prob(X, m.weights_, m.means_, m.precisions_cholesky_,
                                       m.covariance_type)
            if i == 0:
                comp = np.argmax(wlp, axis=1)
            r, s = posteriors(wlp)
            resp[:, self._offsets[i]:self._offsets[i + 1]] = r
            logd[:, i] = s
        return self.combine(logd), comp, resp, logd

    def combine(self, logd):
        """Mean robust z-score of the member log-densities ``logd`` (n, M)."""
        z = (logd - self.loc_) / self.scale_
        return z.mean(axis=1) if self.n_members > 1 else z[:, 0]

    def score_samples(self, X):
        """Combined score of each row (lower = more anomalous; not a log-density)."""
        X = np.asarray(X)
        return self.combine(np.column_stack([m.score_samples(X) for m in self.members]))

    def partial_fit_posteriors(self, X, resp, log_density):
        """One online step of every member from ``decide``'s stacked posteriors and member
        log-densities for the rows of X (computed with the current parameters)."""
        for i, m in enumerate(self.members):
            m.partial_fit_posteriors(X, resp[:, self._offsets[i]:self._offsets[i + 1]],
                                     log_density[:, i])
        return self

    def partial_fit(self, X, y=None):
        """One online step of every member from X."""
        for m in self.members:
            m.partial_fit(X)
        return self

    def set_params(self, **params):
        for m in self.members:
            m.set_params(**params)
        return self

    def get_params(self, deep=True):
        return self.members[0].get_params(deep)

    # ------------------------------------------------------------------ state
    def get_state(self):
        """Flat dict of arrays and JSON-able scalars; member keys are prefixed 'm<i>.'."""
        state = {"format": STATE_FORMAT, "format_version": STATE_VERSION,
                 "n_members": self.n_members, "loc": self.loc_.copy(),
                 "scale": self.scale_.copy()}
        for i, m in enumerate(self.members):
            state.update({f"m{i}.{k}": v for k, v in m.get_state().items()})
        return state

    @classmethod
    def from_state(cls, state):
        """Rebuild from ``get_state``'s dict; a malformed state raises ValueError."""
        n = state.get("n_members")
        if isinstance(n, np.ndarray) and n.ndim == 0:
            n = n.item()
        if not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"ensemble state has a bad member count {n!r}")
        members = []
        for i in range(n):
            p = f"m{i}."
            members.append(OnlineGaussianMixture.from_state(
                {k[len(p):]: v for k, v in state.items() if k.startswith(p)}))
        loc = np.array(state["loc"], dtype=np.float64)
        scale = np.array(state["scale"], dtype=np.float64)
        if loc.shape != (n,) or scale.shape != (n,) or not np.all(scale > 0) \
                or not np.all(np.isfinite(loc)):
            raise ValueError("ensemble state's loc/scale are malformed")
        if len({m.n_features_in_ for m in members}) != 1:
            raise ValueError("ensemble members have different feature counts")
        return cls(members, loc, scale)


def is_ensemble_state(state):
    """True when a model state dict was written by ``MixtureEnsemble.get_state``."""
    fmt = state.get("format")
    if isinstance(fmt, np.ndarray):
        fmt = fmt.item()
    return fmt == STATE_FORMAT
