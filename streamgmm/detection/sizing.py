"""Sizes a configuration implies: how many training records a fit needs (below), and how
large the saved state grows (``state_bytes``: what a state record in Kafka must hold).

A fit needs enough records to estimate the mixture's parameters and to put the percentile
threshold on real records.

A fit on a handful of rows "succeeds" (regularised covariances) but gives a model whose
densities collapse onto those rows, so almost every new record falls below its threshold.
The minimum chosen here is the largest of:

* the model's parameters, twice over:
  - a fixed ``n_components``: twice the mixture's free parameters,
    ``2 * n_parameters(k, d, covariance_type)`` (for a full covariance, ``d (d+1) / 2`` per
    component plus the means and weights): it is fitted with ``reg_covar`` only;
  - ``auto`` (the ensemble): twice the free parameters of its simplest member, one diagonal
    Gaussian (``2 d``), so ``4 d``. Its larger members are capped at one component per 10
    records and shrunk towards the identity by ``d / n``, so they degrade gracefully on small
    windows; measured on real data (BENCHMARKS.md, "The warm-up's minimum size"), windows
    of 4 d records rank nearly as well as 16 d and flag close to p, while 2 d flags up to
    6% of the first 200 records;
* ``ceil(100 / percentile)`` records, so that at least one training record lies at or below
  the threshold percentile;
* and the warm-up floor of ``max(10, 2 k)``.
"""
import json
import math
from types import SimpleNamespace

import numpy as np

from ..math.criteria import n_parameters
from .drift import RANK_GRID
from .training import ensemble_specs


def _getter(config):
    """``get(key, default)`` over a DetectorConfig or its plain dict."""
    return config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))


def min_training_records(config, n_features):
    """The fewest records ``Detector.fit`` should be given for ``config`` (a DetectorConfig or
    its plain dict) and ``n_features`` features; see the module docstring."""
    get = _getter(config)
    k = get("n_components", "auto")
    d = int(n_features)
    if isinstance(k, int):
        params = n_parameters(int(k), d, get("covariance_type", "full"))
    else:
        k = int(get("max_components", 8))
        params = n_parameters(1, d, "diag")
    thr = get("threshold", None)
    pct = (thr.get("percentile") if isinstance(thr, dict)
           else getattr(thr, "percentile", None)) or 1.0
    return max(2 * params, math.ceil(100.0 / float(pct)), max(10, 2 * k))


def sizing_warning(config, n_features):
    """A one-line warning when ``warmup_records`` of ``config`` is below
    ``min_training_records``, else None: the first model would flag far more than p%."""
    n = int(_getter(config)("warmup_records", 2000))
    need = min_training_records(config, n_features)
    if n >= need:
        return None
    return (f"detector.warmup_records: {n} records are fewer than the {need} a model of "
            f"{int(n_features)} features needs (see `streamgmm fit`'s minimum): until a refit "
            f"on more data, expect well above the percentile's share of records flagged")


# ------------------------------------------------------------------ the size of a saved state

# Bytes of a checkpoint (``Detector.dumps``: an uncompressed NPZ, see persistence) beyond the
# arrays' own data: each array's .npy header, its zip entries (local header and central
# directory, numpy's zip64 extra, its name twice), the archive's end records.
NPY_HEADER_BYTES = 128
ZIP_ENTRY_BYTES = 30 + 20 + 46
ZIP_END_BYTES = 22 + 56 + 20
# The manifest (JSON: the configuration, counters, every member's settings, the threshold's
# and drift tests' scalars, the checksum) beyond what grows with the features and members;
# measured ~2.3 KB, with room for larger counters and longer strings.
MANIFEST_BASE_BYTES = 3072
MANIFEST_MEMBER_BYTES = 1024  # one mixture's settings and scalars, its fit summary (~0.75 KB)


def _section(config, name):
    """``get(key, default)`` over one section (``threshold``, ``drift``...) of ``config``."""
    return _getter(_getter(config)(name, None) or {})


def _cov_size(covariance_type, k, d):
    return {"full": k * d * d, "tied": d * d, "diag": k * d, "spherical": k}[covariance_type]


def _stats_sizes(covariance_type, k, d):
    """Bytes of one mixture's online-EM statistics: weights, weighted sums, scatter."""
    return [8 * k, 8 * k * d, 8 * _cov_size(covariance_type, k, d)]


def _model_members(config):
    """[(covariance type, components)] of the largest model ``config`` can fit: the auto
    ensemble's members on the largest window a fit is given (the warm-up or a refit's
    window), or the one fixed mixture."""
    get = _getter(config)
    k = get("n_components", "auto")
    ct = get("covariance_type", "full")
    if isinstance(k, int):
        return [(ct, int(k))], False
    n = max(int(get("warmup_records", 2000)), int(_section(config, "refit")("window", 20000)))
    cfg = SimpleNamespace(max_components=int(get("max_components", 8)), covariance_type=ct)
    return ensemble_specs(cfg, n), True


