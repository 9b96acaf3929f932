"""EM steps for Gaussian mixtures: the M-step estimators and the E-step posteriors."""
import numpy as np

from .gaussian import CHUNK_BYTES, GaussianScorer, chunk_rows, chunk_rows_t, z_rows
from .logsumexp import logsumexp_rows


def estimate_gaussian_covariances_full(resp, X, nk, means, reg_covar):
    """Per-component covariance from centred data (stable for badly scaled inputs)."""
    k, d = means.shape
    covariances = np.empty((k, d, d), dtype=X.dtype)
    for i in range(k):
        diff = X - means[i]
        covariances[i] = (resp[:, i] * diff.T) @ diff / nk[i]
        covariances[i].flat[:: d + 1] += reg_covar
    return covariances


def estimate_gaussian_covariances_tied(resp, X, nk, means, reg_covar):
    """One covariance shared by all components."""
    avg_X2 = X.T @ X
    avg_means2 = (nk * means.T) @ means
    covariance = (avg_X2 - avg_means2) / nk.sum()
    covariance.flat[:: len(covariance) + 1] += reg_covar
    return covariance


def estimate_gaussian_covariances_diag(resp, X, nk, means, reg_covar):
    """Per-component diagonal covariances (variances per feature)."""
    avg_X2 = (resp.T @ (X * X)) / nk[:, None]
    return avg_X2 - means**2 + reg_covar


def estimate_gaussian_covariances_spherical(resp, X, nk, means, reg_covar):
    """Per-component single variance: the mean of the diagonal variances."""
    return estimate_gaussian_covariances_diag(resp, X, nk, means, reg_covar).mean(axis=1)


_COVARIANCE_ESTIMATORS = {
    "full": estimate_gaussian_covariances_full,
    "tied": estimate_gaussian_covariances_tied,
    "diag": estimate_gaussian_covariances_diag,
    "spherical": estimate_gaussian_covariances_spherical,
}


def estimate_gaussian_parameters(X, resp, reg_covar, covariance_type):
    """M-step: (unnormalised weights nk, means, covariances) from responsibilities."""
    nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
    means = (resp.T @ X) / nk[:, None]
    covariances = _COVARIANCE_ESTIMATORS[covariance_type](resp, X, nk, means, reg_covar)
    return nk, means, covariances


def weighted_log_prob(X, weights, means, precisions_cholesky, covariance_type):
    """log w_k + log N(x | mu_k, Sigma_k), shape (n, k), float64."""
    scorer = GaussianScorer(means, precisions_cholesky, covariance_type, X.dtype)
    out = scorer.log_prob(X)
    with np.errstate(divide="ignore"):
        out += np.log(np.asarray(weights, dtype=np.float64))
    return out


def e_step(X, weights, means, precisions_cholesky, covariance_type, chunk=None):
    """E-step: (mean log-likelihood, log responsibilities (n, k) float64), in row chunks.

    Only the (n, k) result is materialised; temporaries stay within one chunk's budget.
    """
    k, d = np.shape(means)
    n = X.shape[0]
    scorer = GaussianScorer(means, precisions_cholesky, covariance_type, X.dtype)
    with np.errstate(divide="ignore"):
        const = scorer.const + np.log(np.asarray(weights, dtype=np.float64))
    log_resp = np.empty((n, k), dtype=np.float64)
    total = 0.0
    step = chunk or chunk_rows(k, d, X.dtype.itemsize)
    for start in range(0, n, step):
        block = log_resp[start:start + step]
        block[:] = scorer.mahalanobis_sq(X[start:start + step])
        block *= -0.5
        block += const
        norm = logsumexp_rows(block)
        with np.errstate(invalid="ignore"):
            block -= norm[:, None]
        total += float(norm.sum())
    return total / n, log_resp


# exp() of anything below this is < 1e-304 of a column's largest term (exp(0) = 1), and libm
# takes a slow path (~4x) for results in or below the subnormal range. Such terms are either
# floored at this value (log-sums: they cannot change a sum that is >= 1) or set to -inf so
# that their posterior is an exact 0, as the plain exponential would underflow to.
_EXP_FLOOR = -700.0


