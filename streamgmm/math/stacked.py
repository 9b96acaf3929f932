"""Several mixtures of one covariance type handled as one stack of components.

An ensemble scores every record under each of its mixtures and updates each of them from the
same rows. Per mixture that is one small matrix product, one log-sum-exp and one batched
Cholesky per step, and at batch sizes of a few hundred rows the fixed cost of each call
dominates. Stacking the components of all mixtures of one covariance type does that work in
one call: ``stacked_log_prob_t`` scores every component of every mixture at once (transposed
layout, components in rows), ``grouped_posteriors_t`` runs the log-sum-exp separately over
each mixture's rows (``offsets``: mixture g owns rows ``offsets[g]:offsets[g+1]``), and
``grouped_parameters`` derives all their parameters from stacked statistics. The results are
the same as mixture by mixture (each component's statistics depend only on its own
posteriors; weights are normalised within each mixture).
"""
import numpy as np

from .gaussian import GaussianScorer
from .robust import t_weights
from .sufficient_stats import (SufficientStats, covariances_from_statistics,
                               regularized_precision_cholesky_mask)


def stacked_scorer(means, precisions_cholesky, covariance_type, dtype=np.float64):
    """A ``GaussianScorer`` over the stacked components of several mixtures."""
    means = np.asarray(means, dtype=np.float64)
    return GaussianScorer(means, precisions_cholesky, covariance_type, dtype)


def stacked_log_prob_t(scorer, log_weights, X, robust_dof=None):
    """(log w_k + log N(x | mu_k, Sigma_k) of every stacked component, (K, n) float64; and
    their Student-t weights (K, n) for ``robust_dof``, or None without)."""
    Z = scorer.prepare(X)
    out = scorer.dist_t(Z)
    u = None if robust_dof is None else t_weights(out, scorer.n_features, robust_dof)
    out *= -0.5
    out += (scorer.const + log_weights)[:, None]
    return out, u


def grouped_posteriors_t(wlp_t, offsets, log_density):
    """Per-mixture posteriors (in place of ``wlp_t`` (K, n)) and log p_g(x) into
    ``log_density`` (G, n): a max-shifted log-sum-exp over each group's rows."""
    G = len(offsets) - 1
    for g in range(G):
        a, b = offsets[g], offsets[g + 1]
        amax = log_density[g]
        amax[...] = wlp_t[a]
        for j in range(a + 1, b):
            np.maximum(amax, wlp_t[j], out=amax)
        fin = np.isfinite(amax)
        if not fin.all():
            amax[~fin] = 0.0
        wlp_t[a:b] -= amax
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.exp(wlp_t, out=wlp_t)
        for g in range(G):
            a, b = offsets[g], offsets[g + 1]
            block = wlp_t[a:b]
            total = block[0].copy()
            for j in range(1, b - a):  # row by row: the same order for any n (numpy sums a
                total += block[j]      # single column pairwise, a wider block row by row)
            block /= total
            amax = log_density[g].copy()
            np.log(total, out=log_density[g])
            log_density[g] += amax
    return wlp_t, log_density


def _bcast(v, ndim):
    return v.reshape((-1,) + (1,) * (ndim - 1))


def grouped_blend(old, new, eta, covariance_type):
    """``blend_statistics`` with a step size per stacked component (eta (K,)); not 'tied'."""
    eta = np.asarray(eta, dtype=np.float64)
    a = (1.0 - eta) * old.s0
    b = eta * new.s0
    s0 = a + b
    pos = s0 > 0
    safe = np.where(pos, s0, 1.0)
    wb = np.where(pos, b / safe, 0.0)
    coef = np.where(pos, a * b / safe, 0.0)
    delta = old.means - new.means
    means = old.means - wb[:, None] * delta
    nd = old.scatter.ndim
    scatter = _bcast(1.0 - eta, nd) * old.scatter + _bcast(eta, nd) * new.scatter
    if covariance_type == "full":
        scatter += coef[:, None, None] * (delta[:, :, None] * delta[:, None, :])
    elif covariance_type == "diag":
        scatter += coef[:, None] * (delta * delta)
    else:
        scatter += coef * np.einsum("kd,kd->k", delta, delta)
    return SufficientStats(s0, means, scatter)


def grouped_parameters(stats, covariance_type, reg_covar, offsets):
    """``parameters_from_statistics`` for stacked mixtures (not 'tied'): (weights normalised
    per group, means, covariances, precisions_cholesky, repaired (K,) bool)."""
    s0, means, _ = stats
    totals = np.add.reduceat(s0, offsets[:-1])
    weights = s0 / np.repeat(totals, np.diff(offsets))
    cov = covariances_from_statistics(stats, covariance_type, reg_covar)
    cov, pc, repaired = regularized_precision_cholesky_mask(cov, covariance_type)
    return weights, means.copy(), cov, pc, repaired