def state_bytes(config, feature_names, include_recent_records=False, dtype=np.float64):
    """An upper bound of the bytes of the saved state (``Detector.dumps``: a checkpoint, the
    state topic's record, a fleet version) of a detector with ``config`` (a DetectorConfig or
    its plain dict) and ``feature_names`` (the names, or their number) once its buffers are
    full: every array the state holds (the model's members and covariances, the threshold's
    window of scores, the drift tests' reference summary; with ``include_recent_records`` the
    raw rows of the refit window, the learning queue and the drift reference), their
    container and the manifest. Within a few % of what a full state measures
    (tests/test_state_store.py); the model dominates for wide records (full covariances:
    features squared times components)."""
    names = ([f"x{j}" for j in range(int(feature_names))]
             if isinstance(feature_names, (int, np.integer)) else list(feature_names))
    d = len(names)
    f8, fx = 8, np.dtype(dtype).itemsize
    arrays = []  # (name, bytes)
    arrays += [("scaler.mean", f8 * d), ("scaler.scale", f8 * d)]
    members, ensemble = _model_members(config)
    for i, (ct, k) in enumerate(members):
        p = f"model.m{i}." if ensemble else "model."
        s0, sums, cov = _stats_sizes(ct, k, d)
        arrays += [(p + "stats_s0", s0), (p + "stats_means", sums), (p + "stats_scatter", cov),
                   (p + "weights_", s0), (p + "means_", sums), (p + "covariances_", cov),
                   (p + "precisions_cholesky_", cov)]
    if ensemble:
        arrays += [("model.loc", f8 * len(members)), ("model.scale", f8 * len(members))]
    threshold, drift = _section(config, "threshold"), _section(config, "drift")
    online, refit = _section(config, "online"), _section(config, "refit")
    arrays.append(("threshold.ring", f8 * int(threshold("window", 20000))))
    cols = 1 + (d if drift("feature_tests", True) else 0)
    cusums = 2 + (2 * d if drift("feature_tests", True) else 0)
    moments = f8 * (5 * (cols + 1) + RANK_GRID * cols)
    ref = f8 * int(drift("reference_records", 2000)) * (cols + 1) if include_recent_records \
        else 0
    rem = f8 * int(drift("block_size", 50)) * (cols + 1) if include_recent_records else 0
    arrays += [("drift.ref_buf", 0), ("drift.rem", rem), ("drift.S", f8 * cusums),
               ("drift.last_zero", 8 * cusums)]
    # the reference's summary once it is complete, or its rows while it is collected
    arrays += [(f"drift.{m}", 0) for m in ("off", "sum1", "sum2", "lag1", "prev")]
    arrays.append(("drift.grid", max(moments, ref)))
    components = sum(k for _, k in members)
    queue = int(online("batch_size", 1000)) if include_recent_records else 0
    arrays += [("learn.X", fx * queue * d), ("learn.resp", f8 * queue * components),
               ("learn.scores", f8 * queue * (len(members) if ensemble else 1))]
    ring = int(refit("window", 20000)) if include_recent_records else 0
    arrays.append(("refit.ring", f8 * ring * d))
    manifest = (MANIFEST_BASE_BYTES + MANIFEST_MEMBER_BYTES * len(members)
                + 2 * sum(len(json.dumps(n)) + 2 for n in names)  # the detector's, drift's
                + sum(len(n) + 4 for n, _ in arrays))              # the array names
    arrays.append(("__manifest__", manifest))
    return ZIP_END_BYTES + sum(
        size + NPY_HEADER_BYTES + ZIP_ENTRY_BYTES + 2 * (len(name) + 4) for name, size in arrays)


def components_text(config):
    """The components ``state_bytes`` counts, by covariance type ("7 full and 13 diag
    components"), for messages."""
    members, _ = _model_members(config)
    by = {}
    for ct, k in members:
        by[ct] = by.get(ct, 0) + k
    parts = [f"{n} {ct}" for ct, n in by.items()]
    return (" and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
            + " components")


def statistics_bytes(config, feature_names, dtype=np.float64):
    """An upper bound of the bytes of the online-EM statistics a fleet member sends in one
    sync (every mixture's weights, weighted sums and scatter: features squared times the
    full components), with their container; they cannot be split across messages."""
    d = int(feature_names) if isinstance(feature_names, (int, np.integer)) \
        else len(list(feature_names))
    members, _ = _model_members(config)
    arrays = [size for ct, k in members for size in _stats_sizes(ct, k, d)]
    return ZIP_END_BYTES + 2048 + sum(a + NPY_HEADER_BYTES + ZIP_ENTRY_BYTES + 24
                                      for a in arrays)
