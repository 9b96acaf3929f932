"""Log-sum-exp along the last axis: log(sum(exp(a))) without overflow or underflow."""
import numpy as np


def logsumexp_rows(a, out=None):
    """Row-wise log-sum-exp of a 2-D array (float64 result).

    Subtracts each row's maximum before exponentiating, so very negative log-densities do not
    underflow to log(0). Rows that are all -inf give -inf.
    """
    a = np.asarray(a)
    amax = a.max(axis=1)
    safe_max = np.where(np.isfinite(amax), amax, 0.0)
    tmp = np.exp(a - safe_max[:, None])
    s = tmp.sum(axis=1)
    with np.errstate(divide="ignore"):
        res = np.log(s, out=out)
    res += safe_max
    return res


def log_normalize_rows(a):
    """Return (log-sum-exp of each row, rows minus it): log-normaliser and log-posteriors."""
    norm = logsumexp_rows(a)
    with np.errstate(invalid="ignore"):
        return norm, a - norm[:, None]
