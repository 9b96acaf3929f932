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

# Extra memory budget of one scoring chunk (score_samples, predict_proba); see ``chunk_rows_t``.
CHUNK_BYTES = 8 * 1024 * 1024
# ONE_ROW: a single row is scored as two identical rows. With one row numpy's matmul takes
# BLAS's matrix-vector path, whose sums can differ from the matrix-matrix path's in the last
# bit, so a record scored alone would not score exactly as in a batch (measured: diagonal
# members, 1 ulp); fleet members that score it with the same model version must agree.


def _ill_defined(dtype):
    msg = ILL_DEFINED_MSG + (FLOAT32_HINT if np.dtype(dtype) == np.float32 else "")
    return ValueError(msg)


def compute_precision_cholesky(covariances, covariance_type):
    """Cholesky factors of the precisions from covariances; raises on non-PD covariances.

    For each covariance C = L L^T (L lower), the factor is U = inv(L)^T, upper triangular with
    U U^T = inv(C). LAPACK's potrf/trtri are called directly: the matrices are small, and the
    generic wrappers' checks and BLAS-3 dispatch cost more than the factorisation itself.
    """
    covariances = np.asarray(covariances)
    dtype = covariances.dtype
    if covariance_type in ("full", "tied"):
        if not np.all(np.isfinite(covariances)):
            raise _ill_defined(dtype)
        mats = covariances[None] if covariance_type == "tied" else covariances
        potrf, trtri = linalg.lapack.get_lapack_funcs(("potrf", "trtri"), (mats,))
        out = np.empty_like(mats)
        for i, cov in enumerate(mats):
            cov_chol, info = potrf(cov, lower=1, clean=1)
            if info != 0:
                raise _ill_defined(dtype)
            inv, info = trtri(cov_chol, lower=1)
            if info != 0:
                raise _ill_defined(dtype)
            out[i] = inv.T
        return out[0] if covariance_type == "tied" else out
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
    """Rows per chunk so one chunk's row-major temporaries stay within ``budget`` bytes."""
    per_row = itemsize * (n_components * (n_features + 3) + n_features)
    return int(max(64, budget // per_row))


def z_rows(n_features, covariance_type):
    """Rows of the transposed design matrix Z used by ``GaussianScorer.dist_t``."""
    return n_features + 1 if covariance_type in ("full", "tied") else 2 * n_features + 1


def chunk_rows_t(n_components, n_features, covariance_type, itemsize=8, budget=CHUNK_BYTES):
    """Rows per chunk of the transposed kernels so their temporaries stay within ``budget``.

    Per row: Z's column (``z_rows`` values, X's dtype), the projections (k*d values for
    'full'/'tied', k for the others, X's dtype), float64 work (k log-densities plus a few
    per-row scalars) and a k-byte mask. The bound holds for any number of chunks, so scoring
    n rows needs ``budget`` bytes on top of its output (as long as 256 rows fit in it, i.e.
    up to k*d of about 4,000 at 8 MiB).
    """
    k, d = n_components, n_features
    proj = k * d if covariance_type in ("full", "tied") else k
    per_row = itemsize * (z_rows(d, covariance_type) + proj) + 8 * (k + 4) + k
    return int(max(256, budget // per_row))


class GaussianScorer:
    """Precomputed, vectorised per-component squared Mahalanobis distances.

    Two layouts:

    * row-major ``mahalanobis_sq(X) -> (n, k)``: all k Cholesky factors concatenated into one
      (d, k*d) matrix, one matrix product of the data with every component's factor;
    * transposed ``dist_t(Z) -> (k, m)`` on ``Z = prepare(X)``, the shifted data transposed
      (features in rows, samples in columns) with a row of ones (and, for 'diag'/'spherical',
      the squared features). The mean offsets are folded into the matrix product through the
      row of ones, and every later reduction runs along the long contiguous sample axis. This
      is the layout of the EM loop and of the chunked scoring functions.

    ``shift`` (d,) is subtracted from the data before any product (default: the mean of the
    component means). Distances do not depend on it; it only keeps the cancellation in
    ``x U - mu U`` small when the data sit far from the origin.
    """

    def __init__(self, means, precisions_cholesky, covariance_type, dtype=np.float64,
                 shift=None):
        self.covariance_type = covariance_type
        self.dtype = np.dtype(dtype)
        means = np.asarray(means, dtype=np.float64)
        pc = np.asarray(precisions_cholesky, dtype=np.float64)
        k, d = means.shape
        self.n_components, self.n_features = k, d
        self._means, self._pc = means, pc
        self.log_det = log_det_cholesky(pc, covariance_type, d) * np.ones(k)
        self.const = -0.5 * d * np.log(2 * np.pi) + self.log_det  # (k,) float64
        self.shift = (means.mean(axis=0) if shift is None
                      else np.asarray(shift, dtype=np.float64))
        mc = means - self.shift
        if covariance_type in ("full", "tied"):
            pcs = np.broadcast_to(pc, (k, d, d)) if covariance_type == "tied" else pc
            wt = np.empty((k * d, d + 1))
            wt[:, :d] = np.transpose(pcs, (0, 2, 1)).reshape(k * d, d)  # row (j, e) = U_j[:, e]
            wt[:, d] = -np.einsum("kd,kde->ke", mc, pcs).reshape(k * d)
        else:
            prec = pc * pc
            if covariance_type == "spherical":
                prec = np.repeat(prec[:, None], d, axis=1)
            wt = np.empty((k, 2 * d + 1))
            wt[:, :d] = -2.0 * mc * prec
            wt[:, d] = np.sum(mc * mc * prec, axis=1)
            wt[:, d + 1:] = prec
        self.Wt = np.ascontiguousarray(wt, dtype=self.dtype)
        self._row_major = None

    # ---------------------------------------------------------------- transposed layout
    @property
    def n_z_rows(self):
        return z_rows(self.n_features, self.covariance_type)

    def prepare(self, X, out=None):
        """Z for ``dist_t``: (X - shift)^T, a row of ones, and ('diag'/'spherical') the squares."""
        X = np.asarray(X)
        d = self.n_features
        m = X.shape[0]
        if out is None:
            out = np.empty((self.n_z_rows, m), dtype=self.dtype)
        np.subtract(X.T, self.shift.astype(self.dtype)[:, None], out=out[:d])
        out[d] = 1.0
        if self.covariance_type in ("diag", "spherical"):
            np.square(out[:d], out=out[d + 1:])
        return out

    def dist_t(self, Z, out=None, work=None):
        """Squared Mahalanobis distances (k, m) float64 from ``Z`` (n_z_rows, m).

        ``work``: optional flat scratch of at least k*d*m (full/tied) or k*m values of the
        scorer's dtype, reused across chunks to avoid allocations.
        """
        k, d = self.n_components, self.n_features
        m = Z.shape[1]
        if out is None:
            out = np.empty((k, m), dtype=np.float64)
        if m == 1:  # as two columns: see ONE_ROW
            out[:] = self.dist_t(np.repeat(Z, 2, axis=1))[:, :1]
            return out
        if self.covariance_type in ("full", "tied"):
            y = (np.empty(k * d * m, dtype=self.dtype) if work is None
                 else work[:k * d * m]).reshape(k * d, m)
            np.matmul(self.Wt, Z, out=y)
            y3 = y.reshape(k, d, m)
            if self.dtype == np.float64:  # square and sum in one pass (same sums, faster)
                np.einsum("kdm,kdm->km", y3, y3, out=out)
            else:  # float32 projections, float64 sums
                np.square(y, out=y)
                np.add.reduce(y3, axis=1, out=out, dtype=np.float64)
            return out
        if self.dtype == np.float64:
            np.matmul(self.Wt, Z, out=out)
        else:
            y = (np.empty(k * m, dtype=self.dtype) if work is None
                 else work[:k * m]).reshape(k, m)
            np.matmul(self.Wt, Z, out=y)
            out[...] = y
        np.maximum(out, 0.0, out=out)
        return out

    # ----------------------------------------------------------------- row-major layout
    def _row_major_params(self):
        if self._row_major is None:
            k, d = self.n_components, self.n_features
            means, pc = self._means, self._pc
            if self.covariance_type in ("full", "tied"):
                if self.covariance_type == "tied":
                    pc = np.broadcast_to(pc, (k, d, d))
                W = np.ascontiguousarray(
                    np.transpose(pc, (1, 0, 2)).reshape(d, k * d), dtype=self.dtype)
                b = np.einsum("kd,kde->ke", means, pc).reshape(k * d).astype(self.dtype)
                self._row_major = (W, b, np.ones(d, dtype=self.dtype))
            else:
                prec = pc * pc  # (k, d) or (k,)
                if self.covariance_type == "spherical":
                    prec = np.repeat(prec[:, None], d, axis=1)
                A = np.ascontiguousarray((-2.0 * means * prec).T, dtype=self.dtype)  # (d, k)
                P = np.ascontiguousarray(prec.T, dtype=self.dtype)  # (d, k)
                c = np.sum(means * means * prec, axis=1)  # (k,) float64
                self._row_major = (A, P, c)
        return self._row_major

    def mahalanobis_sq(self, X):
        """Squared Mahalanobis distance of every row to every component, float64 (n, k)."""
        X = np.asarray(X, dtype=self.dtype)
        n, k, d = X.shape[0], self.n_components, self.n_features
        if n == 1:  # as two rows: see ONE_ROW
            return self.mahalanobis_sq(np.repeat(X, 2, axis=0))[:1]
        if self.covariance_type in ("full", "tied"):
            W, b, ones = self._row_major_params()
            Y = X @ W
            Y -= b
            np.square(Y, out=Y)
            dist = (Y.reshape(n * k, d) @ ones).reshape(n, k)
            return dist.astype(np.float64, copy=False)
        A, P, c = self._row_major_params()
        dist = X @ A
        dist += np.square(X) @ P
        dist = dist.astype(np.float64, copy=False)
        dist += c
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
