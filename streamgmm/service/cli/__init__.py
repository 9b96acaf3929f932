"""The `streamgmm` command: run, check-config, fit, score, inspect, generate."""
from .commands import main

__all__ = ["main"]
