"""Model selection by information criterion: fit a grid of mixtures, keep the best by BIC/AIC.

This is the "Hyperparameter Tuning" recipe of the seeds: fit a ``GaussianMixture`` for every
``(covariance_type, n_components)`` pair, compute BIC and AIC on the training data, keep the
model with the lowest criterion. Later layers use it for ``n_components: auto``.
"""
import math
import numbers
import warnings
from typing import NamedTuple

from .. import math as gm
from ..exceptions import ConvergenceWarning
from .gaussian_mixture import GaussianMixture
from .validation import check_array

CRITERIA = ("bic", "aic")


class SelectionResult(NamedTuple):
    """``best_model``: the fitted ``GaussianMixture`` with the lowest criterion.

    ``table``: one dict per candidate, in fitting order (covariance types outer, component
    counts inner), with keys ``n_components, covariance_type, bic, aic, converged, n_iter,
    lower_bound, n_parameters, error`` (``error`` is None, or the message of a fit that
    failed, whose criteria are then ``inf``).
    """

    best_model: GaussianMixture
    table: list

    @property
    def best(self):
        """The table row of ``best_model``."""
        for row in self.table:
            if (row["n_components"] == self.best_model.n_components
                    and row["covariance_type"] == self.best_model.covariance_type):
                return row
        return None  # pragma: no cover


def select_model(X, n_components=range(1, 9), covariance_types=("full", "tied", "diag",
                                                                  "spherical"),
                 criterion="bic", random_state=None, **gmm_kwargs):
    """Fit a ``GaussianMixture`` for each candidate and return the best by ``criterion``.

    Parameters
    ----------
    X : array-like (n_samples, n_features)
    n_components : int or iterable of int (>= 1); candidates larger than n_samples are
        skipped.
    covariance_types : str or iterable of 'full' | 'tied' | 'diag' | 'spherical'.
    criterion : 'bic' (default) or 'aic'; lower is better. Ties go to the model with fewer
        free parameters.
    random_state : passed to every fit (an int gives each candidate the same seed, as the
        seeds' loop does, so each fit equals ``GaussianMixture(..., random_state=seed)``).
    **gmm_kwargs : any other ``GaussianMixture`` parameter (``n_init``, ``max_iter``,
        ``reg_covar``, ``init_params``, ``tol``...).

    A candidate whose fit fails (for instance an ill-defined covariance with too many
    components) is kept in the table with infinite criteria; convergence warnings of the
    individual fits are collected into the table's ``converged`` column and only the best
    model's non-convergence is warned about.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}.")
    for key in ("n_components", "covariance_type"):
        if key in gmm_kwargs:
            raise TypeError(f"select_model() sets {key!r} itself; pass the candidates as "
                            f"'n_components' / 'covariance_types'.")
    if isinstance(covariance_types, str):
        covariance_types = (covariance_types,)
    covariance_types = tuple(covariance_types)
    for ct in covariance_types:
        if ct not in gm.COVARIANCE_TYPES:
            raise ValueError(f"Invalid covariance type {ct!r}; expected one of "
                             f"{list(gm.COVARIANCE_TYPES)}.")
    if isinstance(n_components, numbers.Integral):
        n_components = (n_components,)
    ks = []
    for k in n_components:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"n_components candidates must be integers >= 1, got {k!r}.")
        ks.append(int(k))
    if not ks or not covariance_types:
        raise ValueError("select_model needs at least one n_components and one "
                         "covariance type.")
    X = check_array(X, ensure_min_samples=2)
    n = X.shape[0]
    ks = [k for k in ks if k <= n]
    if not ks:
        raise ValueError(f"Every n_components candidate exceeds n_samples = {n}.")

    table, best, best_key = [], None, None
    for ct in covariance_types:
        for k in ks:
            model = GaussianMixture(n_components=k, covariance_type=ct,
                                    random_state=random_state, **gmm_kwargs)
            row = {"n_components": k, "covariance_type": ct, "bic": math.inf,
                   "aic": math.inf, "converged": False, "n_iter": 0,
                   "lower_bound": -math.inf,
                   "n_parameters": gm.n_parameters(k, X.shape[1], ct), "error": None}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(X)
            except ValueError as exc:  # ill-defined covariance and the like
                row["error"] = str(exc)
                table.append(row)
                continue
            ll = model.score(X)
            row.update(bic=float(gm.bic(ll, n, row["n_parameters"])),
                       aic=float(gm.aic(ll, n, row["n_parameters"])),
                       converged=bool(model.converged_), n_iter=int(model.n_iter_),
                       lower_bound=float(model.lower_bound_))
            table.append(row)
            key = (row[criterion], row["n_parameters"])
            if math.isfinite(row[criterion]) and (best_key is None or key < best_key):
                best, best_key = model, key
    if best is None:
        errors = "; ".join(sorted({r["error"] for r in table if r["error"]}))
        raise ValueError(f"No candidate model could be fitted: {errors}")
    if not best.converged_ and best.max_iter > 0:
        warnings.warn(f"The selected model (n_components={best.n_components}, "
                      f"covariance_type={best.covariance_type!r}) did not converge. Try "
                      f"increasing max_iter or tol.", ConvergenceWarning, stacklevel=2)
    return SelectionResult(best, table)
