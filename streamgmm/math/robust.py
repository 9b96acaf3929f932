"""Student-t weights: robust (M-estimated) statistics for a Gaussian component.

A record at squared Mahalanobis distance delta^2 from a component counts in that component's
mean and covariance with weight u = (nu + d) / (nu + delta^2), the EM weights of a multivariate
Student-t with nu degrees of freedom (Peel and McLachlan, 2000). Records far from the bulk
(gross outliers, or a small cluster a component straddles) pull its covariance less, so they
stay far out instead of widening it and masking themselves. The component stays a Gaussian,
and the score stays its log-density.
"""
import numpy as np


def t_weights(mahalanobis_sq, n_features, dof, out=None):
    """(nu + d) / (nu + delta^2) elementwise; 0 where delta^2 is infinite."""
    out = np.add(mahalanobis_sq, dof, out=out)
    np.divide(float(dof) + n_features, out, out=out)
    return out
