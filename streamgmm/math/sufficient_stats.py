"""Sufficient statistics of a Gaussian mixture for online (stepwise) EM.

Pure functions, no state. The online model keeps, per component k, the *per-record averages*

    s0_k = mean_i r_ik                      (share of the responsibility)
    s1_k = mean_i r_ik x_i                  (responsibility-weighted first moment)
    s2_k = mean_i r_ik x_i x_i^T            (second moment: full x x^T, diag x**2, pooled for tied)

and blends them with a mini-batch's averages: s <- (1 - eta) s + eta s_hat. Every such blend is a
convex combination, so the statistics stay a weighted average of records (s0 sums to one).

**Stored form.** Raw second moments lose every significant digit when a component's spread is
small next to its distance from the origin (for instance a timestamp-like feature). So
``SufficientStats`` holds the same information in centred form, which is exactly equivalent and
numerically stable (Chan/Welford parallel update):

    s0       (k,)                      s0_k
    means    (k, d)                    mu_k = s1_k / s0_k
    scatter  full (k, d, d)            C_k = s2_k - s0_k mu_k mu_k^T  = s0_k * Sigma_k
             tied (d, d)               sum_k C_k                      = sum_k s0_k * Sigma_tied
             diag (k, d)               diagonal of C_k
             spherical (k,)            trace of C_k

(covariances without ``reg_covar``). ``to_raw_moments`` gives back (s0, s1, s2). Blending in this
form (``blend_statistics``) is algebraically identical to blending the raw moments:
with a = (1-eta) s0, b = eta s0_hat, mu' = (a mu + b mu_hat)/(a+b) and
C' = (1-eta) C + eta C_hat + a b/(a+b) (mu - mu_hat)(mu - mu_hat)^T.
"""
from typing import NamedTuple

import numpy as np

from .gaussian import CHUNK_BYTES, COVARIANCE_TYPES, GaussianScorer
from .robust import t_weights

STEP_TYPES = ("stepwise", "exponential")

# Components whose share of the responsibility falls below this are always re-seeded by the
# online model, whatever ``weight_floor`` says: below it the statistics drift towards underflow.
MIN_WEIGHT = 1e-10

_TINY = np.finfo(np.float64).tiny
_EPS = np.finfo(np.float64).eps
_MIN_VARIANCE = 1e-150
# batch_statistics recomputes a component exactly when the fast path's subtraction is this many
# times larger than its result (about 6 significant digits lost).
_CANCEL = 1e6
# First diagonal jitter, relative to the mean variance, for a covariance that is not PD.
_JITTER = 1e-9
# A feature must keep this share of its variance given the others (see _ill_conditioned).
_MIN_CONDITIONAL = 1e-12


class SufficientStats(NamedTuple):
    """Per-record-averaged sufficient statistics in centred form (see the module docstring)."""

    s0: np.ndarray
    means: np.ndarray
    scatter: np.ndarray


