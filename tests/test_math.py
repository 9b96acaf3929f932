"""Layer 1 (streamgmm.math) against scikit-learn's private mixture helpers and SciPy.

The oracle functions are scikit-learn's own (``sklearn.mixture._gaussian_mixture``), so a
difference here points at the exact step that drifts. Property tests (hypothesis) cover
log-sum-exp on extreme inputs and the Cholesky round trips.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp as scipy_logsumexp

from streamgmm import math as gm
from streamgmm.math import em as em_mod
from streamgmm.math import gaussian as gauss_mod

import sklearn.mixture._gaussian_mixture as skgm  # noqa: E402  (dev extra)
from sklearn.cluster import KMeans, kmeans_plusplus as sk_kmeans_plusplus  # noqa: E402

COV_TYPES = ("full", "tied", "diag", "spherical")
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers
def _random_params(rng, k, d, covariance_type, scale=1.0):
    means = rng.normal(scale=3.0 * scale, size=(k, d))
    weights = rng.dirichlet(np.ones(k))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        cov = (a @ np.transpose(a, (0, 2, 1)) / d + 0.2 * np.eye(d)) * scale ** 2
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = (a @ a.T / d + 0.2 * np.eye(d)) * scale ** 2
    elif covariance_type == "diag":
        cov = rng.uniform(0.2, 2.0, size=(k, d)) * scale ** 2
    else:
        cov = rng.uniform(0.2, 2.0, size=k) * scale ** 2
    return weights, means, cov


def _resp(rng, n, k, kind):
    if kind == "soft":
        return rng.dirichlet(np.ones(k), size=n)
    resp = np.zeros((n, k))  # one data point per component: the 'random_from_data' start
    resp[rng.choice(n, size=k, replace=False), np.arange(k)] = 1.0
    return resp


# ------------------------------------------------------------------------- logsumexp
@PROPERTY_SETTINGS
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.one_of(st.floats(-1e300, 1e300), st.just(-np.inf),
                                     st.floats(-800, 50))))
def test_logsumexp_rows_matches_scipy_on_extreme_values(a):
    expected = scipy_logsumexp(a, axis=1)
    got = gm.logsumexp_rows(a)
    assert got.dtype == np.float64
    assert_array_equal(np.isneginf(got), np.isneginf(expected))
    fin = np.isfinite(expected)
    assert_allclose(got[fin], expected[fin], rtol=1e-12, atol=1e-12)


def test_logsumexp_rows_no_underflow_and_all_minus_inf_rows():
    a = np.array([[-1000.0, -1000.0], [-np.inf, -np.inf], [1e308, 1e308], [0.0, -np.inf]])
    out = gm.logsumexp_rows(a)
    assert_allclose(out[0], -1000.0 + np.log(2.0))
    assert out[1] == -np.inf
    assert np.isfinite(out[2]) or out[2] == np.inf  # 1e308 + log 2 overflows only by rounding
    assert out[3] == 0.0
    norm, log_post = gm.log_normalize_rows(a[[0, 3]])
    assert_allclose(np.exp(log_post).sum(axis=1), 1.0)


# ------------------------------------------------------------------ Cholesky round trips
@st.composite
def _spd(draw):
    d = draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    log_scale = draw(st.floats(-4, 4))
    cond = draw(st.floats(0, 6))  # log10 of the condition number
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        eig = 10.0 ** (log_scale + rng.uniform(-cond / 2, cond / 2, size=d))
        mats.append((q * eig) @ q.T)
    mats = np.array(mats)
    return (mats + np.transpose(mats, (0, 2, 1))) / 2


@PROPERTY_SETTINGS
@given(_spd())
def test_precision_cholesky_round_trips(covs):
    d = covs.shape[1]
    for ct, cov in (("full", covs), ("tied", covs[0])):
        pc = gm.compute_precision_cholesky(cov, ct)
        mats = pc if ct == "full" else pc[None]
        assert_array_equal(np.tril(mats, -1), 0.0)  # upper triangular, positive diagonal
        assert np.all(np.diagonal(mats, axis1=-2, axis2=-1) > 0)
        # against scikit-learn's own factor
        assert_allclose(pc, skgm._compute_precision_cholesky(cov, ct), rtol=1e-7,
                        atol=1e-9 * np.abs(pc).max())
        # covariance -> U -> covariance, and precision -> U -> precision
        back = gm.covariances_from_cholesky(pc, ct)
        assert_allclose(back, cov, rtol=1e-6, atol=1e-9 * np.abs(cov).max())
        prec = gm.precisions_from_cholesky(pc, ct)
        assert_allclose(prec @ cov, np.broadcast_to(np.eye(d), prec.shape), atol=1e-6)
        pc2 = gm.precision_cholesky_from_precisions(prec, ct)
        assert_allclose(pc2, pc, rtol=1e-6, atol=1e-9 * np.abs(pc).max())
    var = np.diagonal(covs, axis1=1, axis2=2)
    for ct, cov in (("diag", var), ("spherical", var[:, 0])):
        pc = gm.compute_precision_cholesky(cov, ct)
        assert_allclose(gm.covariances_from_cholesky(pc, ct), cov, rtol=1e-12)
        assert_allclose(gm.precision_cholesky_from_precisions(
            gm.precisions_from_cholesky(pc, ct), ct), pc, rtol=1e-12)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_compute_precision_cholesky_rejects_non_pd(ct):
    bad = {"full": np.array([[[1.0, 2.0], [2.0, 1.0]]]), "tied": np.array([[1.0, 2.0],
                                                                          [2.0, 1.0]]),
           "diag": np.array([[1.0, 0.0]]), "spherical": np.array([-1.0])}[ct]
    with pytest.raises(ValueError, match="increase reg_covar"):
        gm.compute_precision_cholesky(bad, ct)
    with pytest.raises(ValueError, match="passing float64 data instead of float32"):
        gm.compute_precision_cholesky(bad.astype(np.float32), ct)
    nan = np.full_like(bad, np.nan)
    with pytest.raises(ValueError, match="increase reg_covar"):
        gm.compute_precision_cholesky(nan, ct)


# --------------------------------------------------------------- log-densities (E-step)
def _log_prob_longdouble(X, means, pc, ct):
    """Reference log N(x | mu_k, Sigma_k) in extended precision, per component centred."""
    L = np.longdouble
    X, means, pcl = X.astype(L), means.astype(L), pc.astype(L)
    n, d = X.shape
    out = np.empty((n, means.shape[0]), dtype=L)
    for j, mu in enumerate(means):
        diff = X - mu
        y = {"full": lambda: diff @ pcl[j], "tied": lambda: diff @ pcl,
             "diag": lambda: diff * pcl[j], "spherical": lambda: diff * pcl[j]}[ct]()
        out[:, j] = (y * y).sum(axis=1)
    log_det = skgm._compute_log_det_cholesky(pc, ct, d)
    return (-0.5 * (d * np.log(2 * np.pi) + out) + log_det).astype(np.float64)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_log_gaussian_prob_matches_sklearn(ct):
    rng = np.random.default_rng(1)
    k, d, n = 4, 5, 300
    w, means, cov = _random_params(rng, k, d, ct)
    X = means[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    X[:5] += 40.0  # far outliers: very negative log-densities
    pc = skgm._compute_precision_cholesky(cov, ct)
    expected = skgm._estimate_log_gaussian_prob(X, means, pc, ct)
    assert_allclose(gm.estimate_log_gaussian_prob(X, means, pc, ct), expected, rtol=1e-9)
    scorer = gm.GaussianScorer(means, pc, ct)
    assert_allclose(scorer.log_prob(X), expected, rtol=1e-9)  # row-major layout
    dist_t = scorer.dist_t(scorer.prepare(X))  # transposed layout
    assert_allclose(-0.5 * dist_t.T + scorer.const, expected, rtol=1e-9)
    assert_allclose(gm.log_det_cholesky(pc, ct, d),
                    skgm._compute_log_det_cholesky(pc, ct, d), rtol=1e-12)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_log_gaussian_prob_far_from_origin_is_accurate(ct):
    # Data at 1e4 with unit spread: scikit-learn's expanded 'diag'/'spherical' formula
    # (x^2 P - 2 x mu P + mu^2 P) loses ~1e-7 absolute to cancellation. The transposed
    # kernel works on data shifted to the components' centre: it must stay at the
    # extended-precision reference, and never be worse than scikit-learn.
    rng = np.random.default_rng(1)
    k, d, n = 4, 5, 300
    w, means, cov = _random_params(rng, k, d, ct)
    means += 1e4
    X = means[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    pc = skgm._compute_precision_cholesky(cov, ct)
    ref = _log_prob_longdouble(X, means, pc, ct)
    sk_err = np.abs(skgm._estimate_log_gaussian_prob(X, means, pc, ct) - ref).max()
    scorer = gm.GaussianScorer(means, pc, ct)
    ours = -0.5 * scorer.dist_t(scorer.prepare(X)).T + scorer.const
    our_err = np.abs(ours - ref).max()
    assert our_err <= max(sk_err, 1e-12)
    assert our_err < 1e-11
    sc = gm.score_samples_chunked(X, w, means, pc, ct)
    assert_allclose(sc, scipy_logsumexp(ref + np.log(w), axis=1), rtol=1e-12)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_e_steps_match_sklearn_estimate_log_prob_resp(ct):
    rng = np.random.default_rng(2)
    k, d, n = 3, 4, 500
    w, means, cov = _random_params(rng, k, d, ct)
    X = means[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    pc = skgm._compute_precision_cholesky(cov, ct)
    sk = skgm.GaussianMixture(k, covariance_type=ct)
    sk.weights_, sk.means_, sk.precisions_cholesky_ = w, means, pc
    log_norm, log_resp = sk._estimate_log_prob_resp(X)
    mean_ll, our_log_resp = gm.e_step(X, w, means, pc, ct)
    assert_allclose(mean_ll, log_norm.mean(), rtol=1e-12)
    assert_allclose(our_log_resp, log_resp, rtol=1e-9, atol=1e-9)
    for chunk in (None, 7):  # the fitting loop's E-step, chunked or not
        data = gm.EMData(X, ct, chunk=chunk)
        resp_t = np.empty((k, n))
        assert_allclose(gm.em_e_step(data, w, means, pc, resp_t), log_norm.mean(),
                        rtol=1e-12)
        assert_allclose(resp_t.T, np.exp(log_resp), rtol=1e-9, atol=1e-12)
    assert_allclose(gm.weighted_log_prob(X, w, means, pc, ct),
                    sk._estimate_weighted_log_prob(X), rtol=1e-9)


# ------------------------------------------------------------------------------ M-step
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("resp_kind", ["soft", "data_points"])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_m_steps_match_sklearn(ct, resp_kind, offset):
    rng = np.random.default_rng(3)
    n, d, k = 400, 3, 4
    X = rng.normal(size=(n, d)) * np.array([1e-3, 1.0, 1e4]) + offset
    resp = _resp(rng, n, k, resp_kind)
    nk_e, means_e, cov_e = skgm._estimate_gaussian_parameters(X, resp, 1e-6, ct)
    for nk, means, cov in (gm.estimate_gaussian_parameters(X, resp, 1e-6, ct),
                           gm.em_m_step(gm.EMData(X, ct), np.ascontiguousarray(resp.T), 1e-6),
                           gm.em_m_step(gm.EMData(X, ct, chunk=13),
                                        np.ascontiguousarray(resp.T), 1e-6)):
        assert_allclose(nk, nk_e, rtol=1e-12)
        assert_allclose(means, means_e, rtol=1e-9, atol=1e-9 * np.abs(X).max())
        # relative to each feature pair's scale (features differ by 1e7 in scale)
        sd = X.std(axis=0)
        scale = {"full": sd[:, None] * sd, "tied": sd[:, None] * sd, "diag": sd ** 2,
                 "spherical": np.mean(sd ** 2)}[ct]
        assert_allclose(cov, cov_e, rtol=1e-7, atol=1e-9 * np.max(scale))


def test_m_step_float32_stays_float32():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    resp_t = rng.dirichlet(np.ones(2), size=300).T.astype(np.float32).copy()
    for ct in COV_TYPES:
        nk, means, cov = gm.em_m_step(gm.EMData(X, ct), resp_t, 1e-6)
        assert means.dtype == cov.dtype == np.float32
        nk64, means64, cov64 = gm.em_m_step(gm.EMData(X.astype(np.float64), ct),
                                            resp_t.astype(np.float64), 1e-6)
        assert_allclose(means, means64, atol=1e-5)
        assert_allclose(cov, cov64, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("ct", COV_TYPES)
def test_chunked_scoring_equals_unchunked(ct):
    rng = np.random.default_rng(5)
    k, d, n = 3, 4, 1001
    w, means, cov = _random_params(rng, k, d, ct)
    pc = gm.compute_precision_cholesky(cov, ct)
    X = rng.normal(scale=3.0, size=(n, d))
    full = gm.score_samples_chunked(X, w, means, pc, ct, chunk=n)
    for chunk in (1, 7, 256, None):
        assert_allclose(gm.score_samples_chunked(X, w, means, pc, ct, chunk=chunk), full,
                        rtol=1e-13)
        assert_allclose(gm.predict_proba_chunked(X, w, means, pc, ct, chunk=chunk),
                        gm.predict_proba_chunked(X, w, means, pc, ct, chunk=n), atol=1e-14)
    assert_allclose(full, gm.logsumexp_rows(gm.weighted_log_prob(X, w, means, pc, ct)),
                    rtol=1e-12)


def test_chunk_bound_covers_the_temporaries():
    # The chunk size is chosen so one chunk's buffers fit the budget: check the arithmetic.
    for ct in COV_TYPES:
        for k, d in ((1, 1), (3, 4), (8, 8), (8, 32), (16, 64)):
            rows = gm.gaussian.chunk_rows_t(k, d, ct, 8)
            proj = k * d if ct in ("full", "tied") else k
            used = rows * (8 * (gauss_mod.z_rows(d, ct) + proj) + 8 * (k + 4) + k)
            assert used <= gauss_mod.CHUNK_BYTES or rows == 256


# ------------------------------------------------------------------- criteria, k-means
@pytest.mark.parametrize("ct", COV_TYPES)
def test_n_parameters_bic_aic_match_sklearn(ct):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 3))
    sk = skgm.GaussianMixture(4, covariance_type=ct, random_state=0).fit(X)
    assert gm.n_parameters(4, 3, ct) == sk._n_parameters()
    ll = sk.score(X)
    assert_allclose(gm.bic(ll, 200, sk._n_parameters()), sk.bic(X), rtol=1e-12)
    assert_allclose(gm.aic(ll, 200, sk._n_parameters()), sk.aic(X), rtol=1e-12)


def test_kmeans_plusplus_draws_the_same_seeds_as_sklearn():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2000, 4)) + rng.integers(0, 4, size=(2000, 1)) * 5.0
    for seed in range(5):
        for k in (1, 3, 8):
            expected = sk_kmeans_plusplus(X, k, random_state=np.random.RandomState(seed))[1]
            got = gm.kmeans_plusplus(X, k, np.random.RandomState(seed))[1]
            assert_array_equal(got, expected)


def test_kmeans_matches_sklearn_kmeans():
    rng = np.random.default_rng(8)
    centers = rng.normal(scale=10.0, size=(5, 3))
    X = centers[rng.integers(5, size=3000)] + rng.normal(size=(3000, 3)) + 1e4
    for seed in range(3):
        km = KMeans(5, n_init=1, random_state=np.random.RandomState(seed)).fit(X)
        c, labels, inertia = gm.kmeans(X, 5, np.random.RandomState(seed))
        assert_array_equal(labels, km.labels_)
        assert_allclose(c, km.cluster_centers_, rtol=1e-10)
        assert_allclose(inertia, km.inertia_, rtol=1e-8)


def test_kmeans_handles_duplicates_and_empty_clusters():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 50, axis=0)
    c, labels, inertia = gm.kmeans(X, 3, np.random.RandomState(0))
    assert c.shape == (3, 2) and np.isfinite(c).all()
    assert inertia == pytest.approx(0.0, abs=1e-12)
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_em_module_exports_are_public():
    for name in ("GaussianScorer", "e_step", "estimate_gaussian_parameters",
                 "compute_precision_cholesky", "logsumexp_rows", "n_parameters", "kmeans",
                 "EMData", "em_e_step", "em_m_step", "score_samples_chunked",
                 "predict_proba_chunked"):
        assert hasattr(gm, name)
    assert em_mod.EM_CHUNK_BYTES <= gauss_mod.CHUNK_BYTES


# ----------------------------------------------------------- many np.interp at once
@PROPERTY_SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(2, 40),
       st.sampled_from(["normal", "ties", "tiny", "huge"]))
def test_row_interp_is_np_interp_per_row_bit_for_bit(seed, rows, n_knots, kind):
    """RowInterp (the drift tests' rank lookup) gives np.interp's values exactly: between,
    on, just beside and outside the knots, at tied knots, at +-inf and NaN."""
    from streamgmm.math.interp import RowInterp
    rng = np.random.default_rng(seed)
    scale = {"normal": 1.0, "ties": 1.0, "tiny": 1e-300, "huge": 1e300}[kind]
    xp = np.sort(rng.normal(size=(rows, n_knots)) * scale, axis=1)
    if kind == "ties":
        xp = np.sort(np.round(xp, 0), axis=1)
    fp = rng.normal(size=n_knots)
    x = np.concatenate([xp, np.nextafter(xp, np.inf), np.nextafter(xp, -np.inf),
                        rng.normal(size=(rows, 50)) * 2 * scale,
                        np.full((rows, 3), [np.inf, -np.inf, np.nan])], axis=1)
    got = RowInterp(xp, fp)(x)
    want = np.stack([np.interp(x[i], xp[i], fp) for i in range(rows)])
    assert got.tobytes() == want.tobytes()
