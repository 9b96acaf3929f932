"""Layer 2: batch and online Gaussian mixture models."""
from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
