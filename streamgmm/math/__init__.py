"""Layer 1: pure NumPy/SciPy math for Gaussian mixtures (no I/O, no state)."""
from .criteria import aic, bic, n_parameters
from .em import (EMData, e_step, em_e_step, em_m_step, estimate_gaussian_parameters,
                 predict_proba_chunked, score_samples_chunked, weighted_log_prob)
from .gaussian import (COVARIANCE_TYPES, GaussianScorer, compute_precision_cholesky,
                       covariances_from_cholesky, estimate_log_gaussian_prob, log_det_cholesky,
                       precision_cholesky_from_precisions, precisions_from_cholesky)
from .kmeans import kmeans, kmeans_plusplus
from .logsumexp import log_normalize_rows, logsumexp_rows
from .robust import t_weights
from . import sufficient_stats  # noqa: F401  (online-EM statistics)

__all__ = [
    "COVARIANCE_TYPES", "EMData", "GaussianScorer", "aic", "bic", "compute_precision_cholesky",
    "covariances_from_cholesky", "e_step", "em_e_step", "em_m_step", "estimate_gaussian_parameters",
    "estimate_log_gaussian_prob", "kmeans", "kmeans_plusplus", "log_det_cholesky",
    "log_normalize_rows", "logsumexp_rows", "n_parameters", "precision_cholesky_from_precisions",
    "precisions_from_cholesky", "predict_proba_chunked", "score_samples_chunked",
    "t_weights", "weighted_log_prob",
]
