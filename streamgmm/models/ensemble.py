"""An ensemble of online Gaussian mixtures whose standardized log-densities are averaged.

Why: no single mixture ranks anomalies well on every data set. One full-covariance Gaussian
misses multi-modal data; many components fit anomaly clusters; full covariances overfit wide
data where diagonal mixtures (axis-aligned, like trees) hold. Averaging members that differ in
size and covariance type ranks more robustly than any one of them (measured in BENCHMARKS.md).

Each member is an ``OnlineGaussianMixture`` with its own sufficient statistics, updated online
from the same batches. Each member's log-density is put on a common scale by a robust
z-score, ``z_m = (log p_m(x) - loc_m) / scale_m``, with ``loc_m``/``scale_m`` the median and
interquartile range of member m's log-densities on its (clean) fit window, so that no member
dominates by the scale of its densities (the IQR divided by the member's weight when
``calibrate`` is given weights: the detector gives its plain full-covariance members 0.5).
The combined score is the *lowest* z (since branch
``rank4``; ``combination="mean"`` gives the mean, as before) mapped back onto the primary
member's log-density scale by a fixed affine map,
``score = loc_0 + scale_0 * min_m z_m``: it reads as a log-density in nats (a record scored
like the primary member's median on the fit window by every member gets ``loc_0``), and
ranking and thresholding are those of the lowest z-score: a record is as anomalous as the
member that finds it most anomalous (each member's own scale). The mean diluted the one member
that sees a record's anomaly (measured in BENCHMARKS.md, "rank4"). Lower is more anomalous.
``loc``/``scale`` are fixed at fit time (a refit sets them again).
(States written before this mapping, format version 1, keep scoring in z units; states of
format version 2 keep the mean.)

The first member is the *primary*: its parameters are the ensemble's ``weights_``,
``means_``, ... (for explanations, ``component`` and ``describe``).
"""
import numbers

import numpy as np

from .. import math as gm
from ..math import stacked
from ..math import sufficient_stats as ss
from ..math.sufficient_stats import posteriors
from .online import OnlineGaussianMixture

SCALE_PERCENTILES = (25, 50, 75)
STATE_FORMAT = "streamgmm.MixtureEnsemble"
STATE_VERSION = 3
COMBINATIONS = ("min", "mean")

_DELEGATED = ("n_components", "covariance_type", "weights_", "means_", "covariances_",
              "precisions_cholesky_", "n_features_in_", "n_steps_", "n_seen_", "n_reseeds_",
              "n_repairs_", "converged_", "n_iter_", "lower_bound_", "last_eta_",
              "random_state", "reg_covar")


