"""EM steps for Gaussian mixtures: the M-step estimators and the E-step posteriors."""
import numpy as np

from .gaussian import GaussianScorer, chunk_rows
from .logsumexp import log_normalize_rows, logsumexp_rows


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


def score_samples_chunked(X, weights, means, precisions_cholesky, covariance_type, chunk=None):
    """Log-density of each row under the mixture, computed chunk by chunk (bounded memory)."""
    k, d = np.shape(means)
    scorer = GaussianScorer(means, precisions_cholesky, covariance_type, X.dtype)
    with np.errstate(divide="ignore"):
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    const = scorer.const + log_w
    n = X.shape[0]
    out = np.empty(n, dtype=np.float64)
    step = chunk or chunk_rows(k, d, X.dtype.itemsize)
    for start in range(0, n, step):
        block = scorer.mahalanobis_sq(X[start:start + step])
        block *= -0.5
        block += const
        logsumexp_rows(block, out=out[start:start + step])
    return out


def predict_proba_chunked(X, weights, means, precisions_cholesky, covariance_type, chunk=None):
    """Posterior probability of each component for each row, chunk by chunk."""
    k, d = np.shape(means)
    n = X.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    step = chunk or chunk_rows(k, d, X.dtype.itemsize)
    for start in range(0, n, step):
        wlp = weighted_log_prob(X[start:start + step], weights, means, precisions_cholesky,
                                covariance_type)
        _, log_resp = log_normalize_rows(wlp)
        np.exp(log_resp, out=out[start:start + step])
    return out
