"""streamgmm.GaussianMixture against scikit-learn's GaussianMixture (the oracle).

Same initialisation -> same fitted parameters, lower bounds and iteration counts (1e-6
relative in float64; measured agreement is ~1e-10 or better), for every covariance type, on
plain, badly scaled and nearly singular data; default k-means init -> same likelihood and the
true clusters; scoring on copied parameters -> same numbers (1e-8); the API's errors and
warnings; float32; chunked scoring and its memory bound.
"""
import tracemalloc
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from streamgmm import ConvergenceWarning, GaussianMixture, NotFittedError
from streamgmm import math as gm
from streamgmm.math.gaussian import CHUNK_BYTES

import sklearn.mixture as sklearn_mixture  # noqa: E402  (dev extra)
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning as SKConvergenceWarning  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

SKGaussianMixture = sklearn_mixture.GaussianMixture
COV_TYPES = ("full", "tied", "diag", "spherical")


# ------------------------------------------------------------------------------ data
def _mixture_data(n, d, k, seed, spread=6.0):
    """Rows from k random full-covariance Gaussians; returns (X, labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    labels = rng.integers(k, size=n)
    X = np.empty((n, d))
    for j in range(k):
        a = rng.normal(size=(d, d)) / np.sqrt(d)
        cov = a @ a.T + 0.3 * np.eye(d)
        idx = labels == j
        X[idx] = rng.multivariate_normal(centers[j], cov, size=int(idx.sum()))
    return X, labels


def _dataset(name):
    if name == "plain":
        X, y = _mixture_data(600, 3, 3, seed=0, spread=3.0)  # overlapping components
    elif name == "plain_wide":
        X, y = _mixture_data(800, 6, 3, seed=4, spread=4.0)
    elif name == "badly_scaled":
        # features at 1e-3, 1 and 1e4 scales, each far from the origin
        X, y = _mixture_data(600, 3, 3, seed=1)
        X = X * np.array([1e-3, 1.0, 1e4]) + np.array([0.5, -300.0, 1e6])
    elif name == "near_singular":
        # a fourth feature that is the first one plus 1e-4 noise: nearly collinear
        X, y = _mixture_data(600, 3, 3, seed=2)
        rng = np.random.default_rng(3)
        X = np.column_stack([X, X[:, 0] + 1e-4 * rng.normal(size=len(X))])
    else:
        raise AssertionError(name)
    return X, y


DATASETS = ("plain", "plain_wide", "badly_scaled", "near_singular")


def _given_init(X, y, covariance_type, k=3):
    """weights/means/precisions init from rough per-label statistics (perturbed means)."""
    rng = np.random.default_rng(11)
    sd = X.std(axis=0)
    means = np.array([X[y == j].mean(axis=0) for j in range(k)])
    means = means + 0.3 * sd * rng.normal(size=means.shape)
    weights = np.full(k, 1.0 / k)
    covs = np.array([np.cov(X[y == j].T) + 1e-6 * np.eye(X.shape[1]) for j in range(k)])
    prec = {"full": lambda: np.linalg.inv(covs),
            "tied": lambda: np.linalg.inv(covs.mean(axis=0)),
            "diag": lambda: 1.0 / np.diagonal(covs, axis1=1, axis2=2),
            "spherical": lambda: 1.0 / np.diagonal(covs, axis1=1, axis2=2).mean(axis=1)}
    p = prec[covariance_type]()
    if covariance_type in ("full", "tied"):
        p = (p + np.swapaxes(p, -1, -2)) / 2
    return {"weights_init": weights, "means_init": means, "precisions_init": p}


# ---------------------------------------------------------------------- comparisons
def _fit_pair(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**params).fit(X)
        ref = SKGaussianMixture(**params).fit(X)
    return ours, ref


def _close(actual, desired, rtol, atol, name):
    """assert_allclose with an array-valued (broadcast) absolute tolerance."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired)
    assert actual.shape == desired.shape, name
    err = np.abs(actual - desired)
    bound = atol + rtol * np.abs(desired)
    worst = np.max(err / bound) if err.size else 0.0
    assert np.all(err <= bound), f"{name}: error up to {worst:.3g} x the tolerance"


