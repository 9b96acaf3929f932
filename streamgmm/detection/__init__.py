"""Layer 3: detection policy (scaler, threshold, drift, refit, explanation): arrays in, decisions out."""
from .config import DetectorConfig, DriftConfig, OnlineConfig, RefitConfig, ThresholdConfig
from .detector import DetectionResult, Detector, DetectorEvent
from .scaler import StandardScaler

__all__ = ["DetectionResult", "Detector", "DetectorConfig", "DetectorEvent", "DriftConfig",
           "OnlineConfig", "RefitConfig", "StandardScaler", "ThresholdConfig"]
