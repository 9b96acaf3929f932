"""How many training records a fit needs: enough to estimate every parameter of the mixture
and to put the percentile threshold on real records.

A fit on a handful of rows "succeeds" (regularised covariances) but gives a model whose
densities collapse onto those rows, so almost every new record falls below its threshold.
The minimum chosen here:

* twice the mixture's free parameters, ``2 * n_parameters(k, d, covariance_type)`` (for a full
  covariance that is ``d (d+1) / 2`` per component plus the means and weights), with ``k`` the
  fixed ``n_components`` or, for ``auto``, ``max_components`` (the largest model BIC may pick);
* ``ceil(100 / percentile)`` records, so that at least one training record lies at or below
  the threshold percentile;
* and the warm-up floor of ``max(10, 2 k)``.
"""
import math

from ..math.criteria import n_parameters


def min_training_records(config, n_features):
    """The fewest records ``Detector.fit`` should be given for ``config`` (a DetectorConfig or
    its plain dict) and ``n_features`` features; see the module docstring."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    k = get("n_components", "auto")
    k = int(k) if isinstance(k, int) else int(get("max_components", 8))
    cov = get("covariance_type", "full")
    thr = get("threshold", None)
    pct = (thr.get("percentile") if isinstance(thr, dict)
           else getattr(thr, "percentile", None)) or 1.0
    return max(2 * n_parameters(k, int(n_features), cov), math.ceil(100.0 / float(pct)),
               max(10, 2 * k))