class MixtureEnsemble:
    """Online mixtures scored together (see the module docstring)."""

    def __init__(self, members, loc=None, scale=None, log_density_units=True,
                 combination="min"):
        self.members = list(members)
        self.log_density_units = bool(log_density_units)
        if combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {COMBINATIONS}, got {combination!r}")
        self.combination = combination
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

    def calibrate(self, X, weights=None):
        """Set each member's loc/scale from its log-densities on X (the clean fit window):
        median and IQR, the IQR divided by the member's weight (default 1), so that a member
        of weight 0.5 needs a z twice as low to set the combined score."""
        w = np.ones(self.n_members) if weights is None else np.asarray(weights, float)
        if w.shape != (self.n_members,) or not (w > 0).all():
            raise ValueError(f"weights must be {self.n_members} positive numbers, "
                             f"got {weights!r}")
        for i, m in enumerate(self.members):
            s = m.score_samples(X)
            lo, q2, hi = np.percentile(s, SCALE_PERCENTILES)
            self.loc_[i] = q2
            self.scale_[i] = max(hi - lo, 1e-12 * max(1.0, abs(q2))) / w[i]
        return self

    def _group_layout(self):
        """Members grouped by (covariance type, reg_covar): each group is scored and updated
        as one stack of components; a 'tied' member stands alone. Fixed for the members."""
        layout = self.__dict__.get("_layout")
        if layout is not None:
            return layout
        by = {}
        for i, m in enumerate(self.members):
            k = ((m.covariance_type, float(m.reg_covar), m.robust_dof)
                 if m.covariance_type != "tied" else ("tied", i))
            by.setdefault(k, []).append(i)
        layout = []
        for (ct, *_), idx in by.items():
            sizes = [int(self.members[i].n_components) for i in idx]
            local = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
            cols = np.concatenate([np.arange(self._offsets[i], self._offsets[i + 1])
                                   for i in idx])
            contiguous = bool(np.all(np.diff(cols) == 1))
            layout.append({
                "ct": ct, "idx": idx, "local": local, "sizes": np.asarray(sizes),
                "slices": [slice(int(local[j]), int(local[j + 1])) for j in range(len(idx))],
                "cols": slice(int(cols[0]), int(cols[-1]) + 1) if contiguous else cols,
                "rows": (slice(idx[0], idx[-1] + 1)
                         if idx == list(range(idx[0], idx[-1] + 1)) else idx)})
        self._layout = layout
        return layout

    def _scorers(self):
        """Per group of ``_group_layout``: (stacked scorer, log-weights), or None for a tied
        member. Rebuilt when a member's parameters change (each update commits new arrays)."""
        key = [m.precisions_cholesky_ for m in self.members]
        cache = self.__dict__.get("_scorer_cache")
        if cache is not None and all(a is b for a, b in zip(cache[0], key)):
            return cache[1]
        out = []
        for g in self._group_layout():
            if g["ct"] == "tied":
                out.append(None)
                continue
            ms = [self.members[i] for i in g["idx"]]
            scorer = stacked.stacked_scorer(np.concatenate([m.means_ for m in ms]),
                                            np.concatenate([m.precisions_cholesky_
                                                            for m in ms]), g["ct"])
            with np.errstate(divide="ignore"):
                logw = np.log(np.concatenate([m.weights_ for m in ms]))
            out.append((scorer, logw))
        self._scorer_cache = (key, out)
        return out

    def decide(self, X):
        """(combined scores, primary member's component, stacked posteriors (n, K),
        member log-densities (n, M)) of the rows: one E-step per group of members of one
        covariance type (their components stacked), a log-sum-exp per member. The posteriors
        are the members' learning weights: times the Student-t weights of members with
        ``robust_dof``; the component is the primary member's most probable one."""
        X = np.asarray(X)
        n = X.shape[0]
        resp_t = np.empty((self.total_components, n))
        logd_t = np.empty((self.n_members, n))
        comp = None
        for g, sc in zip(self._group_layout(), self._scorers()):
            if sc is None:
                i = g["idx"][0]
                m = self.members[i]
                u = m.robust_weights(X)
                wlp = gm.weighted_log_prob(X, m.weights_, m.means_, m.precisions_cholesky_,
                                           m.covariance_type)
                r, s = posteriors(wlp)
                if i == 0:
                    comp = np.argmax(r, axis=1)
                if u is not None:
                    r *= u
                resp_t[g["cols"]] = r.T
                logd_t[i] = s
                continue
            wlp_t, u = stacked.stacked_log_prob_t(sc[0], sc[1], X,
                                                  self.members[g["idx"][0]].robust_dof)
            rows = g["rows"]
            ld = logd_t[rows] if isinstance(rows, slice) else np.empty((len(rows), n))
            stacked.grouped_posteriors_t(wlp_t, g["local"], ld)
            if not isinstance(rows, slice):
                logd_t[rows] = ld
            if 0 in g["idx"]:
                comp = np.argmax(wlp_t[g["slices"][g["idx"].index(0)]], axis=0)
            if u is not None:
                wlp_t *= u
            resp_t[g["cols"]] = wlp_t
        logd = logd_t.T
        return self.combine(logd), comp, resp_t.T, logd

    def combine(self, logd):
        """Combined score of member log-densities ``logd`` (n, M): the lowest (``min``, the
        default) or the mean robust z-score of the members, mapped onto the primary member's
        log-density scale (see the module docstring)."""
        logd = np.asarray(logd)
        if self.n_members == 1:
            return (logd[:, 0].copy() if self.log_density_units
                    else (logd[:, 0] - self.loc_[0]) / self.scale_[0])
        if self.combination == "min":
            return self._on_primary_scale(self._member_z(logd).min(axis=1))
        # mean_m (l_m - loc_m) / scale_m, times scale_0 plus loc_0, as one matrix-vector product
        w = 1.0 / (self.n_members * self.scale_)
        b = -float(np.dot(w, self.loc_))
        if self.log_density_units:
            w, b = w * self.scale_[0], b * self.scale_[0] + self.loc_[0]
        out = logd @ w
        out += b
        return out

    def lenient(self, logd):
        """The median member z-score of each row, on the combined score's scale: a row far
        out by this is far out for at least half of the members (a minor mode of the normal
        data is far out for the one-component members but not for the mixtures that fit it;
        the highest z would also excuse far anomalies that one large member absorbed)."""
        return self._on_primary_scale(np.median(self._member_z(np.asarray(logd)), axis=1))

    def _member_z(self, logd):
        """Each member's robust z-score of its log-densities (n, M)."""
        z = logd - self.loc_
        z /= self.scale_
        return z

    def _on_primary_scale(self, z):
        """z-scores mapped onto the primary member's log-density scale (in place) when the
        ensemble reports nats."""
        if self.log_density_units:
            z *= self.scale_[0]
            z += self.loc_[0]
        return z

    def score_samples(self, X):
        """Combined score of each row (lower = more anomalous; nats, see ``combine``)."""
        X = np.asarray(X)
        return self.combine(np.column_stack([m.score_samples(X) for m in self.members]))

    def partial_fit_posteriors(self, X, resp, log_density):
        """One online step of every member from ``decide``'s stacked posteriors and member
        log-densities for the rows of X (computed with the current parameters).

        Members of one covariance type are updated together: one statistics pass over their
        stacked posteriors, one blend, one batched Cholesky (same result as member by member).
        """
        log_density = np.asarray(log_density)
        X = np.asarray(X)
        if X.shape[0] == 0:
            return self
        if not np.isfinite(log_density).all():  # rare: each member drops its own bad rows
            for i, m in enumerate(self.members):
                m.partial_fit_posteriors(X, resp[:, self._offsets[i]:self._offsets[i + 1]],
                                         log_density[:, i])
            return self
        resp = np.asarray(resp, dtype=np.float64)
        n = X.shape[0]
        for g in self._group_layout():
            ms = [self.members[i] for i in g["idx"]]
            if g["ct"] == "tied":
                i = g["idx"][0]
                ms[0].partial_fit_posteriors(X, resp[:, g["cols"]], log_density[:, i])
                continue
            ct, local = g["ct"], g["local"]
            hat = ss.batch_statistics(X, resp[:, g["cols"]], ct)
            steps = [m._next_step(n) for m in ms]
            eta = np.repeat([e for _, e in steps], g["sizes"])
            old = ss.SufficientStats(*(np.concatenate(p) for p in zip(*[m._stats for m in ms])))
            blended = stacked.grouped_blend(old, hat, eta, ct)
            parts, reseeded = [], []
            for j, (m, i) in enumerate(zip(ms, g["idx"])):
                sl = g["slices"][j]
                st, r = m._reseed_dead(ss.SufficientStats(*(a[sl] for a in blended)), X,
                                       log_density[:, i])
                parts.append(st)
                reseeded.append(r)
            if any(reseeded):
                blended = ss.SufficientStats(*(np.concatenate(p) for p in zip(*parts)))
            w, mu, cov, pc, rep = stacked.grouped_parameters(blended, ct, ms[0].reg_covar,
                                                             local)
            for j, m in enumerate(ms):
                sl = g["slices"][j]
                t, e = steps[j]
                m._commit(ss.SufficientStats(*(a[sl] for a in blended)),
                          (w[sl], mu[sl], cov[sl], pc[sl]), n_steps=t, n_seen=m.n_seen_ + n,
                          n_reseeds=m.n_reseeds_ + reseeded[j],
                          n_repairs=m.n_repairs_ + int(rep[sl].sum()), eta=e)
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
                 "log_density_units": self.log_density_units,
                 "combination": self.combination, "scale": self.scale_.copy()}
        for i, m in enumerate(self.members):
            state.update({f"m{i}.{k}": v for k, v in m.get_state().items()})
        return state

    @classmethod
    def from_state(cls, state):
        """Rebuild from ``get_state``'s dict; a malformed state raises ValueError."""
        version = state.get("format_version", 1)
        if isinstance(version, np.ndarray) and version.ndim == 0:
            version = version.item()
        if not isinstance(version, numbers.Integral) or not 1 <= version <= STATE_VERSION:
            raise ValueError(f"unsupported ensemble state version {version!r} (this library "
                             f"reads versions 1..{STATE_VERSION})")
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
        units = state.get("log_density_units", False) if version >= 2 else False
        if isinstance(units, np.ndarray) and units.ndim == 0:
            units = units.item()
        combination = state.get("combination", "mean") if version >= 3 else "mean"
        if isinstance(combination, np.ndarray):
            combination = combination.item()
        if combination not in COMBINATIONS:
            raise ValueError(f"ensemble state has an unknown combination {combination!r}")
        return cls(members, loc, scale, log_density_units=bool(units),
                   combination=str(combination))


def is_ensemble_state(state):
    """True when a model state dict was written by ``MixtureEnsemble.get_state``."""
    fmt = state.get("format")
    if isinstance(fmt, np.ndarray):
        fmt = fmt.item()
    return fmt == STATE_FORMAT
