"""Gaussian log-densities for the four covariance types, via Cholesky factors of precisions.

Conventions follow scikit-learn's mixture module: ``precisions_cholesky`` holds, per component,
an upper-triangular U with ``U U^T = precision`` ('full': (k, d, d), 'tied': (d, d), 'diag':
(k, d), 'spherical': (k,)). Working with U avoids inverting covariances at scoring time and makes
the log-determinant a sum of logs of U's diagonal.
"""
import numpy as np
from scipy import linalg

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

ILL_DEFINED_MSG = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)
FLOAT32_HINT = (
    " The numerical accuracy can also be improved by passing float64 data instead of float32."
)

# Extra memory budget of one scoring chunk; see ``chunk_rows``.
CHUNK_BYTES = 8 * 1024 * 1024


def _ill_defined(dtype):
    msg = ILL_DEFINED_MSG + (FLOAT32_HINT if np.dtype(dtype) == np.float32 else "")
    return ValueError(msg)


def compute_precision_cholesky(covariances, covariance_type):
    """Cholesky factors of the precisions from covariances; raises on non-PD covariances."""
    dtype = covariances.dtype
    if covariance_type == "full":
        k, d, _ = covariances.shape
        out = np.empty((k, d, d), dtype=dtype)
        eye = np.eye(d, dtype=dtype)
        for i, cov in enumerate(covariances):
            try:
                cov_chol = linalg.cholesky(cov, lower=True)
            except linalg.LinAlgError:
                raise _ill_defined(dtype) from None
            out[i] = linalg.solve_triangular(cov_chol, eye, lower=True).T
        return out
    if covariance_type == "tied":
        d = covariances.shape[0]
        try:
            cov_chol = linalg.cholesky(covariances, lower=True)
        except linalg.LinAlgError:
            raise _ill_defined(dtype) from None
        return linalg.solve_triangular(cov_chol, np.eye(d, dtype=dtype), lower=True).T
    if np.any(np.less_equal(covariances, 0.0)) or not np.all(np.isfinite(covariances)):
        raise _ill_defined(dtype)
    return 1.0 / np.sqrt(covariances)


def _flipudlr(a):
    return np.flip(a, axis=(-2, -1))


def precision_cholesky_from_precisions(precisions, covariance_type):
    """Upper Cholesky factors U (U U^T = precision) straight from precision matrices."""
    if covariance_type == "full":
        return np.stack([_upper_factor(p) for p in precisions])
    if covariance_type == "tied":
        return _upper_factor(precisions)
    return np.sqrt(precisions)


def _upper_factor(precision):
    # U with U U^T = P, U upper triangular: flip, lower-Cholesky, flip back.
    return _flipudlr(linalg.cholesky(_flipudlr(precision), lower=True))


def precisions_from_cholesky(precisions_cholesky, covariance_type):
    """Precision matrices (or vectors) U U^T from their Cholesky factors."""
    pc = precisions_cholesky
    if covariance_type == "full":
        return pc @ np.swapaxes(pc, 1, 2)
    if covariance_type == "tied":
        return pc @ pc.T
    return pc * pc


def covariances_from_cholesky(precisions_cholesky, covariance_type):
    """Covariances from precision Cholesky factors: inv(U U^T) = inv(U)^T inv(U)."""
    pc = precisions_cholesky
    if covariance_type == "full":
        out = np.empty_like(pc)
        eye = np.eye(pc.shape[1], dtype=pc.dtype)
        for i, u in enumerate(pc):
            u_inv = linalg.solve_triangular(u, eye, lower=False)
            out[i] = u_inv.T @ u_inv
        return out
    if covariance_type == "tied":
        u_inv = linalg.solve_triangular(pc, np.eye(pc.shape[0], dtype=pc.dtype), lower=False)
        return u_inv.T @ u_inv
    return 1.0 / (pc * pc)


def log_det_cholesky(precisions_cholesky, covariance_type, n_features):
    """log det of each component's precision Cholesky factor (half the precision's log det)."""
    pc = precisions_cholesky
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(pc, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(pc)))
    if covariance_type == "diag":
        return np.sum(np.log(pc), axis=1)
    return n_features * np.log(pc)


def chunk_rows(n_components, n_features, itemsize=8, budget=CHUNK_BYTES):
    """Rows per chunk so one chunk's temporaries stay within ``budget`` bytes."""
    per_row = itemsize * (n_components * (n_features + 3) + n_features)
    return int(max(64, budget // per_row))


class GaussianScorer:
    """Precomputed, vectorised per-component squared Mahalanobis distances.

    For 'full' all k Cholesky factors are concatenated into one (d, k*d) matrix, so one matrix
    product of the data with every component's factor does the heavy lifting.
    """

    def __init__(self, means, precisions_cholesky, covariance_type, dtype=np.float64):
        self.covariance_type = covariance_type
        self.dtype = np.dtype(dtype)
        means = np.asarray(means, dtype=np.float64)
        pc = np.asarray(precisions_cholesky, dtype=np.float64)
        k, d = means.shape
        self.n_components, self.n_features = k, d
        self.log_det = log_det_cholesky(pc, covariance_type, d) * np.ones(k)
        self.const = -0.5 * d * np.log(2 * np.pi) + self.log_det  # (k,) float64
        if covariance_type in ("full", "tied"):
            if covariance_type == "tied":
                pc = np.broadcast_to(pc, (k, d, d))
            self.W = np.ascontiguousarray(
                np.transpose(pc, (1, 0, 2)).reshape(d, k * d), dtype=self.dtype)
            self.b = np.einsum("kd,kde->ke", means, pc).reshape(k * d).astype(self.dtype)
            self.ones = np.ones(d, dtype=self.dtype)
        else:
            prec = pc * pc  # (k, d) or (k,)
            if covariance_type == "spherical":
                prec = np.repeat(prec[:, None], d, axis=1)
            self.A = np.ascontiguousarray((-2.0 * means * prec).T, dtype=self.dtype)  # (d, k)
            self.P = np.ascontiguousarray(prec.T, dtype=self.dtype)  # (d, k)
            self.c = np.sum(means * means * prec, axis=1)  # (k,) float64

    def mahalanobis_sq(self, X):
        """Squared Mahalanobis distance of every row to every component, float64 (n, k)."""
        X = np.asarray(X, dtype=self.dtype)
        n, k, d = X.shape[0], self.n_components, self.n_features
        if self.covariance_type in ("full", "tied"):
            Y = X @ self.W
            Y -= self.b
            np.square(Y, out=Y)
            dist = (Y.reshape(n * k, d) @ self.ones).reshape(n, k)
            return dist.astype(np.float64, copy=False)
        dist = X @ self.A
        dist += np.square(X) @ self.P
        dist = dist.astype(np.float64, copy=False)
        dist += self.c
        np.maximum(dist, 0.0, out=dist)
        return dist

    def log_prob(self, X):
        """Per-component Gaussian log-density log N(x | mu_k, Sigma_k), float64 (n, k)."""
        out = self.mahalanobis_sq(X)
        out *= -0.5
        out += self.const
        return out


def estimate_log_gaussian_prob(X, means, precisions_cholesky, covariance_type):
    """log N(x_i | mu_k, Sigma_k) for all rows and components, shape (n, k), float64."""
    return GaussianScorer(means, precisions_cholesky, covariance_type, X.dtype).log_prob(X)