def _assert_same_fit(ours, ref, X, rtol=1e-6):
    """Fitted attributes equal to ``rtol`` relative, judged per feature scale.

    Features differ in scale by up to 1e7, so each entry's tolerance is rtol times the scale
    of its features (std of X), on top of rtol relative to the entry itself.
    """
    sd = X.std(axis=0)
    ct = ref.covariance_type
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol,
                    atol=rtol * max(1.0, abs(ref.lower_bound_)))
    assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=rtol,
                    atol=rtol * max(1.0, abs(ref.lower_bound_)))
    assert_allclose(ours.weights_, ref.weights_, rtol=rtol, atol=rtol * 1e-2)
    _close(ours.means_, ref.means_, rtol, rtol * sd, "means_")
    cov_scale = {"full": np.outer(sd, sd), "tied": np.outer(sd, sd), "diag": sd ** 2,
                 "spherical": np.max(sd ** 2)}[ct]
    _close(ours.covariances_, ref.covariances_, rtol, rtol * cov_scale, "covariances_")
    # U has units of 1/sd per row: compare diag(sd) @ U, relative to its largest entry
    pc_o, pc_r = ours.precisions_cholesky_, ref.precisions_cholesky_
    if ct in ("full", "tied"):
        pc_o, pc_r = sd[:, None] * pc_o, sd[:, None] * pc_r
    elif ct == "diag":
        pc_o, pc_r = sd * pc_o, sd * pc_r
    _close(pc_o, pc_r, rtol, rtol * np.abs(pc_r).max(), "precisions_cholesky_")
    assert ours.precisions_.shape == ref.precisions_.shape
    assert ours.n_features_in_ == ref.n_features_in_ == X.shape[1]
    assert_array_equal(ours.predict(X), ref.predict(X))


# The data-point starts ('random_from_data', 'k-means++') put one sample in each component:
# initial variances are reg_covar = 1e-6 while the badly scaled data span 1e4, and the
# 'diag'/'spherical' expanded distance then loses all precision in scikit-learn itself
# (refitting scikit-learn on data perturbed by 1 ulp moves its means by up to 10%), so those
# four combinations are ill-posed as a comparison and are left out; everything else is in.
def _same_init_cases():
    for data in DATASETS:
        for ct in COV_TYPES:
            for init in ("given", "means_only", "kmeans", "k-means++", "random",
                         "random_from_data"):
                if (data == "badly_scaled" and ct in ("diag", "spherical")
                        and init in ("k-means++", "random_from_data")):
                    continue
                yield data, ct, init


@pytest.mark.parametrize("data,ct,init", list(_same_init_cases()))
def test_same_initialisation_gives_sklearn_parameters(data, ct, init):
    X, y = _dataset(data)
    params = {"n_components": 3, "covariance_type": ct, "random_state": 0}
    if init == "given":
        params.update(_given_init(X, y, ct))
    elif init == "means_only":  # means given, weights/precisions from the kmeans init
        params["means_init"] = _given_init(X, y, ct)["means_init"]
    else:
        params["init_params"] = init
    ours, ref = _fit_pair(X, **params)
    _assert_same_fit(ours, ref, X)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_same_init_tight_tolerance_many_iterations(ct):
    # tol=0 and a fixed iteration count (the benchmark's setting): 60 EM steps stay within
    # 1e-7 (the first, reg_covar-wide E-step of the diag types alone differs by ~1e-8).
    X, _ = _dataset("plain")
    ours, ref = _fit_pair(X, n_components=4, covariance_type=ct, tol=0.0, max_iter=60,
                          init_params="random_from_data", random_state=1)
    assert ours.n_iter_ == ref.n_iter_ == 60
    _assert_same_fit(ours, ref, X, rtol=1e-7)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_kmeans_init_on_separated_blobs_recovers_clusters(ct):
    X, y = _mixture_data(3000, 4, 4, seed=5, spread=12.0)
    ours, ref = _fit_pair(X, n_components=4, covariance_type=ct, random_state=0)
    assert abs(ours.score(X) - ref.score(X)) < 1e-3
    labels = ours.predict(X)
    assert adjusted_rand_score(y, labels) > 0.99
    assert adjusted_rand_score(ref.predict(X), labels) > 0.99
    assert_array_equal(ours.fit_predict(X), labels)  # fit_predict == fit + predict


# ------------------------------------------------------------- scoring on copied params
def _copy_params(ref, dtype=None):
    model = GaussianMixture(n_components=ref.n_components,
                            covariance_type=ref.covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "precisions_"):
        value = getattr(ref, name)
        setattr(model, name, value if dtype is None else value.astype(dtype))
    return model


