"""streamgmm: streaming anomaly detection with Gaussian mixture models."""
from ._version import __version__
from .exceptions import ConvergenceWarning, NotFittedError
from .models import GaussianMixture
from .models import SelectionResult, select_model  # noqa: F401
from .models import OnlineGaussianMixture  # noqa: F401
from .detection import DetectionResult, Detector, DetectorConfig, DetectorEvent  # noqa: F401

__all__ = ["ConvergenceWarning", "DetectionResult", "Detector", "DetectorConfig", "DetectorEvent",
           "GaussianMixture", "NotFittedError", "OnlineGaussianMixture", "SelectionResult",
           "__version__", "select_model"]
