"""Student-t weights: robust (M-estimated) statistics for a Gaussian component.

A record at squared Mahalanobis distance delta^2 from a component counts in that component's
mean and covariance with weight u = (nu + d) / (nu + delta^2), the EM weights of a multivariate
Student-t with nu degrees of freedom (Peel and McLachlan, 2000). Records far from the bulk
(gross outliers, or a small cluster a component straddles) pull its covariance less, so they
stay far out instead of widening it and masking themselves. The component stays a Gaussian,
and the score stays its log-density.

The weight never falls below ``WEIGHT_FLOOR``. Without a floor, a mode that a component does
not cover (a new regime's sub-population, a few % of the stream) gets a weight near 0, so
the component tightens and the mode falls further out: the t-EM iteration, online, breaks it
off and it is flagged for good (measured: vowels' class-switch stream, 2.3% flagged over the
last 5,000 of the 10,000 records after the switch, never back in [0.5p, 2p]). At a quarter
weight such a mode is still learned and absorbed; records far enough for the floor to bind
(delta^2 > 3 nu + 4 d) are few, and the detector learns from neither its flagged records nor
gross outliers.
"""
import numpy as np

WEIGHT_FLOOR = 0.25


def t_weights(mahalanobis_sq, n_features, dof, out=None, floor=None):
    """max((nu + d) / (nu + delta^2), floor) elementwise; 0 where delta^2 is infinite.
    ``floor`` defaults to ``WEIGHT_FLOOR``; 0 gives the plain Student-t EM weights."""
    floor = WEIGHT_FLOOR if floor is None else floor
    out = np.add(mahalanobis_sq, dof, out=out)
    np.divide(float(dof) + n_features, out, out=out)
    if floor:
        np.maximum(out, floor, out=out, where=out > 0)
    return out
