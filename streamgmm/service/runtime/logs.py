"""Layer 4: logging set-up on stderr, as plain text or one JSON object per line.

``setup_logging("INFO", "json")`` installs one handler on the root logger (calling it again
replaces it, so the CLI and the daemon can both call it). Fields passed with
``log.info("msg", extra={"topic": t, "offset": o})`` appear as top-level keys in JSON lines and
as ``key=value`` pairs in plain text.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["setup_logging", "ClientLogLimiter", "JsonFormatter", "PlainFormatter"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName"}
_HANDLER_MARK = "_streamgmm_handler"
_NOISY_LOGGERS = ("kafka", "urllib3")


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _iso_utc(created: float) -> str:
    """``2024-05-01T12:00:00.123Z`` for a ``time.time()`` value."""
    secs = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + \
        f".{int((created - secs) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extras(record).items():
            out.setdefault(k, v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """``2024-05-01T12:00:00.123Z INFO streamgmm.daemon: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso_utc(record.created)} {record.levelname} {record.name}: " \
               f"{record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_plain_value(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _plain_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return json.dumps(s) if (not s or any(c in s for c in ' "=\n')) else s


class ClientLogLimiter(logging.Filter):
    """Rate-limits the Kafka client's own log lines (loggers ``kafka.*``).

    While a broker is down kafka-python logs every reconnect attempt from several loggers
    (hundreds of lines a minute). This filter passes the first line of each kind (same logger,
    level and message with the numbers blanked), then drops repeats of that kind for
    ``interval`` seconds; the next one after that passes with a count of what was dropped.
    At most ``budget`` client lines pass per interval in all. The daemon's own state lines
    (``streamgmm.*``) are never limited.
    """

    def __init__(self, interval: float = 60.0, budget: int = 10, prefix: str = "kafka",
                 clock=time.monotonic):
        super().__init__()
        self.interval = float(interval)
        self.budget = int(budget)
        self.prefix = prefix
        self._clock = clock
        self._kinds: dict = {}   # kind -> [window start, suppressed count]
        self._window = clock()
        self._passed = 0

    def _kind(self, record: logging.LogRecord):
        import re

        text = record.msg if isinstance(record.msg, str) else str(record.msg)
        return record.name, record.levelno, re.sub(r"0x[0-9a-fA-F]+|\d+", "#", text)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not (name == self.prefix or name.startswith(self.prefix + ".")):
            return True
        now = self._clock()
        if now - self._window >= self.interval:
            self._window, self._passed = now, 0
        kind = self._kind(record)
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        if self._passed >= self.budget:
            if state is not None:
                state[1] += 1
            return False
        suppressed = state[1] if state is not None else 0
        self._kinds[kind] = [now, 0]
        self._passed += 1
        if record.exc_info:  # one line: the exception's type and text, not its traceback
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info, record.exc_text = None, None
        if suppressed:
            record.msg = (f"{record.getMessage()} [{suppressed} similar Kafka client "
                          f"messages suppressed in the last {self.interval:g}s]")
            record.args = None
        return True


def setup_logging(level: str | int = "INFO", fmt: str = "plain",
                  stream: IO[str] | None = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) at ``level`` in ``plain`` or ``json`` format.

    Replaces a handler installed by an earlier call; quietens kafka-python's chatty INFO logs
    and rate-limits its warnings (ClientLogLimiter) unless the level is DEBUG. Returns the
    handler.
    """
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    if fmt not in ("plain", "json"):
        raise ValueError(f"unknown log format {fmt!r}: expected plain or json")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    if level > logging.DEBUG:  # DEBUG shows the client's every line
        handler.addFilter(ClientLogLimiter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG
                                         else max(level, logging.WARNING))
    logging.captureWarnings(True)
    return handler
