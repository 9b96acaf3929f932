"""How many training records a fit needs: enough to estimate the mixture's parameters and to
put the percentile threshold on real records.

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
import math

from ..math.criteria import n_parameters


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
