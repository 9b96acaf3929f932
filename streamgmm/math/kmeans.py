"""k-means for initialising EM: k-means++ seeding and vectorised Lloyd iterations."""
import numpy as np


def _sq_dist(X, centers, x_sq):
    """Squared Euclidean distances (n, k) via the ||x||^2 - 2 x.c + ||c||^2 expansion."""
    d = X @ centers.T
    d *= -2.0
    d += x_sq[:, None]
    d += np.einsum("ij,ij->i", centers, centers)[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def kmeans_plusplus(X, n_clusters, random_state, n_local_trials=None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii): returns (centers, indices)."""
    n, d = X.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = np.einsum("ij,ij->i", X, X)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = random_state.randint(n)
    closest = _sq_dist(X, X[indices[:1]], x_sq)[:, 0]
    pot = closest.sum()
    for c in range(1, n_clusters):
        if pot <= 0:  # all points coincide with chosen centers
            indices[c] = random_state.randint(n)
            continue
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
    """Lloyd's algorithm from k-means++ seeds: returns (centers, labels, inertia)."""
    n, d = X.shape
    X64 = np.asarray(X, dtype=np.float64)
    centers, _ = kmeans_plusplus(X64, n_clusters, random_state)
    x_sq = np.einsum("ij,ij->i", X64, X64)
    tol_abs = tol * np.mean(np.var(X64, axis=0))
    labels = np.zeros(n, dtype=np.intp)
    for _ in range(max_iter):
        dist = _sq_dist(X64, centers, x_sq)
        labels = np.argmin(dist, axis=1)
        counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
        sums = np.zeros((n_clusters, d))
        np.add.at(sums, labels, X64) if n < 1000 else _group_sum(X64, labels, n_clusters, sums)
        new_centers = centers.copy()
        nonempty = counts > 0
        new_centers[nonempty] = sums[nonempty] / counts[nonempty, None]
        if not nonempty.all():  # relocate empty clusters to the farthest points
            far = np.argsort(dist[np.arange(n), labels])[::-1][: int((~nonempty).sum())]
            new_centers[~nonempty] = X64[far]
        shift = np.sum((new_centers - centers) ** 2)
        centers = new_centers
        if shift <= tol_abs:
            break
    dist = _sq_dist(X64, centers, x_sq)
    labels = np.argmin(dist, axis=1)
    inertia = float(dist[np.arange(n), labels].sum())
    return centers, labels, inertia


def _group_sum(X, labels, k, out):
    """Sum rows of X per label with one matrix product (faster than np.add.at)."""
    onehot = np.zeros((X.shape[0], k))
    onehot[np.arange(X.shape[0]), labels] = 1.0
    out[:] = onehot.T @ X
    return out