def _log_resp_block(scorer, Z, const, work, lp, exact_zeros=True):
    """Weighted log-probabilities (k, m) in ``lp``; returns (column maxima, sum of exps).

    Leaves exp(lp - max) in ``lp``: divided by the sums they are the posteriors. A column
    whose terms are all -inf gets a sum of 0 (log-density -inf, posteriors NaN). With
    ``exact_zeros=False`` (log-densities only) terms below exp(-700) are floored there.
    """
    scorer.dist_t(Z, out=lp, work=work)
    lp *= -0.5
    lp += const[:, None]
    amax = lp.max(axis=0)
    empty = ~np.isfinite(amax)
    if empty.any():
        amax[empty] = 0.0
    lp -= amax
    if exact_zeros:
        np.putmask(lp, lp < _EXP_FLOOR, -np.inf)
    else:
        np.maximum(lp, _EXP_FLOOR, out=lp)
    np.exp(lp, out=lp)
    total = lp.sum(axis=0)
    if empty.any():
        total[empty] = 0.0
        lp[:, empty] = 0.0
    return amax, total


def _work_buffers(scorer, m, dtype):
    k, d = scorer.n_components, scorer.n_features
    proj = k * d if scorer.covariance_type in ("full", "tied") else k
    return (np.empty(proj * m, dtype=dtype), np.empty(k * m, dtype=np.float64),
            np.empty(scorer.n_z_rows * m, dtype=dtype))


def _compute_dtype(X, means):
    """float32 only when both the data and the parameters are float32 (else float64)."""
    dt = np.result_type(X.dtype, np.asarray(means).dtype)
    return np.dtype(np.float32) if dt == np.float32 else np.dtype(np.float64)


def _chunked_log_resp(X, weights, means, precisions_cholesky, covariance_type, chunk,
                      exact_zeros):
    """Yield ``(start, stop, amax, total, lp)`` for each row chunk of X: the shifted
    exponentials ``lp`` (k, m) of the weighted log-probabilities, their column maxima and sums.

    The one chunked scoring pass behind ``score_samples_chunked`` and
    ``predict_proba_chunked``; its buffers are allocated once and reused for every chunk.
    """
    X = np.asarray(X)
    k, d = np.shape(means)
    n = X.shape[0]
    dtype = _compute_dtype(X, means)
    scorer = GaussianScorer(means, precisions_cholesky, covariance_type, dtype)
    with np.errstate(divide="ignore"):
        const = scorer.const + np.log(np.asarray(weights, dtype=np.float64))
    step = max(1, min(n, chunk or chunk_rows_t(k, d, covariance_type, dtype.itemsize)))
    work, lp_buf, z_buf = _work_buffers(scorer, step, dtype)
    for start in range(0, n, step):
        m = min(step, n - start)
        Z = scorer.prepare(X[start:start + m], out=z_buf[:scorer.n_z_rows * m].reshape(-1, m))
        lp = lp_buf[:k * m].reshape(k, m)
        amax, total = _log_resp_block(scorer, Z, const, work, lp, exact_zeros=exact_zeros)
        yield start, start + m, amax, total, lp


def score_samples_chunked(X, weights, means, precisions_cholesky, covariance_type, chunk=None):
    """Log-density of each row under the mixture, computed chunk by chunk (bounded memory).

    Extra memory beyond the (n,) float64 result is at most ``CHUNK_BYTES`` (8 MiB) plus the
    O(k d^2) parameters, whatever n (see ``chunk_rows_t``).
    """
    out = np.empty(np.shape(X)[0], dtype=np.float64)
    for start, stop, amax, total, _ in _chunked_log_resp(
            X, weights, means, precisions_cholesky, covariance_type, chunk, exact_zeros=False):
        res = out[start:stop]
        with np.errstate(divide="ignore"):
            np.log(total, out=res)
        res += amax
    return out