# ------------------------------------------------------------------------------ batch statistics
def batch_statistics(X, resp, covariance_type, n_records=None, exact=False):
    """Statistics of one batch from its responsibilities, averaged per record.

    ``X`` (n, d), ``resp`` (n, k); rows of ``resp`` normally sum to one (rows of zeros drop a
    record). The averages divide by ``n_records`` (default n). Computed in float64.

    Fast path: the data are centred on the batch mean and every component's second moments
    come from one matrix product, resp^T @ [x_i x_j for i <= j] (the upper triangle only), minus
    n_k m_k m_k^T. That subtraction cancels digits when a component is tiny next to its distance
    from the batch mean, so any component that would lose more than ~6 of float64's 16 digits
    (and everything when ``exact=True``) is recomputed exactly from per-component centred data.
    So is every component of a batch too wide for the triangle's products (TRIANGLE_BYTES).
    """
    X = np.asarray(X, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    n, d = X.shape
    k = resp.shape[1]
    n = n if n_records is None else n_records
    if n == 0:
        return empty_statistics(k, d, covariance_type)
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"Unknown covariance_type {covariance_type!r}; expected one of "
                         f"{list(COVARIANCE_TYPES)}.")
    ones = np.ones(X.shape[0])
    nk = ones @ resp
    shift = (ones @ X) / X.shape[0]
    Xc = X - shift
    mc = (resp.T @ Xc) / np.maximum(nk, _TINY)[:, None]
    means = mc + shift
    if exact or (covariance_type == "full"
                 and d * (d + 1) // 2 * X.shape[0] * 8 > TRIANGLE_BYTES):
        redo = np.ones(k, dtype=bool)
    elif covariance_type == "full":
        iu0, iu1, dpos = _triu(d)
        XcT = np.ascontiguousarray(Xc.T)
        tri = (XcT[iu0] * XcT[iu1]) @ resp                    # (d(d+1)/2, k)
        corr = (mc[:, iu0] * mc[:, iu1]).T * nk
        tri -= corr
        bad = corr[dpos] > _CANCEL * tri[dpos]   # a negative diagonal counts as bad too
        redo = bad.any(axis=0) if bad.any() else None
        scatter = np.empty((k, d, d))
        tri = tri.T
        scatter[:, iu0, iu1] = tri
        scatter[:, iu1, iu0] = tri
    elif covariance_type == "tied":
        scatter = Xc.T @ Xc
        corr = (nk[:, None] * mc).T @ mc
        scatter -= corr
        scatter = 0.5 * (scatter + scatter.T)
        redo = np.full(k, bool(np.any(np.diag(corr) > _CANCEL * np.maximum(np.diag(scatter),
                                                                              0.0))))
    else:
        sq = resp.T @ (Xc * Xc)                                  # (k, d)
        corr = nk[:, None] * (mc * mc)
        sq -= corr
        redo = np.any(corr > _CANCEL * np.maximum(sq, 0.0), axis=1)
        np.maximum(sq, 0.0, out=sq)
        scatter = sq if covariance_type == "diag" else sq.sum(axis=1)
    if redo is not None and redo.any():
        scatter = _exact_scatter(X, resp, means, covariance_type,
                                 None if covariance_type == "tied" or redo.all() else redo,
                                 None if redo.all() or covariance_type == "tied" else scatter)
    return SufficientStats(nk / n, means, scatter / n)


def _exact_scatter(X, resp, means, covariance_type, which=None, out=None):
    """Scatter from per-component centred data (for components ``which``, into ``out``), rows
    in chunks so the (m, rows, d) centred data stay within CHUNK_BYTES whatever the width."""
    idx = np.arange(means.shape[0]) if which is None else np.flatnonzero(which)
    mu = means[idx]
    m, d = mu.shape
    step = max(1, CHUNK_BYTES // (8 * m * d))
    sc = empty_statistics(m, d, covariance_type).scatter
    for start in range(0, X.shape[0], step):
        diff = X[None, start:start + step, :] - mu[:, None, :]    # (m, rows, d)
        r = resp[start:start + step, idx].T                       # (m, rows)
        if covariance_type == "full":
            sc += np.matmul((diff * r[:, :, None]).transpose(0, 2, 1), diff)
        elif covariance_type == "tied":
            sc += (diff * r[:, :, None]).reshape(-1, d).T @ diff.reshape(-1, d)
        elif covariance_type == "diag":
            sc += np.einsum("kn,knd->kd", r, diff * diff)
        else:
            sc += np.einsum("kn,kn->k", r, np.einsum("knd,knd->kn", diff, diff))
    if covariance_type == "tied":
        return 0.5 * (sc + sc.T)
    if covariance_type == "full":
        sc = 0.5 * (sc + sc.transpose(0, 2, 1))
    if out is None:
        return sc
    out = out.copy()
    out[idx] = sc
    return out


# The fast 'full' path's (d(d+1)/2, n) products stay within this; wider batches (many
# features) take the per-component centred path in row chunks instead (a 1,555-feature batch
# of 1,000 rows would need 9 GiB there).
TRIANGLE_BYTES = 4 * CHUNK_BYTES

_TRIU_CACHE = {}
_MASK_CACHE = {}


def _upper_mask(d):
    if d not in _MASK_CACHE:
        _MASK_CACHE[d] = np.triu(np.ones((d, d)))
    return _MASK_CACHE[d]


def _triu(d):
    """(rows, cols, positions of the diagonal) of the upper triangle of a d x d matrix."""
    if d not in _TRIU_CACHE:
        iu0, iu1 = np.triu_indices(d)
        _TRIU_CACHE[d] = (iu0, iu1, np.flatnonzero(iu0 == iu1))
    return _TRIU_CACHE[d]


def empty_statistics(n_components, n_features, covariance_type):
    """All-zero statistics (the neutral element of ``merge_statistics``)."""
    k, d = n_components, n_features
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    return SufficientStats(np.zeros(k), np.zeros((k, d)), np.zeros(shape[covariance_type]))


def blend_statistics(old, new, eta, covariance_type):
    """s <- (1 - eta) s + eta s_hat on the raw moments, done in the centred form."""
    eta = float(eta)
    a = (1.0 - eta) * old.s0
    b = eta * new.s0
    s0 = a + b
    pos = s0 > 0
    safe = np.where(pos, s0, 1.0)
    wb = np.where(pos, b / safe, 0.0)                      # share of the new data in each mean
    coef = np.where(pos, a * b / safe, 0.0)
    delta = old.means - new.means
    means = old.means - wb[:, None] * delta
    scatter = (1.0 - eta) * old.scatter + eta * new.scatter
    if covariance_type == "full":
        scatter += coef[:, None, None] * (delta[:, :, None] * delta[:, None, :])
    elif covariance_type == "tied":
        scatter += (coef[:, None] * delta).T @ delta
    elif covariance_type == "diag":
        scatter += coef[:, None] * (delta * delta)
    else:
        scatter += coef * np.einsum("kd,kd->k", delta, delta)
    return SufficientStats(s0, means, scatter)


def merge_statistics(stats_a, n_a, stats_b, n_b, covariance_type):
    """Statistics of the union of two record sets, from each set's per-record averages."""
    if n_a + n_b == 0:
        return stats_a
    return blend_statistics(stats_a, stats_b, n_b / float(n_a + n_b), covariance_type)


def to_raw_moments(stats, covariance_type):
    """(s0, s1, s2): the raw per-record moments that the centred statistics stand for.

    s2 is mean_i r_ik x_i x_i^T (k, d, d) for 'full', its sum over k (d, d) for 'tied',
    mean_i r_ik x_i**2 (k, d) for 'diag' and mean_i r_ik ||x_i||^2 (k,) for 'spherical'.
    """
    s0, mu, c = stats
    s1 = s0[:, None] * mu
    if covariance_type == "full":
        s2 = c + s0[:, None, None] * mu[:, :, None] * mu[:, None, :]
    elif covariance_type == "tied":
        s2 = c + (s0[:, None] * mu).T @ mu
    elif covariance_type == "diag":
        s2 = c + s0[:, None] * mu * mu
    else:
        s2 = c + s0 * np.einsum("kd,kd->k", mu, mu)
    return s0, s1, s2


def e_step_statistics(X, weights, means, precisions_cholesky, covariance_type, chunk=None,
                      robust_dof=None):
    """E-step with the given parameters, then the batch's averaged statistics, in row chunks.

    Returns ``(stats, log_density, n_valid)``: ``log_density`` (n,) is log p(x_i) under the
    given parameters (float64; -inf/NaN where a row overflowed), and rows whose log-density is
    not finite are left out of the statistics, which average over the ``n_valid`` others.
    The Gaussian part runs in X's dtype (float32 stays float32), the statistics in float64.
    With ``robust_dof`` the responsibilities are multiplied by the records' Student-t weights
    (``streamgmm.math.robust``) before the statistics are taken.
    """
    X = np.asarray(X)
    k, d = np.shape(means)
    n = X.shape[0]
    scorer = GaussianScorer(means, precisions_cholesky, covariance_type, X.dtype)
    with np.errstate(divide="ignore"):
        const = scorer.const + np.log(np.asarray(weights, dtype=np.float64))
    log_density = np.empty(n, dtype=np.float64)
    stats, n_done = None, 0
    step = chunk or statistics_chunk_rows(k, d, covariance_type)
    for start in range(0, n, step):
        Xc = X[start:start + step]
        wlp = scorer.mahalanobis_sq(Xc)
        u = None if robust_dof is None else t_weights(wlp, d, robust_dof)
        wlp *= -0.5
        wlp += const
        resp, norm = _posteriors(wlp, log_density[start:start + step])
        if u is not None:
            resp *= u
        ok = np.isfinite(norm)
        if not ok.all():
            Xc, resp = Xc[ok], resp[ok]
        if Xc.shape[0] == 0:
            continue
        part = batch_statistics(Xc, resp, covariance_type)
        stats = part if n_done == 0 else merge_statistics(stats, n_done, part, Xc.shape[0],
                                                          covariance_type)
        n_done += Xc.shape[0]
    if stats is None:
        stats = empty_statistics(k, d, covariance_type)
    return stats, log_density, n_done


def statistics_chunk_rows(n_components, n_features, covariance_type, budget=CHUNK_BYTES):
    """Rows per chunk so that the E-step's and the statistics' temporaries fit ``budget``."""
    k, d = n_components, n_features
    per_row = 8 * (k * (2 * d + 3) + 2 * d + (d * (d + 1) // 2 if covariance_type == "full"
                                              else d))
    return int(max(64, budget // per_row))


def posteriors(wlp, out=None):
    """Responsibilities (computed in place of ``wlp``) and log p(x) of each row; see below."""
    if out is None:
        out = np.empty(wlp.shape[0], dtype=np.float64)
    return _posteriors(wlp, out)


def _posteriors(wlp, out):
    """Responsibilities (in place of ``wlp``, weighted log-probs (n, k)) and log p(x) in ``out``.

    One pass of the max-shifted log-sum-exp whose exponentials are reused as the posteriors.
    Rows with no finite term get a non-finite log-density (and are dropped by the caller).
    (Row maxima by a loop over the k columns and row sums by a matrix-vector product: both
    several times faster than numpy's reductions along a short last axis.)
    """
    k = wlp.shape[1]
    amax = wlp[:, 0].copy()
    for j in range(1, k):
        np.maximum(amax, wlp[:, j], out=amax)
    fin = np.isfinite(amax)
    if not fin.all():
        amax[~fin] = 0.0
    wlp -= amax[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.exp(wlp, out=wlp)
        total = wlp @ np.ones(k)
        wlp /= total[:, None]
        np.log(total, out=out)
    out += amax
    return wlp, out


# ------------------------------------------------------------------------- parameters from stats
def parameters_from_statistics(stats, covariance_type, reg_covar):
    """(weights, means, covariances, precisions_cholesky, n_repaired) from the statistics.

    Covariances are C_k / s0_k + reg_covar (symmetrised); any that is not positive definite in
    floating point gets a growing diagonal jitter instead of an error (``n_repaired`` counts
    them). Precision Cholesky factors follow scikit-learn's convention (upper triangular U,
    U U^T = precision).
    """
    s0, means, _ = stats
    weights = s0 / s0.sum()
    cov = covariances_from_statistics(stats, covariance_type, reg_covar)
    cov, pc, n_repaired = regularized_precision_cholesky(cov, covariance_type)
    return weights, means.copy(), cov, pc, n_repaired


def covariances_from_statistics(stats, covariance_type, reg_covar):
    """Covariances C_k / s0_k + reg_covar, symmetrised ('tied': the pooled scatter over the
    total s0), before any repair (see ``regularized_precision_cholesky``)."""
    s0, means, scatter = stats
    safe = np.maximum(s0, _TINY)
    d = means.shape[1]
    if covariance_type == "full":
        cov = scatter / safe[:, None, None]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        cov[:, np.arange(d), np.arange(d)] += reg_covar
    elif covariance_type == "tied":
        cov = scatter / s0.sum()
        cov = 0.5 * (cov + cov.T)
        cov.flat[:: d + 1] += reg_covar
    elif covariance_type == "diag":
        cov = scatter / safe[:, None] + reg_covar
    else:
        cov = scatter / (d * safe) + reg_covar
    return cov


def regularized_precision_cholesky(covariances, covariance_type):
    """(covariances, precisions_cholesky, n_repaired), never raising on a non-PD covariance.

    All full covariances are factorised with one batched Cholesky. One that fails, or whose
    factor is numerically singular (a feature keeps < 1e-12 of its variance given the others),
    is retried with a diagonal loading of 1e-9, 1e-8, ... times each feature's variance, and
    as a last resort its eigenvalues are clipped. Variances (diag/spherical) below 1e-150 are
    raised. The returned covariances include any such repair, so covariances, precisions and
    their factors always agree. Non-finite input raises ValueError.
    """
    cov, pc, repaired = regularized_precision_cholesky_mask(covariances, covariance_type)
    return cov, pc, int(np.count_nonzero(repaired))


def regularized_precision_cholesky_mask(covariances, covariance_type):
    """``regularized_precision_cholesky`` with, instead of the count, a per-component bool
    array of the repaired ones (shape (1,) for 'tied')."""
    cov = np.array(covariances, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariances contain NaN or infinity")
    if covariance_type in ("diag", "spherical"):
        # Variances must be positive and large enough that 1/sqrt does not overflow later.
        floor = max(10.0 * _EPS * float(np.max(cov, initial=0.0)), _MIN_VARIANCE)
        bad = ~(cov >= _MIN_VARIANCE)
        repaired = bad.any(axis=-1) if cov.ndim == 2 else bad
        if repaired.any():
            cov = np.where(bad, np.maximum(cov, floor), cov)
        return cov, 1.0 / np.sqrt(cov), repaired
    stack = cov if covariance_type == "full" else cov[None]
    try:
        L = np.linalg.cholesky(stack)
        dl = np.diagonal(L, axis1=1, axis2=2)
        if (dl * dl >= _MIN_CONDITIONAL * np.diagonal(stack, axis1=1, axis2=2)).all():
            bad = None                     # the usual case: all well conditioned
        else:
            bad = _ill_conditioned(L, stack)
    except np.linalg.LinAlgError:          # which one failed? find out one by one
        L = np.zeros_like(stack)
        bad = np.zeros(stack.shape[0], dtype=bool)
        for i in range(stack.shape[0]):
            try:
                L[i] = np.linalg.cholesky(stack[i])
            except np.linalg.LinAlgError:
                bad[i] = True
        bad |= _ill_conditioned(L, stack)
    repaired = np.zeros(stack.shape[0], dtype=bool)
    if bad is not None:
        for i in np.flatnonzero(bad):
            L[i], stack[i] = _robust_cholesky(stack[i])
            repaired[i] = True
    # U = inv(L)^T: upper triangular with U U^T = inv(L L^T). A batched inverse of the k small
    # triangular factors is far cheaper than k separate triangular solves from Python.
    U = np.linalg.inv(L).transpose(0, 2, 1)
    U *= _upper_mask(U.shape[-1])  # clear round-off below the diagonal
    U = np.ascontiguousarray(U)
    if covariance_type == "tied":
        return stack[0], U[0], repaired
    return stack, U, repaired


def _ill_conditioned(L, cov):
    """Per matrix: True when some feature keeps less than 1e-12 of its variance once the
    features before it are accounted for (L_ii^2 / cov_ii), i.e. precisions would be noise.
    Scale-free: features in wildly different units are not penalised. (L from a Cholesky of
    a finite matrix; a zero row of L, from a failed factorisation, counts as ill-conditioned.)"""
    dl = np.diagonal(L, axis1=1, axis2=2)
    var = np.diagonal(cov, axis1=1, axis2=2)
    return ~np.all(dl * dl >= _MIN_CONDITIONAL * var, axis=1) | ~(dl > 0).all(axis=1)


def _robust_cholesky(cov):
    """(L, covariance used) for a covariance that is not safely positive definite.

    Adds a diagonal loading proportional to each feature's variance, growing tenfold from 1e-9
    of it, until the Cholesky factor is well conditioned; the last resort clips eigenvalues.
    """
    cov = 0.5 * (cov + cov.T)
    var = np.diag(cov)
    top = float(np.max(var)) if np.all(np.isfinite(var)) else 1.0
    scale = np.maximum(var, max(1e-12 * top, _TINY))
    jitter = _JITTER
    for _ in range(16):
        trial = cov + np.diag(jitter * scale)
        try:
            L = np.linalg.cholesky(trial)
        except np.linalg.LinAlgError:
            L = None
        if L is not None and not _ill_conditioned(L[None], trial[None])[0]:
            return L, trial
        jitter *= 10.0
    w, v = np.linalg.eigh(cov)
    floor = max(jitter * float(np.mean(scale)), _TINY)
    trial = (v * np.maximum(w, floor)) @ v.T
    trial = 0.5 * (trial + trial.T) + np.diag(floor * np.ones(len(var)))
    return np.linalg.cholesky(trial), trial


# ----------------------------------------------------------------------------------- re-seeding
def pooled_scatter(stats, covariance_type, components=None):
    """Within-component pooled covariance (without reg_covar) over ``components`` (default all).

    Shape (d, d) for full/tied, (d,) for diag, a scalar trace for spherical.
    """
    s0, _, scatter = stats
    idx = slice(None) if components is None else np.asarray(components)
    total = max(float(s0[idx].sum()), _TINY)
    if covariance_type == "tied":
        return scatter / max(float(s0.sum()), _TINY)
    return scatter[idx].sum(axis=0) / total


def reseed_statistics(stats, components, seeds, covariance_type, seed_weight, alive=None,
                      floor=0.0):
    """Restart ``components`` at the points ``seeds`` (m, d).

    Each restarted component gets share ``seed_weight`` and the pooled within-component
    covariance of the ``alive`` components (default: all the others). The shares stay a
    distribution: the seeds' total is taken from the largest component (its mean and
    covariance unchanged) when that leaves it above ``floor`` and ``seed_weight``; otherwise
    all shares are renormalised. For 'tied' the shared covariance is unchanged.
    """
    components = np.asarray(components, dtype=np.intp)
    s0 = np.array(stats.s0, dtype=np.float64)
    means = np.array(stats.means, dtype=np.float64)
    scatter = np.array(stats.scatter, dtype=np.float64)
    if alive is None:
        alive = np.setdiff1d(np.arange(s0.shape[0]), components)
    alive = np.asarray(alive, dtype=np.intp)
    pooled = pooled_scatter(stats, covariance_type, alive if len(alive) else None)
    tied_cov = pooled if covariance_type == "tied" else None
    s0[components] = 0.0
    total = s0.sum()
    if total > 0:                      # the live shares, summing to one
        s0 /= total
        if covariance_type != "tied":
            scatter /= total
    need = seed_weight * len(components)
    donor = int(np.argmax(s0))
    if s0[donor] - need >= max(floor, seed_weight):
        scale = (s0[donor] - need) / s0[donor]
        if covariance_type != "tied":
            scatter[donor] *= scale
        s0[donor] -= need
        s0[components] = seed_weight
    else:
        s0[components] = seed_weight
        if covariance_type != "tied":
            scatter /= s0.sum()
        s0 /= s0.sum()
    means[components] = np.asarray(seeds, dtype=np.float64)
    if covariance_type == "tied":
        scatter = tied_cov * s0.sum()
    else:
        scatter[components] = s0[components].reshape((-1,) + (1,) * (scatter.ndim - 1)) * pooled
    return SufficientStats(s0, means, scatter)


# --------------------------------------------------------------------------------- step sizes
def stepwise_step_size(t, alpha, t0):
    """eta_t = (t + t0) ** -alpha for mini-batch t = 1, 2, ... (capped at 1)."""
    return float(min(1.0, (t + t0) ** (-alpha)))


def exponential_step_size(n_records, half_life):
    """eta = 1 - 0.5 ** (n_records / half_life): a record's weight halves every half_life records.

    After m records have arrived, whatever the batch sizes, the statistics' weight on everything
    older is prod(1 - eta) = 0.5 ** (m / half_life).
    """
    return float(-np.expm1(n_records * np.log(0.5) / half_life))


def _is_real(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_step_parameters(step, alpha, t0, half_life):
    """Validate a step-size schedule; raises ValueError naming the parameter and the rule."""
    if step not in STEP_TYPES:
        raise ValueError(f"The 'step' parameter must be one of {list(STEP_TYPES)}, got {step!r}.")
    if not _is_real(alpha) or not 0.5 < alpha <= 1.0:
        raise ValueError(f"The 'alpha' parameter must be a real number in (0.5, 1] (the "
                         f"stepwise schedule eta_t = (t + t0)^-alpha needs it to converge), "
                         f"got {alpha!r}.")
    if not _is_real(t0) or not np.isfinite(t0) or t0 < 0:
        raise ValueError(f"The 't0' parameter must be a finite real number >= 0, got {t0!r}.")
    if half_life is not None and (not _is_real(half_life) or not np.isfinite(half_life)
                                  or half_life <= 0):
        raise ValueError(f"The 'half_life' parameter must be None or a finite real number > 0 "
                         f"(records), got {half_life!r}.")
    if step == "exponential" and half_life is None:
        raise ValueError("step='exponential' needs 'half_life': the number of records after "
                         "which old data's weight in the statistics has halved.")
