"""Online-EM statistics gathered in one place and applied in another (a fleet's members and
its leader).

The per-record-averaged sufficient statistics of online EM are additive: a member computes
them from its records' posteriors under the model it scores with (``statistics_of``), merges
them over an interval (``merge``), and the leader pools every member's and takes the online
step the single model would have taken (``apply``). Nothing here holds raw records.

A model is an ``OnlineGaussianMixture`` or a ``MixtureEnsemble``; its statistics are a list
with one ``SufficientStats`` per mixture (one for a single mixture).
"""
from __future__ import annotations

import numpy as np

from ..math import sufficient_stats as ss
from .ensemble import MixtureEnsemble


def mixtures(model):
    """The online mixtures a model steps (its members, or itself)."""
    return list(model.members) if isinstance(model, MixtureEnsemble) else [model]


def statistics_of(model, X, resp, log_density):
    """Per-mixture statistics of rows X from the posteriors the model gave them (``decide``'s
    stacked ``resp``; rows whose log-density is not finite are left out): (stats list, n)."""
    X = np.asarray(X)
    log_density = np.asarray(log_density)
    ok = np.isfinite(log_density) if log_density.ndim == 1 else \
        np.isfinite(log_density).all(axis=1)
    if not ok.all():
        X, resp = X[ok], resp[ok]
    resp = np.asarray(resp, dtype=np.float64)
    ms = mixtures(model)
    offsets = np.cumsum([0] + [int(m.n_components) for m in ms])
    stats = [ss.batch_statistics(X, resp[:, offsets[i]:offsets[i + 1]], m.covariance_type)
             for i, m in enumerate(ms)]
    return stats, int(X.shape[0])


def empty(model):
    """Zero statistics for the model's shape (the neutral element of ``merge``)."""
    return [ss.empty_statistics(int(m.n_components), int(m.means_.shape[1]), m.covariance_type)
            for m in mixtures(model)]


def merge(model, a, n_a, b, n_b):
    """Statistics of the union of two record sets, each given as (stats list, n)."""
    return [ss.merge_statistics(sa, n_a, sb, n_b, m.covariance_type)
            for m, sa, sb in zip(mixtures(model), a, b)], int(n_a + n_b)


def compatible(model, stats):
    """True when the statistics have the model's shapes (same components, features, types)."""
    ms = mixtures(model)
    if len(stats) != len(ms):
        return False
    want = empty(model)
    return all(tuple(a.shape for a in s) == tuple(a.shape for a in w)
               for s, w in zip(stats, want))


def apply(model, stats, n_records, n_steps, seeds=None):
    """The online step of pooled statistics: ``n_steps`` mini-batch steps of the pooled average
    taken at once (step size 1 - prod(1 - eta_t) over those steps, so the weight left on the
    old statistics is the one the single model would leave). ``seeds``: recent scaled rows to
    re-seed a component that died (none: dead components keep their statistics)."""
    if n_records <= 0:
        return model
    for m, s in zip(mixtures(model), stats):
        _apply_one(m, s, int(n_records), max(1, int(n_steps)), seeds)
    return model


def _apply_one(m, stats_hat, n, n_steps, seeds):
    if m.step == "stepwise":
        t = m.n_steps_
        keep = float(np.prod([1.0 - ss.stepwise_step_size(t + j, m.alpha, m.t0)
                              for j in range(1, n_steps + 1)]))
        eta = 1.0 - keep
    else:  # constant forgetting per record: the same whatever the split into steps
        eta = ss.exponential_step_size(n, m.half_life)
    blended = ss.blend_statistics(m._stats, stats_hat, eta, m.covariance_type)
    reseeded = 0
    if seeds is not None and len(seeds):
        X = np.asarray(seeds, dtype=np.float64)
        blended, reseeded = m._reseed_dead(blended, X, m.score_samples(X))
    params = ss.parameters_from_statistics(blended, m.covariance_type, m.reg_covar)
    m._commit(blended, params, n_steps=m.n_steps_ + n_steps, n_seen=m.n_seen_ + n,
              n_reseeds=m.n_reseeds_ + reseeded, n_repairs=m.n_repairs_ + params[4], eta=eta)


def to_arrays(stats, prefix="s"):
    """Flat {name: array} of a stats list (for a message)."""
    out = {}
    for i, s in enumerate(stats):
        out[f"{prefix}{i}.s0"], out[f"{prefix}{i}.means"], out[f"{prefix}{i}.scatter"] = s
    return out


def from_arrays(arrays, n_mixtures, prefix="s"):
    """Inverse of ``to_arrays``."""
    return [ss.SufficientStats(np.asarray(arrays[f"{prefix}{i}.s0"], dtype=np.float64),
                               np.asarray(arrays[f"{prefix}{i}.means"], dtype=np.float64),
                               np.asarray(arrays[f"{prefix}{i}.scatter"], dtype=np.float64))
            for i in range(n_mixtures)]
