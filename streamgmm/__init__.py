"""streamgmm: streaming anomaly detection with Gaussian mixture models."""
from ._version import __version__
from .exceptions import ConvergenceWarning, NotFittedError
from .models import GaussianMixture

__all__ = ["ConvergenceWarning", "GaussianMixture", "NotFittedError", "__version__"]
