"""select_model: the BIC/AIC grid of the seeds' "Hyperparameter Tuning" section."""
import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import streamgmm
from streamgmm import ConvergenceWarning, GaussianMixture, SelectionResult, select_model
from streamgmm.models import select_model as models_select_model

import sklearn.mixture as sklearn_mixture  # noqa: E402  (dev extra)
from sklearn.exceptions import ConvergenceWarning as SKConvergenceWarning  # noqa: E402


def _blobs(n=1500, d=3, k=3, seed=0, spread=10.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    labels = rng.integers(k, size=n)
    scales = rng.uniform(0.5, 1.5, size=(k, d))  # axis-aligned clusters of unequal widths
    return centers[labels] + scales[labels] * rng.normal(size=(n, d)), labels


def test_exports():
    assert streamgmm.select_model is select_model is models_select_model
    assert "select_model" in streamgmm.__all__ and "SelectionResult" in streamgmm.__all__


def test_picks_the_true_number_of_components_and_matches_sklearn_bic():
    X, _ = _blobs()
    result = select_model(X, n_components=range(1, 6), random_state=0)
    assert isinstance(result, SelectionResult)
    best, table = result
    assert best.n_components == 3
    assert isinstance(best, GaussianMixture) and hasattr(best, "means_")
    assert len(table) == 5 * 4
    assert [(r["covariance_type"], r["n_components"]) for r in table] == [
        (ct, k) for ct in ("full", "tied", "diag", "spherical") for k in range(1, 6)]
    # the table is the BIC/AIC of the same fits in scikit-learn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        for row in table:
            ref = sklearn_mixture.GaussianMixture(row["n_components"],
                                                  covariance_type=row["covariance_type"],
                                                  random_state=0).fit(X)
            assert_allclose(row["bic"], ref.bic(X), rtol=1e-6)
            assert_allclose(row["aic"], ref.aic(X), rtol=1e-6)
            assert row["converged"] == ref.converged_
            assert row["n_parameters"] == ref._n_parameters()
    # best is the row with the lowest BIC, and the model's own bic agrees with its row
    best_row = min(table, key=lambda r: r["bic"])
    assert (best.n_components, best.covariance_type) == (best_row["n_components"],
                                                         best_row["covariance_type"])
    assert result.best is best_row or result.best == best_row
    assert_allclose(best.bic(X), best_row["bic"], rtol=1e-12)


def test_aic_criterion_and_single_candidates():
    X, _ = _blobs(seed=1)
    best, table = select_model(X, n_components=[2, 3, 4], covariance_types="diag",
                               criterion="aic", random_state=0)
    assert len(table) == 3 and all(r["covariance_type"] == "diag" for r in table)
    assert best.n_components == min(table, key=lambda r: r["aic"])["n_components"] == 3
    best, table = select_model(X, n_components=2, covariance_types=["spherical"],
                               random_state=0)
    assert best.n_components == 2 and len(table) == 1


def test_gmm_kwargs_are_passed_through():
    X, _ = _blobs(seed=2)
    best, table = select_model(X, n_components=[3], covariance_types=("full",),
                               random_state=0, n_init=2, init_params="random",
                               max_iter=200, reg_covar=1e-4)
    assert best.n_init == 2 and best.init_params == "random" and best.reg_covar == 1e-4
    ref = GaussianMixture(3, n_init=2, init_params="random", max_iter=200, reg_covar=1e-4,
                          random_state=0).fit(X)
    assert_allclose(table[0]["bic"], ref.bic(X), rtol=1e-10)


def test_failed_candidates_stay_in_the_table():
    # 6 points on two sites: 4 or 5 components leave some without spread (reg_covar=0)
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 3, axis=0)
    best, table = select_model(X, n_components=range(1, 10), covariance_types=("diag",),
                               reg_covar=0.0, random_state=0)
    assert [r["n_components"] for r in table] == list(range(1, 7))  # k > n skipped
    failed = [r for r in table if r["error"]]
    assert failed and all(math.isinf(r["bic"]) for r in failed)
    assert all("reg_covar" in r["error"] for r in failed)
    assert best.n_components not in [r["n_components"] for r in failed]


def test_convergence_is_reported_in_the_table_not_warned_per_fit():
    X, _ = _blobs(seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best, table = select_model(X, n_components=[1, 2, 3], covariance_types=("full",),
                                   random_state=0, max_iter=1)
    assert not any(r["converged"] for r in table[1:])
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    # one summary warning about the selected model if it did not converge, else none
    assert len(conv) == (0 if best.converged_ else 1), [str(w.message) for w in conv]
    if not best.converged_:
        assert "did not converge" in str(conv[0].message)


@pytest.mark.parametrize("kwargs,message", [
    ({"criterion": "likelihood"}, "criterion must be one of"),
    ({"covariance_types": ("full", "bogus")}, "Invalid covariance type 'bogus'"),
    ({"n_components": [0, 1]}, "integers >= 1"),
    ({"n_components": []}, "at least one"),
    ({"n_components": [50]}, "exceeds n_samples"),
])
def test_invalid_arguments(kwargs, message):
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=message):
        select_model(X, **kwargs)


def test_grid_arguments_cannot_be_overridden():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(TypeError, match="covariance_types"):
        select_model(X, covariance_type="full")
