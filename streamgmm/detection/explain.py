"""Why a record is anomalous: each feature's share of its squared Mahalanobis distance.

For the record's most likely component (mean mu, precision P), the squared distance
(x - mu)^T P (x - mu) splits exactly into per-feature terms (x - mu)_j [P (x - mu)]_j. Their
shares add up to one; with correlated features a share can be negative (that feature pulls the
record back towards the component).
"""
import numpy as np

# Rows x d x d up to which the flagged rows' precisions are gathered into one array (8 MB).
GATHER_VALUES = 1 << 20


def precision_matrices(precisions_cholesky, covariance_type, n_components, n_features):
    """The (k, d, d) precision matrices ('full', 'tied'), or for 'diag' and 'spherical' their
    (k, d) diagonals (dense d x d matrices of zeros would cost d^2 per component)."""
    pc = np.asarray(precisions_cholesky, dtype=np.float64)
    if covariance_type == "full":
        return pc @ np.swapaxes(pc, 1, 2)
    if covariance_type == "tied":
        return np.broadcast_to(pc @ pc.T, (n_components, n_features, n_features))
    if covariance_type == "diag":
        return pc * pc
    return np.repeat((pc * pc)[:, None], n_features, axis=1)


def feature_shares(Xs, components, means, precisions):
    """Per-feature shares (n, d) of each row's squared Mahalanobis distance to its component;
    ``precisions`` as ``precision_matrices`` gives them ((k, d) for diagonal ones)."""
    diff = np.asarray(Xs, dtype=np.float64) - means[components]
    n, d = diff.shape
    if precisions.ndim == 2:
        pdiff = diff * precisions[components]
    elif n * d * d <= GATHER_VALUES:
        pdiff = np.einsum("nij,nj->ni", precisions[components], diff)
    else:  # per component: no (n, d, d) gather of precisions on wide records
        pdiff = np.empty_like(diff)
        for c in np.unique(components):
            rows = components == c
            pdiff[rows] = diff[rows] @ precisions[c].T
    terms = diff * pdiff
    total = terms.sum(axis=1, keepdims=True)
    return terms / np.where(total > 0, total, 1.0)


def top_contributions(shares, feature_names, top=3):
    """The ``top`` largest shares of each row as [(feature_name, share), ...]."""
    order = np.argsort(-shares, axis=1)[:, :top]
    return [[(feature_names[j], round(float(row[j]), 6)) for j in idx]
            for row, idx in zip(shares, order)]
