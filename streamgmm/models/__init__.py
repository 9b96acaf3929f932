"""Layer 2: batch and online Gaussian mixture models."""
from .gaussian_mixture import GaussianMixture
from .selection import SelectionResult, select_model  # noqa: F401
from .online import OnlineGaussianMixture  # noqa: F401
from .ensemble import MixtureEnsemble  # noqa: F401

__all__ = ["GaussianMixture", "OnlineGaussianMixture", "MixtureEnsemble", "SelectionResult",
           "select_model"]
