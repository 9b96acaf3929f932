"""Model-selection criteria: free-parameter count, BIC and AIC (lower is better)."""
import numpy as np


def n_parameters(n_components, n_features, covariance_type):
    """Number of free parameters of a Gaussian mixture (weights sum to one)."""
    k, d = n_components, n_features
    cov = {"full": k * d * (d + 1) / 2.0, "diag": k * d,
           "tied": d * (d + 1) / 2.0, "spherical": k}[covariance_type]
    return int(cov + k * d + k - 1)


def bic(mean_log_likelihood, n_samples, n_params):
    """Bayesian information criterion: -2 log L + p log n."""
    return -2.0 * mean_log_likelihood * n_samples + n_params * np.log(n_samples)


def aic(mean_log_likelihood, n_samples, n_params):
    """Akaike information criterion: -2 log L + 2 p."""
    return -2.0 * mean_log_likelihood * n_samples + 2 * n_params