def predict_proba_chunked(X, weights, means, precisions_cholesky, covariance_type, chunk=None):
    """Posterior probability of each component for each row, chunk by chunk.

    Extra memory beyond the (n, k) float64 result is at most ``CHUNK_BYTES``.
    """
    out = np.empty((np.shape(X)[0], np.shape(means)[0]), dtype=np.float64)
    for start, stop, _, total, lp in _chunked_log_resp(
            X, weights, means, precisions_cholesky, covariance_type, chunk, exact_zeros=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(lp, total, out=out[start:stop].T)
    return out


# ------------------------------------------------------------------- the fitting EM loop
class EMData:
    """Training data laid out once for repeated EM steps (``em_e_step`` / ``em_m_step``).

    ``Z`` holds the data shifted by its own mean and transposed (features in rows, samples in
    columns; X's dtype), a row of ones, and for 'diag'/'spherical' the squared shifted
    features. Every EM iteration then works on long contiguous rows, and the moment-based
    estimators ('tied', 'diag') see centred data, which cuts their cancellation error.
    Memory: ``z_rows(d, covariance_type) * n`` values of X's dtype (about the size of X, or
    twice it for 'diag'/'spherical'), plus the constant d x d Gram matrix for 'tied'.
    """

    def __init__(self, X, covariance_type, chunk=None):
        X = np.asarray(X)
        n, d = X.shape
        self.dtype = X.dtype
        self.n_samples, self.n_features = n, d
        self.covariance_type = covariance_type
        self.shift = X.mean(axis=0, dtype=np.float64)
        Z = np.empty((z_rows(d, covariance_type), n), dtype=X.dtype)
        np.subtract(X.T, self.shift.astype(X.dtype)[:, None], out=Z[:d])
        Z[d] = 1.0
        if covariance_type in ("diag", "spherical"):
            np.square(Z[:d], out=Z[d + 1:])
        self.Z = Z
        self.XT = Z[:d]
        self.gram = self.XT @ self.XT.T if covariance_type == "tied" else None
        self.chunk = chunk

    def chunk_rows(self, n_components):
        """Rows per E-step chunk."""
        step = self.chunk or chunk_rows_t(n_components, self.n_features, self.covariance_type,
                                          self.dtype.itemsize, budget=EM_CHUNK_BYTES)
        return max(1, min(self.n_samples, step))

    def m_step_chunk_rows(self, n_components):
        """Rows per M-step chunk: 8192 (measured best for the per-component rank-m updates
        at d=8..32, k=8), fewer if the (k, d, rows) centred-data buffer would pass 16 MiB."""
        per_row = self.dtype.itemsize * n_components * (self.n_features + 1)
        step = self.chunk or min(8192, max(256, M_STEP_CHUNK_BYTES // per_row))
        return max(1, min(self.n_samples, step))


# Work budgets of one EM chunk: E-step projections (as for scoring) and M-step centred data.
EM_CHUNK_BYTES = CHUNK_BYTES
M_STEP_CHUNK_BYTES = 2 * CHUNK_BYTES


def em_e_step(data, weights, means, precisions_cholesky, resp_t):
    """E-step on ``EMData``: writes the responsibilities transposed into ``resp_t`` (k, n).

    Returns the mean log-likelihood (float64) of the data under the given parameters, which
    is scikit-learn's lower bound. The posteriors are the log-sum-exp's own exponentials
    divided by their sums, so no log-responsibility array is formed and exponentiated again.
    """
    k = np.shape(means)[0]
    n = data.n_samples
    scorer = GaussianScorer(means, precisions_cholesky, data.covariance_type, data.dtype,
                            shift=data.shift)
    with np.errstate(divide="ignore"):
        const = scorer.const + np.log(np.asarray(weights, dtype=np.float64))
    step = data.chunk_rows(k)
    work, lp_buf, _ = _work_buffers(scorer, step, data.dtype)
    total_ll = 0.0
    for start in range(0, n, step):
        m = min(step, n - start)
        lp = lp_buf[:k * m].reshape(k, m)
        amax, total = _log_resp_block(scorer, data.Z[:, start:start + m], const, work, lp)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(lp, total, out=resp_t[:, start:start + m])
            total_ll += float(np.sum(np.log(total))) + float(np.sum(amax))
    return total_ll / n


def em_m_step(data, resp_t, reg_covar):
    """M-step on ``EMData`` from transposed responsibilities ``resp_t`` (k, n).

    Returns ``(nk, means, covariances)`` exactly as ``estimate_gaussian_parameters`` (same
    estimators as scikit-learn, ``nk`` unnormalised). 'full' covariances are accumulated chunk
    by chunk from sqrt(resp)-weighted, per-component centred data with one symmetric product
    per component (numerically the same centred sum as scikit-learn's, computed in cache);
    'tied' uses the data's Gram matrix computed once per fit.

    The statistics are taken on data shifted by s (``data.shift``) and mapped back with
    scikit-learn's own algebra: with r_k = sum_i resp_ik and nk = r_k + 10 eps, its mean is
    sum_i resp_ik x_i / nk = m_k + s q_k (m_k the shifted mean, q_k = r_k / nk), so a component
    with no responsibility gets mean 0, as in scikit-learn, and the others m_k + s (to within
    an ulp).
    """
    ct = data.covariance_type
    dtype = data.dtype
    k = resp_t.shape[0]
    d = data.n_features
    s = data.shift.astype(dtype)
    r = resp_t.sum(axis=1)
    nk = r + 10 * np.finfo(dtype).eps
    q = r / nk
    means_c = (resp_t @ data.XT.T) / nk[:, None]  # m_k: sum resp x_c / nk
    means = means_c + q[:, None] * s
    mc = means_c + (q - 1)[:, None] * s  # means - s, without the rounding of that difference
    if ct == "full":
        acc = np.zeros((k, d, d), dtype=np.float64)
        step = data.m_step_chunk_rows(k)
        dbuf = np.empty(k * d * step, dtype=dtype)
        sbuf = np.empty(k * step, dtype=dtype)
        mc3 = mc[:, :, None]
        for start in range(0, data.n_samples, step):
            m = min(step, data.n_samples - start)
            D = dbuf[:k * d * m].reshape(k, d, m)
            np.subtract(data.XT[None, :, start:start + m], mc3, out=D)
            sr = np.sqrt(resp_t[:, start:start + m], out=sbuf[:k * m].reshape(k, m))
            D *= sr[:, None, :]
            acc += np.matmul(D, D.transpose(0, 2, 1))
        acc /= nk[:, None, None]
        covariances = acc.astype(dtype, copy=False)
        for c in covariances:
            c.flat[:: d + 1] += reg_covar
    elif ct == "tied":
        # scikit-learn: (X^T X - sum_k nk mu_k mu_k^T) / sum(nk), with the Gram matrix over
        # all rows whatever their responsibilities sum to (at a data-point start most rows
        # have none). Exactly the same quantity around s, with y = x - s, c_k = mu_k - s,
        # rho_i = sum_k resp_ik and e = sum_k (nk - r_k) (the 10 eps terms):
        #   Y^T Y - sum nk c c^T + s b^T + b s^T + (sum_i (1 - rho_i) + e) s s^T,
        #   b = sum_i (1 - rho_i) y_i.
        # Once every row's responsibilities sum to one the offset terms vanish, instead of
        # cancelling between two numbers of size n s^2 as in the direct formula.
        nk_sum = nk.sum()
        covariances = data.gram - (nk * mc.T) @ mc
        rest = 1 - resp_t.sum(axis=0)
        rest[np.abs(rest) <= 64 * k * np.finfo(dtype).eps] = 0  # normalised rows: exactly 1
        if np.any(rest):
            b = data.XT @ rest
            covariances += np.outer(s, b) + np.outer(b, s)
        covariances += (rest.sum(dtype=np.float64) + np.sum(nk - r)) * np.outer(s, s)
        covariances /= nk_sum
        covariances.flat[:: d + 1] += reg_covar
    else:
        # Weighted variances around each component's mean from the shifted second moments,
        # sum_i resp_ik (y_i - c_k)^2 / nk = A_k - 2 c_k m_k + q_k c_k^2 (A_k = sum resp y^2 / nk,
        # one matrix product). Where that cancels too much (a component far from the data's
        # centre relative to its width, or collapsed onto one point: variance below
        # ``_DIAG_RECOMPUTE`` times A_k), those components are recomputed exactly from
        # per-component centred data, so a collapsed component gets its exact zero variance.
        # (scikit-learn's sum resp x^2 / nk - mu^2 is the same up to q_k (1 - q_k) mu_k^2,
        # ~1e-16 mu_k^2 / nk, and cancels on the raw, unshifted data.)
        avg_y2 = (resp_t @ data.Z[d + 1:].T) / nk[:, None]
        covariances = avg_y2 - 2 * mc * means_c + q[:, None] * (mc * mc)
        suspect = np.flatnonzero(np.any(covariances <= _DIAG_RECOMPUTE[dtype.char] * avg_y2,
                                        axis=1))
        if suspect.size:
            covariances[suspect] = (_centred_variances(data, resp_t, mc, suspect)
                                    / nk[suspect, None])
        covariances += reg_covar
        if ct == "spherical":
            covariances = covariances.mean(axis=1)
    return nk, means, covariances


# Recompute a diagonal variance exactly when the moment formula's relative rounding error
# (about 4 eps A / var) could exceed ~1e-9 in float64 (~1e-4 in float32).
_DIAG_RECOMPUTE = {"d": 1e-6, "f": 5e-3}


def _centred_variances(data, resp_t, mc, comps):
    """sum_i resp_ik (y_i - c_k)^2 for the components ``comps``, chunk by chunk (float64)."""
    d = data.n_features
    kk = len(comps)
    acc = np.zeros((kk, d), dtype=np.float64)
    step = data.m_step_chunk_rows(kk)
    dbuf = np.empty(kk * d * step, dtype=data.dtype)
    mc3 = mc[comps][:, :, None]
    r = resp_t[comps]
    for start in range(0, data.n_samples, step):
        m = min(step, data.n_samples - start)
        D = dbuf[:kk * d * m].reshape(kk, d, m)
        np.subtract(data.XT[None, :, start:start + m], mc3, out=D)
        np.square(D, out=D)
        for j in range(kk):
            acc[j] += D[j] @ r[j, start:start + m]
    return acc
