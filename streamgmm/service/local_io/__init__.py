"""Local sources and sinks: files, stdin, stdout."""
from .files import FileSource, JsonLinesSink, StdinSource, detect_format

__all__ = ["FileSource", "JsonLinesSink", "StdinSource", "detect_format"]
