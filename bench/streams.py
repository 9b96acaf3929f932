"""Generated and real-data streams for the detection-policy benchmark and tests.

Shared by ``bench/bench_drift.py`` and ``tests/test_detection_policy.py``: a known Gaussian
mixture with i.i.d. or AR(1) noise per feature, abrupt and gradual changes, a new component,
and class-switch streams built from labelled data (X, y).
"""
import numpy as np


class Mixture:
    """A d-dimensional Gaussian mixture; noise i.i.d. or AR(1) per latent feature."""

    def __init__(self, d=8, k=4, seed=0, spread=3.0):
        self.rng = np.random.default_rng(seed)
        self.d, self.k = d, k
        self.means = self.rng.normal(0, spread, (k, d))
        self.A = self.rng.normal(0, 1, (k, d, d)) * 0.3 + np.eye(d)
        self.z = self.rng.normal(size=d)

    def latent(self, n, rho=0.0):
        """(n, d) standard normal noise, AR(1) with coefficient rho along the stream."""
        E = self.rng.normal(size=(n, self.d))
        if rho == 0:
            return E
        from scipy.signal import lfilter
        E *= np.sqrt(1 - rho * rho)
        E[0] += rho * self.z
        Z = lfilter([1.0], [1.0, -rho], E, axis=0)
        self.z = Z[-1].copy()
        return Z

    def draw(self, n, rho=0.0, shift=None, var=1.0, new=None, new_weight=0.2):
        c = self.rng.integers(0, self.k, n)
        Z = self.latent(n, rho) * np.sqrt(var)
        X = self.means[c] + np.einsum("nij,nj->ni", self.A[c], Z)
        if shift is not None:
            X = X + shift
        if new is not None:
            m = self.rng.random(n) < new_weight
            X[m] = self.rng.normal(size=(m.sum(), self.d)) + new
        return X

    def logpdf(self, X):
        """The generating mixture's log-density of the rows of X (equal component weights)."""
        from scipy.special import logsumexp
        from scipy.stats import multivariate_normal
        lp = [multivariate_normal(self.means[j], self.A[j] @ self.A[j].T).logpdf(X)
              for j in range(self.k)]
        return logsumexp(np.column_stack(lp), axis=1) - np.log(self.k)

    def feature_sd(self):
        return self.draw(50_000)[:, 0].std()


def contaminate(X, frac=0.01, offset=30.0, seed=0):
    """X with a fraction ``frac`` of its rows moved by ``offset`` in every feature (far-away
    anomalies, i.i.d. along the stream); returns (X, mask)."""
    far = np.random.default_rng(seed).random(len(X)) < frac
    X = np.array(X, dtype=np.float64)
    X[far] += offset
    return X, far


def daemon_bench_rows(n, seed=0):
    """The daemon benchmark's stream (bench_daemon.payloads, tests/kafka_helpers.mixture_rows):
    a fixed 3-component mixture in 4 features, 1% of rows moved by +30 in every feature."""
    means = np.array([[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0], [0.0, 6.0, 6.0, 6.0]])
    rng = np.random.default_rng(seed)
    comp = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return contaminate(means[comp] + rng.normal(size=(n, 4)), 0.01, 30.0, seed + 1)


def windowed_rates(flags, window):
    """Flagged fraction in consecutive non-overlapping windows (a trailing part dropped)."""
    flags = np.asarray(flags, dtype=float)
    n = len(flags) // window
    return flags[: n * window].reshape(n, window).mean(axis=1)


def first_in_band(flags, start, p, window=1000, lo=0.5, hi=2.0):
    """Records after ``start`` until the trailing ``window`` flagged fraction is within
    [lo p, hi p] and stays there for the next 3 windows; None if never."""
    f = np.asarray(flags[start:], dtype=float)
    c = np.concatenate([[0.0], np.cumsum(f)])
    for t in range(window, len(f) - 3 * window + 1, 100):
        ok = all(lo * p <= (c[t + j * window] - c[t + j * window - window]) / window <= hi * p
                 for j in range(4))
        if ok:
            return t
    return None


def roc_auc(y, s):
    """ROC-AUC of score s (higher = more anomalous) for labels y (Mann-Whitney)."""
    y = np.asarray(y).astype(bool)
    from scipy.stats import rankdata
    r = rankdata(s)
    n1, n0 = y.sum(), (~y).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _mixed(rng, normal, anom, n, contamination):
    """n rows drawn with replacement: normal ones, and anomalies at the `contamination` rate,
    shuffled; (rows, labels 1 = anomaly)."""
    na = rng.binomial(n, contamination)
    rows = np.vstack([normal[rng.integers(0, len(normal), n - na)],
                      anom[rng.integers(0, len(anom), na)]])
    lab = np.r_[np.zeros(n - na), np.ones(na)]
    o = rng.permutation(n)
    return rows[o], lab[o]


def class_switch(X, y, n_before, n_after, seed=0, contamination=0.01):
    """Normals first, then a new normal made of the anomaly class (a switch of regime).

    Before the change: normal rows (class 0) with ``contamination`` anomalies (class 1); after:
    rows of class 1 are the normal data and class-0 rows are the anomalies (at the same rate),
    sampled with replacement when a class is small. Returns (X, labels, change index).
    """
    rng = np.random.default_rng(seed)
    X0, X1 = X[y == 0], X[y == 1]
    a, la = _mixed(rng, X0, X1, n_before, contamination)
    b, lb = _mixed(rng, X1, X0, n_after, contamination)
    # tiny jitter: rows drawn with replacement would otherwise repeat exactly
    Xs = np.vstack([a, b])
    Xs = Xs + rng.normal(0, 1e-3, Xs.shape) * (Xs.std(axis=0) + 1e-12)
    return Xs, np.r_[la, lb], n_before


def normal_split_switch(X, y, n_before, n_after, seed=0, contamination=0.01):
    """A fairer switch: the normal class split in two halves along its first principal axis;
    half A is normal before the change, half B after, the anomaly class is the anomaly
    throughout (``contamination`` of each part). Every normal row is distinct, unlike the
    class switch, whose new normal is a small anomaly class resampled many times.
    Returns (X, labels, change index)."""
    rng = np.random.default_rng(seed)
    X0, X1 = X[y == 0], X[y == 1]
    Z = (X0 - X0.mean(axis=0)) / (X0.std(axis=0) + 1e-12)
    v = np.linalg.svd(Z, full_matrices=False)[2][0]
    proj = Z @ v
    A, B = X0[proj <= np.median(proj)], X0[proj > np.median(proj)]
    a, la = _mixed(rng, A, X1, n_before, contamination)
    b, lb = _mixed(rng, B, X1, n_after, contamination)
    Xs = np.vstack([a, b])
    Xs = Xs + rng.normal(0, 1e-3, Xs.shape) * (Xs.std(axis=0) + 1e-12)
    return Xs, np.r_[la, lb], n_before
