"""Model and checkpoint files: the Detector's state (plain metadata and arrays) written
atomically as NPZ with a checksummed manifest, no pickle; joblib only when trusted.

This sits below the detection layer: it knows nothing of the Detector, only of
``(meta, arrays)`` pairs, so ``Detector.save/load`` call down into it (no import cycle).
"""
from .checkpoint import (PICKLE_KINDS, CheckpointError, atomic_write_bytes, dumps_state,
                         export_joblib, identify, is_zip, load_state, loads_state, read_joblib,
                         read_model_file, save_state)

__all__ = ["PICKLE_KINDS", "CheckpointError", "atomic_write_bytes", "dumps_state",
           "export_joblib", "identify", "is_zip", "load_state", "loads_state", "read_joblib",
           "read_model_file", "save_state"]
