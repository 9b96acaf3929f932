"""Online Gaussian mixture: stepwise EM on sufficient statistics, for unbounded streams.

``fit`` runs batch EM (``streamgmm.GaussianMixture``) and takes the sufficient statistics from its
responsibilities; each ``partial_fit(X)`` does one E-step on the mini-batch with the current
parameters, blends the batch's statistics into the running ones, s <- (1 - eta) s + eta s_hat,
and re-derives the parameters. See ``streamgmm.math.sufficient_stats`` for the statistics.
"""
import numbers

import numpy as np

from .. import math as gm
from ..math import sufficient_stats as ss
from .base import ParamsMixin
from .scoring import MixtureScoringMixin
from .gaussian_mixture import INIT_PARAMS, GaussianMixture
from .validation import check_array, check_is_fitted, check_scalar

STATE_FORMAT = "streamgmm.OnlineGaussianMixture"
STATE_VERSION = 2  # 2: robust_dof

# Robust EM steps that ``fit_from`` takes from the batch fit when ``robust_dof`` is set (the
# batch EM is plain Gaussian; the Student-t weights settle in a few steps).
FIT_ROBUST_STEPS = 5

_CONSTRUCTOR_PARAMS = ("n_components", "covariance_type", "step", "alpha", "t0", "half_life",
                       "reg_covar", "weight_floor", "random_state", "max_iter", "tol",
                       "init_params", "n_init", "robust_dof")
_OPTIONAL_PARAMS = {"robust_dof": None}  # absent from version-1 states
_STATE_SCALARS = ("n_features_in_", "n_steps_", "n_seen_", "n_reseeds_", "n_repairs_",
                  "converged_", "n_iter_", "lower_bound_")
_STATE_ARRAYS = ("stats_s0", "stats_means", "stats_scatter", "weights_", "means_",
                 "covariances_", "precisions_cholesky_")


