"""k-means for initialising EM: k-means++ seeding and vectorised Lloyd iterations.

Both follow scikit-learn's algorithms and draw from the given ``RandomState`` with the same
calls in the same order (first centre by ``choice`` with uniform weights, then
``uniform(size=n_local_trials)`` per further centre), so a seed gives the same seeds as
``sklearn.cluster.kmeans_plusplus`` / ``KMeans(n_init=1)`` up to floating-point ties.
"""
import numpy as np


def _sq_dist(X, centers, x_sq):
    """Squared Euclidean distances (n, k) via the ||x||^2 - 2 x.c + ||c||^2 expansion."""
    d = X @ centers.T
    d *= -2.0
    d += x_sq[:, None]
    d += np.einsum("ij,ij->i", centers, centers)[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def kmeans_plusplus(X, n_clusters, random_state, n_local_trials=None, x_sq=None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii): returns (centers, indices)."""
    n, d = X.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", X, X)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = random_state.choice(n, p=np.full(n, 1.0 / n))
    closest = _sq_dist(X, X[indices[:1]], x_sq)[:, 0]
    pot = closest.sum()
    for c in range(1, n_clusters):
        rand_vals = random_state.uniform(size=n_local_trials) * pot
        candidates = np.searchsorted(np.cumsum(closest), rand_vals)
        np.clip(candidates, None, n - 1, out=candidates)
        dist_cand = _sq_dist(X, X[candidates], x_sq).T  # (trials, n)
        np.minimum(closest, dist_cand, out=dist_cand)
        pots = dist_cand.sum(axis=1)
        best = int(np.argmin(pots))
        indices[c] = candidates[best]
        closest, pot = dist_cand[best], pots[best]
    return X[indices].copy(), indices


def kmeans(X, n_clusters, random_state, max_iter=300, tol=1e-4):
    """Lloyd's algorithm from k-means++ seeds: returns (centers, labels, inertia).

    The data are centred first (as scikit-learn does) so the distance expansion does not
    lose precision to a large offset. Stops when the labels no longer change or the total
    squared centre shift is at most ``tol`` times the mean feature variance; empty clusters
    are moved to the points farthest from their centres.
    """
    X64 = np.asarray(X, dtype=np.float64)
    n, d = X64.shape
    offset = X64.mean(axis=0)
    Xc = X64 - offset
    x_sq = np.einsum("ij,ij->i", Xc, Xc)
    centers, _ = kmeans_plusplus(Xc, n_clusters, random_state, x_sq=x_sq)
    tol_abs = tol * np.mean(np.var(Xc, axis=0))
    labels_old = np.full(n, -1, dtype=np.intp)
    strict = False
    for _ in range(max_iter):
        dist = _sq_dist(Xc, centers, x_sq)
        labels = np.argmin(dist, axis=1)
        new_centers = _update_centers(Xc, labels, dist, centers)
        shift = np.sum((new_centers - centers) ** 2)
        centers = new_centers
        if np.array_equal(labels, labels_old):
            strict = True
            break
        if shift <= tol_abs:
            break
        labels_old = labels
    if not strict:
        dist = _sq_dist(Xc, centers, x_sq)
        labels = np.argmin(dist, axis=1)
    else:
        dist = _sq_dist(Xc, centers, x_sq)
    inertia = float(dist[np.arange(n), labels].sum())
    return centers + offset, labels, inertia


def _update_centers(X, labels, dist, centers):
    """Cluster means; an empty cluster takes the point farthest from its current centre."""
    k = centers.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = _group_sum(X, labels, k)
    new_centers = centers.copy()
    nonempty = counts > 0
    new_centers[nonempty] = sums[nonempty] / counts[nonempty, None]
    if not nonempty.all():
        own = dist[np.arange(X.shape[0]), labels]
        far = np.argsort(own)[::-1][: int((~nonempty).sum())]
        new_centers[~nonempty] = X[far]
    return new_centers


def _group_sum(X, labels, k):
    """Per-label row sums: one pass with ``np.add.at`` on few rows, a one-hot product else."""
    if X.shape[0] < 1000:
        out = np.zeros((k, X.shape[1]))
        np.add.at(out, labels, X)
        return out
    onehot = np.zeros((k, X.shape[0]))
    onehot[labels, np.arange(X.shape[0])] = 1.0
    return onehot @ X