@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("data", DATASETS)
def test_score_samples_on_sklearn_parameters(ct, data):
    X, _ = _dataset(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        ref = SKGaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    ours = _copy_params(ref)
    rng = np.random.default_rng(0)
    # training rows plus rows far outside the data (very low log-densities)
    Xt = np.vstack([X, X.mean(axis=0) + 6.0 * X.std(axis=0) * rng.normal(size=(50, X.shape[1]))])
    assert_allclose(ours.score_samples(Xt), ref.score_samples(Xt), rtol=1e-8, atol=1e-8)
    assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), rtol=1e-8, atol=1e-8)
    assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    assert_allclose(ours.score(Xt), ref.score(Xt), rtol=1e-10)
    assert ours._n_parameters() == ref._n_parameters()
    assert_allclose(ours.bic(X), ref.bic(X), rtol=1e-10)
    assert_allclose(ours.aic(X), ref.aic(X), rtol=1e-10)
    assert ours.score_samples(Xt).dtype == np.float64


# ------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("ct", COV_TYPES)
def test_sample_reproduces_parameters(ct):
    X, _ = _mixture_data(2000, 3, 3, seed=7, spread=8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        ref = SKGaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    ours = _copy_params(ref)
    ours.random_state = ref.random_state = 3
    n = 40000
    Xs, ys = ours.sample(n)
    Xr, yr = ref.sample(n)
    assert_allclose(Xs, Xr, rtol=1e-12)  # same RandomState calls as scikit-learn
    assert_array_equal(ys, yr)
    assert Xs.shape == (n, 3) and ys.shape == (n,)
    full_cov = {"full": lambda j: ref.covariances_[j], "tied": lambda j: ref.covariances_,
                "diag": lambda j: np.diag(ref.covariances_[j]),
                "spherical": lambda j: ref.covariances_[j] * np.eye(3)}[ct]
    for j in range(3):
        w = ref.weights_[j]
        frac = np.mean(ys == j)
        assert abs(frac - w) < 5 * np.sqrt(w * (1 - w) / n)
        part = Xs[ys == j]
        cov = full_cov(j)
        se = np.sqrt(np.diag(cov) / len(part))
        assert np.all(np.abs(part.mean(axis=0) - ref.means_[j]) < 5 * se)
        emp = np.cov(part.T)
        scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        assert np.all(np.abs(emp - cov) < 5 * scale * np.sqrt(2.0 / len(part)))


def test_sample_errors():
    model = GaussianMixture(2, random_state=0).fit(_dataset("plain")[0])
    with pytest.raises(ValueError, match="Invalid value for 'n_samples': 0"):
        model.sample(0)
    with pytest.raises(NotFittedError):
        GaussianMixture().sample(5)


# ------------------------------------------------------------------------- EM behaviour
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("init", ["random", "random_from_data", "kmeans"])
def test_lower_bound_never_decreases(ct, init):
    X, _ = _dataset("plain")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(4, covariance_type=ct, init_params=init, tol=0.0,
                                max_iter=80, random_state=2).fit(X)
    bounds = np.asarray(model.lower_bounds_)
    assert len(bounds) == model.n_iter_ == 80
    assert np.all(np.diff(bounds) >= -1e-10 * np.abs(bounds[1:]))
    assert model.lower_bound_ == bounds[-1]


@pytest.mark.parametrize("ct", COV_TYPES)
def test_warm_start_matches_sklearn(ct):
    X, _ = _dataset("plain")
    params = {"n_components": 3, "covariance_type": ct, "warm_start": True, "max_iter": 2,
              "random_state": 0, "tol": 1e-8, "init_params": "random"}
    ours, ref = GaussianMixture(**params), SKGaussianMixture(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(4):  # each call continues from the previous parameters
            ours.fit(X)
            ref.fit(X)
            _assert_same_fit(ours, ref, X)
    # a warm-started fit continues where the last one ended: the bound keeps rising
    cold = GaussianMixture(**{**params, "warm_start": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cold.fit(X)
    assert ours.lower_bound_ >= cold.lower_bound_
    # warm start refuses data of another width
    with pytest.raises(ValueError, match="features"):
        ours.fit(X[:, :2])


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_n_init_matches_sklearn_and_keeps_the_best(ct):
    X, _ = _dataset("plain")
    ours, ref = _fit_pair(X, n_components=4, covariance_type=ct, n_init=4,
                          init_params="random", random_state=5, max_iter=30)
    _assert_same_fit(ours, ref, X)
    singles = []
    rs = np.random.RandomState(5)  # the same stream n_init=4 consumes, one init at a time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(4):
            singles.append(GaussianMixture(4, covariance_type=ct, init_params="random",
                                           random_state=rs, max_iter=30).fit(X).lower_bound_)
    assert ours.lower_bound_ == pytest.approx(max(singles), rel=1e-12)


def test_max_iter_zero_keeps_initial_parameters_without_warning():
    X, _ = _dataset("plain")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    ref = SKGaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert ours.n_iter_ == ref.n_iter_ == 0 and not ours.converged_
    assert_allclose(ours.means_, ref.means_, rtol=1e-10)


def test_get_params_set_params_and_clone():
    ours, ref = GaussianMixture(), SKGaussianMixture()
    assert ours.get_params() == ref.get_params()
    ours.set_params(n_components=4, covariance_type="diag", reg_covar=1e-4)
    assert ours.get_params()["n_components"] == 4
    assert ours.covariance_type == "diag" and ours.reg_covar == 1e-4
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        ours.set_params(bogus=1)
    other = clone(ours)  # scikit-learn's clone works through get_params
    assert other.get_params() == ours.get_params() and other is not ours
    assert "n_components=4" in repr(ours)
    # the constructor stores parameters untouched, even invalid ones (checked at fit)
    assert GaussianMixture(n_components=-3).n_components == -3


def test_verbose_output(capsys):
    X, _ = _dataset("plain")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(2, verbose=2, verbose_interval=1, max_iter=3, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 2" in out and "ll change" in out


# ----------------------------------------------------------------- errors and warnings
def test_not_fitted_error():
    model = GaussianMixture()
    X = np.zeros((3, 2))
    for method in ("score_samples", "predict", "predict_proba", "score", "bic", "aic"):
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            getattr(model, method)(X)
    assert issubclass(NotFittedError, ValueError)
    assert issubclass(NotFittedError, AttributeError)
    with pytest.raises(AttributeError):
        model.score(X)
    assert not hasattr(model, "means_")


def test_convergence_warning():
    X, _ = _dataset("plain")
    assert issubclass(ConvergenceWarning, UserWarning)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = GaussianMixture(3, max_iter=1, random_state=0).fit(X)
    assert not model.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert GaussianMixture(3, random_state=0).fit(X).converged_


@pytest.mark.parametrize("method", ["fit", "score_samples", "predict_proba"])
def test_bad_input_arrays(method):
    X, _ = _dataset("plain")
    model = GaussianMixture(2, random_state=0)
    call = model.fit if method == "fit" else getattr(model.fit(X), method)
    bad_nan = X.copy()
    bad_nan[3, 1] = np.nan
    bad_inf = X.copy()
    bad_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains NaN"):
        call(bad_nan)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        call(bad_inf)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        call(X[:, 0])
    with pytest.raises(ValueError, match="Expected 2D array, got 3D array"):
        call(X[None])
    with pytest.raises(ValueError, match="numbers only"):
        call(np.array([["a", "b"], ["c", "d"]]))
    if method != "fit":
        with pytest.raises(ValueError, match="X has 2 features, but the model is expecting "
                                             "3 features as input"):
            call(X[:, :2])


def test_too_few_samples():
    with pytest.raises(ValueError, match="Expected n_samples >= n_components but got "
                                         "n_components = 5, n_samples = 3"):
        GaussianMixture(5).fit(np.random.default_rng(0).normal(size=(3, 2)))
    with pytest.raises(ValueError, match=r"Found array with 1 sample\(s\)"):
        GaussianMixture(1).fit(np.ones((1, 2)))


@pytest.mark.parametrize("params,message", [
    ({"n_components": 0}, "'n_components' parameter must be >= 1"),
    ({"n_components": 1.5}, "'n_components' parameter of this model must be int"),
    ({"covariance_type": "bogus"}, "'covariance_type' parameter must be one of"),
    ({"init_params": "bogus"}, "'init_params' parameter must be one of"),
    ({"tol": -1.0}, "'tol' parameter must be >= 0"),
    ({"reg_covar": -1e-6}, "'reg_covar' parameter must be >= 0"),
    ({"max_iter": -1}, "'max_iter' parameter must be >= 0"),
    ({"n_init": 0}, "'n_init' parameter must be >= 1"),
    ({"verbose_interval": 0}, "'verbose_interval' parameter must be >= 1"),
    ({"weights_init": [0.5, 0.5]}, r"'weights' should have the shape of \(3,\)"),
    ({"weights_init": [0.5, 0.7, -0.2]}, "should be in the range"),
    ({"weights_init": [0.5, 0.3, 0.3]}, "should be normalized"),
    ({"means_init": np.zeros((2, 3))}, r"'means' should have the shape of \(3, 3\)"),
    ({"precisions_init": np.ones((3, 2))}, "'full precision' should have the shape"),
    ({"covariance_type": "diag", "precisions_init": -np.ones((3, 3))},
     "'diag precision' should be positive"),
    ({"covariance_type": "spherical", "precisions_init": np.zeros(3)},
     "'spherical precision' should be positive"),
    ({"covariance_type": "tied", "precisions_init": np.array([[1, 2, 0], [0, 1, 0],
                                                              [0, 0, 1.0]])},
     "'tied precision' should be symmetric"),
    ({"covariance_type": "tied", "precisions_init": -np.eye(3)},
     "'tied precision' should be positive-definite"),
])
def test_invalid_parameters(params, message):
    X, _ = _dataset("plain")
    with pytest.raises(ValueError, match=message):
        GaussianMixture(**{"n_components": 3, **params}).fit(X)


def test_sklearn_rejects_the_same_parameters():
    # our checks are not stricter than the oracle's on these
    X, _ = _dataset("plain")
    for params in ({"n_components": 0}, {"covariance_type": "bogus"}, {"tol": -1.0},
                   {"weights_init": [0.5, 0.3, 0.3], "n_components": 3}):
        with pytest.raises(ValueError):
            SKGaussianMixture(**params).fit(X)


@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("case", ["collapsed_pairs", "constant_rows"])
def test_ill_defined_covariance_asks_to_increase_reg_covar(ct, case):
    # with reg_covar=0, a component sitting on repeated copies of one point has an exactly
    # zero covariance (both libraries compute it exactly here, so both raise)
    if case == "collapsed_pairs":
        X, k = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 10, axis=0), 2
    else:
        X, k = np.zeros((20, 3)), 1
    for est in (GaussianMixture, SKGaussianMixture):
        with pytest.raises(ValueError, match="ill-defined empirical covariance.*increase "
                                             "reg_covar, or scale the input data"):
            est(k, covariance_type=ct, reg_covar=0.0, random_state=0).fit(X)
    with pytest.raises(ValueError, match="float64 data instead of float32"):
        GaussianMixture(k, covariance_type=ct, reg_covar=0.0,
                        random_state=0).fit(X.astype(np.float32))
    # the default reg_covar makes it well defined
    GaussianMixture(k, covariance_type=ct, random_state=0).fit(X)


def test_list_and_integer_inputs_are_accepted():
    X, _ = _dataset("plain")
    a = GaussianMixture(2, random_state=0).fit(X.tolist())
    b = GaussianMixture(2, random_state=0).fit(X)
    assert_allclose(a.means_, b.means_)
    Xi = np.round(X * 10).astype(np.int64)
    assert GaussianMixture(2, random_state=0).fit(Xi).means_.dtype == np.float64


# --------------------------------------------------------------------------- float32
@pytest.mark.parametrize("ct", COV_TYPES)
def test_float32_stays_float32_and_close_to_float64(ct):
    X, _ = _mixture_data(3000, 4, 3, seed=9, spread=8.0)
    m64 = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    X32 = X.astype(np.float32)
    m32 = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X32)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "precisions_"):
        assert getattr(m32, name).dtype == np.float32, name
    assert_allclose(m32.means_, m64.means_, rtol=1e-4, atol=1e-4)
    assert_allclose(m32.covariances_, m64.covariances_, rtol=1e-3, atol=1e-4)
    assert abs(m32.lower_bound_ - m64.lower_bound_) < 1e-5
    s32 = m32.score_samples(X32)
    assert s32.dtype == np.float64
    assert_allclose(s32, m64.score_samples(X), rtol=1e-4, atol=1e-4)
    assert m32.predict_proba(X32).dtype == np.float64
    # the float32 model agrees with scikit-learn's float32 fit as well as float32 allows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        ref32 = SKGaussianMixture(3, covariance_type=ct, random_state=0).fit(X32)
    assert_allclose(m32.means_, ref32.means_, rtol=1e-4, atol=1e-4)


def test_float64_model_scores_float32_data_in_float64():
    X, _ = _dataset("badly_scaled")
    model = GaussianMixture(3, random_state=0).fit(X)
    X32 = X.astype(np.float32)
    assert_allclose(model.score_samples(X32), model.score_samples(X32.astype(np.float64)),
                    rtol=1e-12)


# -------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("ct", COV_TYPES)
def test_chunked_scoring_equals_unchunked(ct):
    X, _ = _dataset("badly_scaled")
    model = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    args = (model.weights_, model.means_, model.precisions_cholesky_, ct)
    whole = gm.score_samples_chunked(X, *args, chunk=len(X))
    proba = gm.predict_proba_chunked(X, *args, chunk=len(X))
    for chunk in (1, 17, 128):
        assert_allclose(gm.score_samples_chunked(X, *args, chunk=chunk), whole, rtol=1e-13)
        assert_allclose(gm.predict_proba_chunked(X, *args, chunk=chunk), proba, atol=1e-14)
    assert_allclose(model.score_samples(X), whole, rtol=1e-13)
    assert_allclose(model.predict_proba(X), proba, atol=1e-14)


def test_fit_is_independent_of_the_em_chunk_size(monkeypatch):
    X, _ = _dataset("near_singular")
    params = {"n_components": 3, "init_params": "random", "random_state": 0}
    ref = GaussianMixture(**params).fit(X)
    original = gm.EMData.__init__

    def small_chunks(self, X, covariance_type, chunk=None):
        original(self, X, covariance_type, chunk=37)

    monkeypatch.setattr(gm.EMData, "__init__", small_chunks)
    small = GaussianMixture(**params).fit(X)
    assert small.n_iter_ == ref.n_iter_
    assert_allclose(small.means_, ref.means_, rtol=1e-10)
    assert_allclose(small.covariances_, ref.covariances_, rtol=1e-8, atol=1e-14)


def _traced_peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("n,d,k,ct", [(1_000_000, 8, 8, "full"), (200_000, 64, 2, "diag")])
def test_score_samples_memory_is_bounded(n, d, k, ct):
    # The extra memory of score_samples stays within CHUNK_BYTES (8 MiB) on top of its (n,)
    # float64 output, whatever n (input validation included: the wide case would exceed the
    # bound with an (n, d) boolean finiteness mask).
    rng = np.random.default_rng(0)
    fit_X = rng.normal(size=(4000, d)) + rng.integers(0, 4, size=(4000, 1)) * 3.0
    model = GaussianMixture(k, covariance_type=ct, random_state=0, max_iter=5, tol=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(fit_X)
    X = rng.normal(size=(n, d))
    out, peak = _traced_peak(lambda: model.score_samples(X))
    assert out.shape == (n,) and out.dtype == np.float64
    assert peak <= CHUNK_BYTES + out.nbytes + 256 * 1024, peak
    Xs = X[:100_000]
    proba, peak = _traced_peak(lambda: model.predict_proba(Xs))
    assert peak <= CHUNK_BYTES + proba.nbytes + 256 * 1024, peak


def test_scikit_learn_meta_estimators_accept_the_models():
    """GridSearchCV, cross_val_score and Pipeline ask for scikit-learn's estimator tags."""
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler as SkScaler

    from streamgmm import OnlineGaussianMixture
    X = np.random.RandomState(0).randn(300, 3)
    for est in (GaussianMixture(random_state=0), OnlineGaussianMixture(random_state=0)):
        search = GridSearchCV(est, {"n_components": [1, 2]}, cv=3).fit(X)
        assert search.best_params_["n_components"] in (1, 2)
    scores = cross_val_score(GaussianMixture(2, random_state=0), X, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    pipe = make_pipeline(SkScaler(), GaussianMixture(2, random_state=0)).fit(X)
    ref = sklearn_mixture.GaussianMixture(2, random_state=0).fit(SkScaler().fit_transform(X))
    assert pipe.score(X) == pytest.approx(ref.score(SkScaler().fit_transform(X)), rel=1e-6)


@pytest.mark.parametrize("change", [{"n_components": 3}, {"covariance_type": "diag"},
                                    {"covariance_type": "spherical"}])
def test_warm_start_after_a_shape_change_is_a_clear_error(change):
    X = np.random.RandomState(1).randn(200, 3)
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(X)
    gm.set_params(**change)
    with pytest.raises(ValueError, match="warm_start=False"):
        gm.fit(X)


def test_complex_input_is_refused_like_scikit_learn():
    X = np.random.RandomState(2).randn(50, 2) + 1j
    with pytest.raises(ValueError, match="Complex data not supported"):
        GaussianMixture(1).fit(X)
    with pytest.raises(ValueError, match="Complex data not supported"):
        sklearn_mixture.GaussianMixture(1).fit(X)