class OnlineGaussianMixture(MixtureScoringMixin, ParamsMixin):
    """Gaussian mixture kept current on a stream by stepwise (online) EM.

    Parameters
    ----------
    n_components : int, default 1
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default 'full'
    step : {'stepwise', 'exponential'}, default 'stepwise'
        'stepwise': mini-batch t (t = 1, 2, ... after ``fit``) gets step size
        eta_t = min(1, (t + t0) ** -alpha), whatever its size. With alpha = 1 and
        t0 = (records in the fit) / (batch size) this is the exact running average of
        everything seen; alpha < 1 keeps forgetting old statistics (those computed with stale
        parameters) at a slowly shrinking rate.
        'exponential': constant forgetting, eta = 1 - 0.5 ** (batch_size / half_life), so a
        record's weight in the statistics halves every ``half_life`` records, whatever the
        batch sizes.
    alpha : float in (0.5, 1], default 0.6
        Smaller alpha forgets stale statistics faster (follows drift), larger alpha averages
        more (less noise on a stationary stream).
    t0 : float >= 0, default 10.0
        Defaults measured on a known mixture (d=8, k=4; initial fit on 2,000 records with
        n_init=3, then mini-batches of 500; the streams of ``tests/test_online.py``). Held-out
        log-likelihood gap at the end of the stream, in nats/record:

        ============  ========================  ===================================
        alpha, t0     stationary, vs batch fit  slow drift (1 sigma over 200,000),
                      on all 200,000 records    vs a refit on the last 20,000
        ============  ========================  ===================================
        0.55, 10      0.0028                    0.011
        **0.6, 10**   **0.0020**                **0.031**
        0.7, 10       0.0009                    0.116
        0.8, 10       0.0004                    0.286
        1.0, 10       0.0000                    0.898   (a frozen model: 6.27)
        ============  ========================  ===================================

        t0 damps the first steps (t0 = 1: 0.023 behind after 10 batches, t0 = 10: 0.016,
        t0 = 100 over-trusts the initial fit: 0.044 behind under drift). t0 counts mini-batches:
        t0 * batch_size is roughly how many records' worth of trust the initial fit gets.
        eta_t keeps shrinking, so on an endless stream that keeps changing prefer
        step='exponential' (or rely on the detector's drift-triggered refit).
    half_life : float > 0 or None, default None
        In records; required with step='exponential'. Ignored by 'stepwise' (but still
        validated when given, so a typo does not wait for a mode switch to surface).
    reg_covar : float >= 0, default 1e-6
        Added to every covariance's diagonal (as in the batch model).
    weight_floor : float in [0, 1/n_components), default 1e-3
        A component whose weight falls below this (or below ``MIN_WEIGHT`` = 1e-10 whatever
        this says) is re-seeded at the point of the current batch that the model explains worst
        (lowest log-density), with the pooled within-component covariance and weight
        ``max(2 * weight_floor, 1e-3)``, taken from the largest component (so no other weight
        moves). ``n_reseeds_`` counts re-seeds.
    robust_dof : float > 0 or None, default None
        With a number nu, the statistics weight each record by its Student-t weight
        (nu + d) / (nu + delta^2), at least ``WEIGHT_FLOOR`` = 0.25 (``streamgmm.math.robust``):
        a robust M-estimate of each Gaussian component, so a few far records or a small cluster
        straddled by a component do not widen it and mask themselves, while a mode that
        persists in the stream is still learned. ``fit_from`` takes ``FIT_ROBUST_STEPS`` such
        EM steps from the batch fit; every update uses the weights
        (``partial_fit_posteriors`` expects ``resp`` already multiplied by them, as
        ``MixtureEnsemble.decide`` gives them).
        None: plain EM statistics.
    random_state, max_iter, tol, init_params, n_init
        Passed to the batch EM of ``fit`` (and ``sample`` uses ``random_state`` like the batch
        model).

    Attributes
    ----------
    weights_, means_, covariances_, precisions_cholesky_, precisions_ :
        as in ``GaussianMixture``; always float64 (the statistics are accumulated over an
        unbounded stream). float32 input is scored in float32, like the batch model.
    n_steps_ : int, mini-batch updates since ``fit``.
    n_seen_ : int, records learned from (the fit's and every mini-batch's).
    n_reseeds_ : int, components re-seeded so far.
    n_repairs_ : int, covariances that needed extra jitter to be positive definite.
    converged_, n_iter_, lower_bound_ : from the initial batch fit.
    n_features_in_ : int.
    last_eta_ : float, the step size of the last update (0.0 after ``fit``).

    The running statistics (``get_state()``) are per-record averages in centred form; see
    ``streamgmm.math.sufficient_stats``. Each public method leaves the model either fully
    updated or untouched.
    """

    _sklearn_estimator_type = "density_estimator"

    def __init__(self, n_components=1, *, covariance_type="full", step="stepwise", alpha=0.6,
                 t0=10.0, half_life=None, reg_covar=1e-6, weight_floor=1e-3, random_state=None,
                 max_iter=100, tol=1e-3, init_params="kmeans", n_init=1, robust_dof=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.step = step
        self.alpha = alpha
        self.t0 = t0
        self.half_life = half_life
        self.reg_covar = reg_covar
        self.weight_floor = weight_floor
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.init_params = init_params
        self.n_init = n_init
        self.robust_dof = robust_dof

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        check_scalar(self.n_components, "n_components", "int", low=1)
        if self.covariance_type not in gm.COVARIANCE_TYPES:
            raise ValueError(f"The 'covariance_type' parameter must be one of "
                             f"{list(gm.COVARIANCE_TYPES)}, got {self.covariance_type!r}.")
        ss.check_step_parameters(self.step, self.alpha, self.t0, self.half_life)
        check_scalar(self.reg_covar, "reg_covar", "real", low=0.0)
        if not np.isfinite(self.reg_covar):
            raise ValueError(f"The 'reg_covar' parameter must be finite, got {self.reg_covar!r}.")
        check_scalar(self.weight_floor, "weight_floor", "real", low=0.0,
                     high=1.0 / self.n_components, high_inclusive=False)
        check_scalar(self.max_iter, "max_iter", "int", low=0)
        check_scalar(self.tol, "tol", "real", low=0.0)
        check_scalar(self.n_init, "n_init", "int", low=1)
        if self.robust_dof is not None:
            check_scalar(self.robust_dof, "robust_dof", "real", low=0.0, low_inclusive=False)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"The 'init_params' parameter must be one of {list(INIT_PARAMS)}, "
                             f"got {self.init_params!r}.")

    def _batch_model(self):
        return GaussianMixture(self.n_components, covariance_type=self.covariance_type,
                               tol=self.tol, reg_covar=self.reg_covar, max_iter=self.max_iter,
                               n_init=self.n_init, init_params=self.init_params,
                               random_state=self.random_state)

    def _reseed_weight(self):
        return max(2.0 * self.weight_floor, 1e-3)

    # --------------------------------------------------------------- learning
    def fit(self, X, y=None):
        """Batch EM on X, then the running statistics from its responsibilities on X.

        Resets the step counter, ``n_seen_`` (to len(X)) and the re-seed count.
        """
        self._check_params()
        X = check_array(X, ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {X.shape[0]}")
        return self.fit_from(self._batch_model().fit(X), X)

    def fit_from(self, gmm, X):
        """Initialise from a batch ``GaussianMixture`` already fitted on X (no new EM run).

        The detector selects and cleans its batch fit first (BIC, several initialisations,
        outliers dropped) and then hands that fit over; ``n_components`` and
        ``covariance_type`` are taken from ``gmm``.
        """
        X = check_array(X, ensure_min_samples=1, n_features=gmm.means_.shape[1])
        self.n_components = int(gmm.n_components)
        self.covariance_type = gmm.covariance_type
        self._check_params()
        params, reseeded = (gmm.weights_, gmm.means_, None, gmm.precisions_cholesky_), 0
        for _ in range(FIT_ROBUST_STEPS if self.robust_dof is not None else 1):
            stats, log_density, n_valid = ss.e_step_statistics(
                X, params[0], params[1], params[3], self.covariance_type,
                robust_dof=self.robust_dof)
            if n_valid == 0:  # pragma: no cover - only with data that overflows float64
                raise ValueError("No row of X has a finite log-density under the fitted "
                                 "mixture.")
            stats, r = self._reseed_dead(stats, X, log_density)
            reseeded += r
            params = ss.parameters_from_statistics(stats, self.covariance_type, self.reg_covar)
        self._commit(stats, params, n_steps=0, n_seen=X.shape[0], n_reseeds=reseeded,
                     n_repairs=params[4], eta=0.0)
        self.converged_ = bool(gmm.converged_)
        self.n_iter_ = int(gmm.n_iter_)
        self.lower_bound_ = float(gmm.lower_bound_)
        self.n_features_in_ = X.shape[1]
        return self

    def partial_fit(self, X, y=None):
        """One online-EM update from the mini-batch X (an empty batch changes nothing).

        Before ``fit`` the first batch initialises the model by batch EM (it needs at least
        max(2, n_components) rows). Rows whose log-density overflows are left out.

        With step='stepwise' every call is one step whatever its size, so a 3-row batch moves
        the model as far as a 3,000-row one: feed batches of a steady size (the detector
        gathers ``batch_size`` records per step). step='exponential' scales with the size.
        """
        if not hasattr(self, "means_"):
            Xc = check_array(X, ensure_min_samples=0)
            need = max(2, int(self.n_components)) if isinstance(
                self.n_components, numbers.Integral) else 2
            if Xc.shape[0] < need:
                raise ValueError(
                    f"partial_fit on an unfitted {type(self).__name__} initialises it with batch "
                    f"EM on that first batch, which needs at least {need} rows "
                    f"(max(2, n_components)); got {Xc.shape[0]}. Call fit() on a larger "
                    f"sample first, or pass a larger first batch.")
            return self.fit(Xc)
        self._check_params()
        X = check_array(X, ensure_min_samples=0, n_features=self.means_.shape[1])
        n = X.shape[0]
        if n == 0:
            return self
        stats_hat, log_density, n_valid = ss.e_step_statistics(
            X, self.weights_, self.means_, self.precisions_cholesky_, self.covariance_type,
            robust_dof=self.robust_dof)
        return self._update(X, stats_hat, log_density, n_valid)

    def partial_fit_posteriors(self, X, resp, log_density):
        """``partial_fit`` for a caller that already ran the E-step with the current parameters.

        ``resp`` (n, k) are the posteriors (times the Student-t weights when ``robust_dof`` is
        set) and ``log_density`` (n,) the log p(x) of the rows of X under the model *as it is
        now*; the detector scores a batch and learns from it with one E-step instead of two.
        Rows with a non-finite log-density are left out.
        """
        check_is_fitted(self)
        X = np.asarray(X)
        ok = np.isfinite(log_density)
        if not ok.all():
            X, resp = X[ok], resp[ok]
        if X.shape[0] == 0:
            return self
        stats_hat = ss.batch_statistics(X, np.asarray(resp, dtype=np.float64),
                                        self.covariance_type)
        return self._update(X, stats_hat, np.asarray(log_density)[ok], X.shape[0])

    def robust_weights(self, X):
        """Student-t weights (n, k) of the rows of X for every component (with ``robust_dof``;
        None without): what ``partial_fit_posteriors`` expects its posteriors multiplied by."""
        if self.robust_dof is None:
            return None
        scorer = gm.GaussianScorer(self.means_, self.precisions_cholesky_, self.covariance_type)
        return gm.t_weights(scorer.mahalanobis_sq(X), X.shape[1], self.robust_dof)

    def _update(self, X, stats_hat, log_density, n_valid):
        """Blend a batch's statistics in with the next step size; re-derive the parameters."""
        if n_valid == 0:
            return self  # nothing usable (every row overflowed); the model is unchanged
        t, eta = self._next_step(n_valid)
        stats = ss.blend_statistics(self._stats, stats_hat, eta, self.covariance_type)
        stats, reseeded = self._reseed_dead(stats, X, log_density)
        params = ss.parameters_from_statistics(stats, self.covariance_type, self.reg_covar)
        self._commit(stats, params, n_steps=t, n_seen=self.n_seen_ + n_valid,
                     n_reseeds=self.n_reseeds_ + reseeded, n_repairs=self.n_repairs_ + params[4],
                     eta=eta)
        return self

    def _next_step(self, n_valid):
        """(step number, step size) of the next update from ``n_valid`` records."""
        t = self.n_steps_ + 1
        if self.step == "stepwise":
            return t, ss.stepwise_step_size(t, self.alpha, self.t0)
        return t, ss.exponential_step_size(n_valid, self.half_life)

    def _reseed_dead(self, stats, X, log_density):
        """Re-seed components below the weight floor (or with non-finite statistics)."""
        s0, means, scatter = stats
        total = s0.sum()
        floor = max(float(self.weight_floor), ss.MIN_WEIGHT)
        if (np.isfinite(total) and s0.min() >= floor * total and np.isfinite(means.sum())
                and np.isfinite(scatter.sum())):
            return stats, 0  # the usual case, checked cheaply
        finite = np.isfinite(s0) & np.isfinite(means).all(axis=1)
        if self.covariance_type == "tied":
            finite &= bool(np.isfinite(scatter).all())
        else:
            finite &= np.isfinite(scatter.reshape(len(s0), -1)).all(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dead = ~finite | ~(s0 >= floor * total)
        if not dead.any():
            return stats, 0
        alive = np.flatnonzero(~dead)
        if alive.size == 0:
            raise FloatingPointError("every component of the mixture degenerated at once; "
                                     "refit the model")
        if not finite.all():  # drop the non-finite components before pooling
            s0 = np.where(finite, s0, 0.0)
            means = np.where(finite[:, None], means, 0.0)
            if self.covariance_type != "tied":
                scatter = np.where(finite.reshape((-1,) + (1,) * (scatter.ndim - 1)),
                                   scatter, 0.0)
            stats = ss.SufficientStats(s0, means, scatter)
        dead_idx = np.flatnonzero(dead)
        scores = np.where(np.isfinite(log_density), log_density, np.inf)
        order = np.argsort(scores, kind="stable")
        n_ok = int(np.isfinite(log_density).sum()) or len(order)
        seeds = np.asarray(X, dtype=np.float64)[order[np.arange(dead_idx.size) % n_ok]]
        stats = ss.reseed_statistics(stats, dead_idx, seeds, self.covariance_type,
                                     self._reseed_weight(), alive=alive, floor=floor)
        return stats, int(dead_idx.size)

    def _commit(self, stats, params, *, n_steps, n_seen, n_reseeds, n_repairs, eta):
        # C-contiguous float64 everywhere, so a state round trip reproduces the future bit for bit
        weights, means, covariances, pc = (np.ascontiguousarray(a, dtype=np.float64)
                                           for a in params[:4])
        stats = ss.SufficientStats(*(np.ascontiguousarray(a, dtype=np.float64) for a in stats))
        precisions = gm.precisions_from_cholesky(pc, self.covariance_type)
        self._stats = stats
        self.weights_, self.means_, self.covariances_ = weights, means, covariances
        self.precisions_cholesky_, self.precisions_ = pc, precisions
        self.n_steps_, self.n_seen_ = int(n_steps), int(n_seen)
        self.n_reseeds_, self.n_repairs_ = int(n_reseeds), int(n_repairs)
        self.last_eta_ = float(eta)

    def to_batch(self):
        """A fitted ``GaussianMixture`` with this model's current parameters (a snapshot)."""
        check_is_fitted(self)
        gmm = self._batch_model()
        gmm._set_parameters((self.weights_.copy(), self.means_.copy(),
                             self.covariances_.copy(), self.precisions_cholesky_.copy()))
        gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, self.n_iter_, self.lower_bound_
        gmm.lower_bounds_ = []
        gmm.n_features_in_ = self.n_features_in_
        return gmm

    # ------------------------------------------------------------------ state
    def get_state(self):
        """The whole model as a flat dict: numpy arrays, and JSON-able scalars (int, float,
        str, bool, None) for everything else. No pickle needed; ``from_state`` inverts it.

        Keys: 'format', 'format_version', the constructor parameters (a ``RandomState``
        ``random_state`` is stored as None), the counters, 'stats_s0', 'stats_means',
        'stats_scatter' and the fitted parameter arrays.
        """
        check_is_fitted(self)
        # version 1 when robust_dof is unset: readers of version 1 load such a state as it is
        # (they ignore the extra key), and refuse a robust one they could not honour
        state = {"format": STATE_FORMAT,
                 "format_version": 1 if self.robust_dof is None else STATE_VERSION}
        for name in _CONSTRUCTOR_PARAMS:
            value = getattr(self, name)
            if name == "random_state" and not (value is None or
                                                isinstance(value, numbers.Integral)):
                value = None
            state[name] = _plain(value)
        for name in _STATE_SCALARS:
            state[name] = _plain(getattr(self, name))
        state["last_eta_"] = float(self.last_eta_)
        state["stats_s0"] = self._stats.s0.copy()
        state["stats_means"] = self._stats.means.copy()
        state["stats_scatter"] = self._stats.scatter.copy()
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            state[name] = np.array(getattr(self, name), dtype=np.float64)
        return state

    @classmethod
    def from_state(cls, state):
        """Rebuild a model saved by ``get_state``; a malformed state raises ValueError."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict, got {type(state).__name__}")
        fmt = _from_plain(state.get("format"))
        if fmt != STATE_FORMAT:
            raise ValueError(f"not an {cls.__name__} state (format {fmt!r}, expected "
                             f"{STATE_FORMAT!r})")
        version = _from_plain(state.get("format_version"))
        if not isinstance(version, numbers.Integral) or not 1 <= version <= STATE_VERSION:
            raise ValueError(f"unsupported {cls.__name__} state version {version!r} (this "
                             f"library reads versions 1..{STATE_VERSION})")
        missing = [k for k in _CONSTRUCTOR_PARAMS + _STATE_SCALARS + _STATE_ARRAYS
                   if k not in state and k not in _OPTIONAL_PARAMS]
        if missing:
            raise ValueError(f"{cls.__name__} state is missing {missing}")
        model = cls(**{k: _from_plain(state.get(k, _OPTIONAL_PARAMS.get(k)))
                       for k in _CONSTRUCTOR_PARAMS})
        model._check_params()
        k, ct = model.n_components, model.covariance_type
        d = int(state["n_features_in_"])
        arrays = {}
        for name in _STATE_ARRAYS:
            try:
                arrays[name] = np.array(state[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"state[{name!r}] is not a numeric array") from None
            if not np.all(np.isfinite(arrays[name])):
                raise ValueError(f"state[{name!r}] contains NaN or infinity")
        cov_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
        expected = {"stats_s0": (k,), "stats_means": (k, d), "stats_scatter": cov_shape,
                    "weights_": (k,), "means_": (k, d), "covariances_": cov_shape,
                    "precisions_cholesky_": cov_shape}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"state[{name!r}] has shape {arrays[name].shape}, expected "
                                 f"{shape} for n_components={k}, n_features={d}, "
                                 f"covariance_type={ct!r}")
        if np.any(arrays["stats_s0"] < 0) or np.any(arrays["weights_"] < 0):
            raise ValueError("state has negative component weights")
        pc = arrays["precisions_cholesky_"]
        diag = (np.diagonal(pc, axis1=-2, axis2=-1) if ct in ("full", "tied") else pc)
        if np.any(diag <= 0):
            raise ValueError("state's precisions_cholesky_ is not positive definite")
        stats = ss.SufficientStats(arrays["stats_s0"], arrays["stats_means"],
                                   arrays["stats_scatter"])
        params = (arrays["weights_"], arrays["means_"], arrays["covariances_"], pc, 0)
        model._commit(stats, params, n_steps=state["n_steps_"], n_seen=state["n_seen_"],
                      n_reseeds=state["n_reseeds_"], n_repairs=state["n_repairs_"],
                      eta=state.get("last_eta_", 0.0))
        model.converged_ = bool(state["converged_"])
        model.n_iter_ = int(state["n_iter_"])
        model.lower_bound_ = float(state["lower_bound_"])
        model.n_features_in_ = d
        return model


def _plain(value):
    """numpy scalars -> Python scalars, so a state's scalars are JSON-able."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_plain(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value
