"""Batch Gaussian mixture fitted by EM, with scikit-learn's ``GaussianMixture`` API and results.

Same constructor parameters, defaults, fitted attributes and methods as
``sklearn.mixture.GaussianMixture``; the numerics live in ``streamgmm.math``.
"""
import time
import warnings

import numpy as np

from .. import math as gm
from ..exceptions import ConvergenceWarning
from .base import ParamsMixin
from .scoring import MixtureScoringMixin
from .validation import check_array, check_random_state, check_scalar

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


class GaussianMixture(MixtureScoringMixin, ParamsMixin):
    """Gaussian mixture model fitted with expectation-maximisation.

    Parameters and fitted attributes mirror scikit-learn's ``GaussianMixture`` (see its docs);
    with the same initialisation (``*_init`` arrays, or ``init_params`` with the same
    ``random_state``: the same RandomState calls are made) the fitted parameters, lower bounds
    and iteration counts are scikit-learn's (to ~1e-10 relative; tests check 1e-6).

    Memory: ``score_samples`` and ``predict_proba`` work in row chunks, so their extra memory
    is at most ``streamgmm.math.gaussian.CHUNK_BYTES`` (8 MiB) on top of the returned array,
    whatever the number of rows. ``fit`` keeps the data once more, shifted and transposed
    (``(d + 1) * n`` values, ``(2 d + 1) * n`` for 'diag'/'spherical'), and the responsibilities
    (``k * n``), plus chunk buffers of at most 24 MiB.

    float32 input is computed in float32 (the parameters stay float32); log-densities and
    likelihoods are accumulated in float64, and ``score_samples`` returns float64. A float64
    model scores float32 data in float64.
    """

    _sklearn_estimator_type = "density_estimator"

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None, warm_start=False,
                 verbose=0, verbose_interval=10):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        check_scalar(self.n_components, "n_components", "int", low=1)
        check_scalar(self.tol, "tol", "real", low=0.0)
        check_scalar(self.reg_covar, "reg_covar", "real", low=0.0)
        check_scalar(self.max_iter, "max_iter", "int", low=0)
        check_scalar(self.n_init, "n_init", "int", low=1)
        check_scalar(self.verbose, "verbose", "int", low=0)
        check_scalar(self.verbose_interval, "verbose_interval", "int", low=1)
        if self.covariance_type not in gm.COVARIANCE_TYPES:
            raise ValueError(f"The 'covariance_type' parameter must be one of "
                             f"{list(gm.COVARIANCE_TYPES)}, got {self.covariance_type!r}.")
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"The 'init_params' parameter must be one of {list(INIT_PARAMS)}, "
                             f"got {self.init_params!r}.")

    def _check_initial_parameters(self, X):
        k, d = self.n_components, X.shape[1]
        self._weights_init = self._means_init = self._precisions_init = None
        if self.weights_init is not None:
            w = np.array(self.weights_init, dtype=X.dtype)
            if w.shape != (k,):
                raise ValueError(f"The parameter 'weights' should have the shape of ({k},), "
                                 f"but got {w.shape}")
            if np.any(w < 0) or np.any(w > 1):
                raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but "
                                 f"got max value {w.max():.5f}, min value {w.min():.5f}")
            if not np.allclose(np.abs(1.0 - np.sum(w)), 0.0):
                raise ValueError(f"The parameter 'weights' should be normalized, but got "
                                 f"sum(weights) = {np.sum(w):.5f}")
            self._weights_init = w
        if self.means_init is not None:
            m = np.array(self.means_init, dtype=X.dtype)
            if m.shape != (k, d):
                raise ValueError(f"The parameter 'means' should have the shape of {(k, d)}, "
                                 f"but got {m.shape}")
            self._means_init = m
        if self.precisions_init is not None:
            self._precisions_init = self._check_precisions(
                np.array(self.precisions_init, dtype=X.dtype), k, d)

    def _check_precisions(self, p, k, d):
        ct = self.covariance_type
        shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
        if p.shape != shape:
            raise ValueError(f"The parameter '{ct} precision' should have the shape of {shape}, "
                             f"but got {p.shape}")
        if ct in ("diag", "spherical"):
            if np.any(np.less_equal(p, 0.0)):
                raise ValueError(f"'{ct} precision' should be positive")
            return p
        for mat in (p if ct == "full" else [p]):
            if not np.allclose(mat, mat.T):
                raise ValueError(f"'{ct} precision' should be symmetric")
            if not np.all(np.linalg.eigvalsh(mat) > 0.0):
                raise ValueError(f"'{ct} precision' should be positive-definite")
        return p

    # ---------------------------------------------------------- initialisation
    def _initial_resp_t(self, X, random_state):
        """Initial responsibilities, transposed (k, n), drawing from ``random_state`` exactly
        as scikit-learn does (same calls, same order), so a seed gives the same start."""
        n, k = X.shape[0], self.n_components
        resp_t = np.zeros((k, n), dtype=X.dtype)
        if self.init_params == "kmeans":
            _, labels, _ = gm.kmeans(X, k, random_state)
            resp_t[labels, np.arange(n)] = 1
        elif self.init_params == "random":
            resp = random_state.uniform(size=(n, k)).astype(X.dtype)
            resp /= resp.sum(axis=1)[:, None]
            resp_t[:] = resp.T
        elif self.init_params == "random_from_data":
            idx = random_state.choice(n, size=k, replace=False)
            resp_t[np.arange(k), idx] = 1
        else:  # k-means++
            _, idx = gm.kmeans_plusplus(np.asarray(X, dtype=np.float64), k, random_state)
            resp_t[np.arange(k), idx] = 1
        return resp_t

    def _initialize(self, X, data, random_state):
        """Initial parameters: user-given where provided, else from initial responsibilities."""
        given = (self._weights_init, self._means_init, self._precisions_init)
        weights = means = covariances = None
        if any(v is None for v in given):
            resp_t = self._initial_resp_t(X, random_state)
            weights, means, covariances = gm.em_m_step(data, resp_t, self.reg_covar)
            if self._weights_init is None:
                weights = weights / X.shape[0]
        self.weights_ = weights if self._weights_init is None else self._weights_init.copy()
        self.means_ = means if self._means_init is None else self._means_init.copy()
        if self._precisions_init is None:
            self.covariances_ = covariances
            self.precisions_cholesky_ = gm.compute_precision_cholesky(
                covariances, self.covariance_type)
        else:
            self.precisions_cholesky_ = gm.precision_cholesky_from_precisions(
                self._precisions_init, self.covariance_type)
            self.covariances_ = gm.covariances_from_cholesky(
                self.precisions_cholesky_, self.covariance_type)

    # --------------------------------------------------------------------- EM
    def _e_step(self, data, resp_t):
        """Mean log-likelihood (the lower bound) and responsibilities into ``resp_t`` (k, n)."""
        return gm.em_e_step(data, self.weights_, self.means_, self.precisions_cholesky_, resp_t)

    def _m_step(self, data, resp_t):
        weights, self.means_, self.covariances_ = gm.em_m_step(data, resp_t, self.reg_covar)
        self.weights_ = weights / weights.sum()
        self.precisions_cholesky_ = gm.compute_precision_cholesky(
            self.covariances_, self.covariance_type)

    def _get_parameters(self):
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self.precisions_ = gm.precisions_from_cholesky(self.precisions_cholesky_,
                                                       self.covariance_type)

    def fit(self, X, y=None):
        """Estimate parameters with EM (``n_init`` restarts, the best lower bound kept)."""
        self._fit(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the most likely component of each training row.

        As in scikit-learn, a final E-step with the kept parameters gives the labels, so
        ``fit_predict(X)`` always equals ``fit(X).predict(X)``.
        """
        data, resp_t = self._fit(X)
        self._e_step(data, resp_t)
        return resp_t.argmax(axis=0)

    def _check_warm_start_shapes(self):
        """warm_start continues the fitted parameters: they must have the shapes that
        ``n_components`` and ``covariance_type`` ask for now."""
        k, d = self.means_.shape
        want = {"full": (self.n_components, d, d), "tied": (d, d),
                "diag": (self.n_components, d), "spherical": (self.n_components,)}
        if k != self.n_components or \
                np.shape(self.precisions_cholesky_) != want[self.covariance_type]:
            raise ValueError(
                f"warm_start=True continues the fitted model, whose parameters do not have "
                f"the shape n_components={self.n_components}, covariance_type="
                f"{self.covariance_type!r} asks for (means_ {self.means_.shape}, "
                f"precisions_cholesky_ {np.shape(self.precisions_cholesky_)}): set "
                f"warm_start=False to fit from scratch after changing them")

    def _fit(self, X):
        self._check_params()
        X = check_array(X, ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {X.shape[0]}")
        self._check_initial_parameters(X)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not do_init and self.means_.shape[1] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, but the model is expecting "
                             f"{self.means_.shape[1]} features as input.")
        if not do_init:
            self._check_warm_start_shapes()
        n_init = self.n_init if do_init else 1
        random_state = check_random_state(self.random_state)
        data = gm.EMData(X, self.covariance_type)
        resp_t = np.empty((self.n_components, X.shape[0]), dtype=X.dtype)
        max_lower_bound, best_params, best_n_iter, best_bounds = -np.inf, None, 0, []
        self.converged_ = False
        for init in range(n_init):
            self._verbose_init_beg(init)
            if do_init:
                self._initialize(X, data, random_state)
            lower_bound = -np.inf if do_init else self.lower_bound_
            bounds = []
            if self.max_iter == 0:
                best_params, best_n_iter = self._get_parameters(), 0
                continue
            converged = False
            for n_iter in range(1, self.max_iter + 1):
                prev = lower_bound
                lower_bound = self._e_step(data, resp_t)
                self._m_step(data, resp_t)
                bounds.append(lower_bound)
                change = lower_bound - prev
                self._verbose_iter_end(n_iter, change)
                if abs(change) < self.tol:
                    converged = True
                    break
            self._verbose_init_end(lower_bound, converged)
            if lower_bound > max_lower_bound or max_lower_bound == -np.inf:
                max_lower_bound, best_params = lower_bound, self._get_parameters()
                best_n_iter, best_bounds, self.converged_ = n_iter, bounds, converged
        if not self.converged_ and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different "
                          "init parameters, or increase max_iter, tol, or check for "
                          "degenerate data.", ConvergenceWarning, stacklevel=3)
        self._set_parameters(best_params)
        self.n_iter_ = best_n_iter
        self.lower_bound_ = max_lower_bound
        self.lower_bounds_ = best_bounds
        self.n_features_in_ = X.shape[1]
        return data, resp_t

    # ---------------------------------------------------------------- verbose
    # Same messages as scikit-learn: verbose=1 prints progress, verbose>=2 adds timings.
    def _verbose_init_beg(self, n_init):
        if self.verbose >= 1:
            print(f"Initialization {n_init}")
            self._t0 = self._t_iter = time.time()

    def _verbose_iter_end(self, n_iter, change):
        if self.verbose >= 1 and n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {n_iter}")
            else:
                now = time.time()
                print(f"  Iteration {n_iter}\t time lapse {now - self._t_iter:.5f}s\t "
                      f"ll change {change:.5f}")
                self._t_iter = now

    def _verbose_init_end(self, lb, converged):
        state = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {state}.")
        elif self.verbose >= 2:
            print(f"Initialization {state}. time lapse {time.time() - self._t0:.5f}s\t "
                  f"lower bound {lb:.5f}.")
