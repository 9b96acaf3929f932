"""Start-up checks, before any record is read: the files the config names can be read or
written, and the Kafka cluster a Kafka source or sink needs answers.

One place, called by `streamgmm check-config` and by the daemon's start-up. Each problem is a
`PreflightError` whose message is one line naming the thing (key, path, addresses): the daemon
logs it and exits 1, `check-config` prints it and exits 1.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time

log = logging.getLogger("streamgmm.preflight")


class PreflightError(RuntimeError):
    """A start-up problem outside the config's syntax (exit code 1), in one line."""


# ------------------------------------------------------------------------------------ files

def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_readable_file(key: str, path: str, what: str = "file") -> None:
    """`path` exists, is a regular file (or a FIFO) and can be opened for reading."""
    if not os.path.exists(path):
        raise PreflightError(f"{key}: {what} {path} does not exist")
    if os.path.isdir(path):
        raise PreflightError(f"{key}: {what} {path} is a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise PreflightError(f"{key}: cannot read {what} {path}: "
                             f"{exc.strerror or exc}") from None


def check_writable_dir(key: str, directory: str, what: str, probe: bool = True) -> None:
    """New files can be created in `directory` (or in the directory that will be created
    there: its nearest existing ancestor must be a writable directory). With `probe`, an
    existing directory is tested by creating and removing a temporary file (permission bits
    do not tell the truth for root or read-only mounts)."""
    base = _nearest_existing(directory)
    if not os.path.isdir(base):
        raise PreflightError(f"{key}: cannot create {what} in {directory}: {base} is a file, "
                             "not a directory")
    if base != os.path.abspath(directory) or not probe:
        if not os.access(base, os.W_OK | os.X_OK):
            raise PreflightError(f"{key}: cannot create {what} in {directory}: {base} is not "
                                 "writable")
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".streamgmm-preflight-", dir=base)
    except OSError as exc:
        raise PreflightError(f"{key}: cannot write {what} in {directory}: "
                             f"{exc.strerror or exc}") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def check_writable_file(key: str, path: str, what: str = "file") -> None:
    """`path` can be appended to (an existing file, opened without truncating it) or
    created (see check_writable_dir)."""
    if os.path.isdir(path):
        raise PreflightError(f"{key}: {what} {path} is a directory, not a file")
    if os.path.exists(path):
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise PreflightError(f"{key}: cannot write {what} {path}: "
                                 f"{exc.strerror or exc}") from None
        return
    check_writable_dir(key, os.path.dirname(os.path.abspath(path)), f"{what} {path}")


def check_files(cfg) -> None:
    """Every path of the config, in the order the daemon uses them."""
    if cfg.source.type == "file":
        check_readable_file("source.path", cfg.source.path, "input file")
    for key, section in (("sink", cfg.sink), ("dead_letter", cfg.dead_letter)):
        if section.type == "file":
            check_writable_file(f"{key}.path", section.path,
                                "output file" if key == "sink" else "dead-letter file")
    ck = cfg.checkpoint.path
    if ck:
        if os.path.exists(ck):
            check_readable_file("checkpoint.path", ck, "checkpoint")
        check_writable_dir("checkpoint.path", os.path.dirname(os.path.abspath(ck)),
                           "checkpoints")
    if cfg.model.path and not (ck and os.path.exists(ck)):
        check_model_file(cfg.model.path, cfg.model.trusted)
    for name, value in sorted((cfg.kafka.security or {}).items()):
        if name.endswith("file") and isinstance(value, str) and value:
            check_readable_file(f"kafka.security.{name}", value)


def check_model_file(path: str, trusted: bool) -> None:
    """model.path is readable and, by its magic bytes, a streamgmm model (or, trusted, a
    pickle-based joblib file)."""
    from ...persistence import PICKLE_KINDS, identify

    check_readable_file("model.path", path, "model file")
    kind, what = identify(path)
    if kind == "zip":
        return
    if kind in PICKLE_KINDS:
        if not trusted:
            raise PreflightError(f"model.path: {path} is {what}, which runs code when loaded; "
                                 "set model.trusted: true only if you trust the file")
        return
    raise PreflightError(f"model.path: {path} is not a streamgmm model: it is {what}")


def check_model_content(cfg) -> None:
    """The model the daemon would start from (the checkpoint if there is one, else
    ``model.path``) loads, and it was trained on ``records.features`` (a model that knows its
    columns by position only takes those names): what the daemon checks at start, for
    ``check-config``."""
    from ...detection import Detector

    ck = cfg.checkpoint.path
    if ck and os.path.exists(ck):
        key, path, trusted = "checkpoint.path", ck, False
    elif cfg.model.path:
        key, path, trusted = "model.path", cfg.model.path, cfg.model.trusted
    else:
        return
    try:
        det = Detector.load(path, trusted=trusted)
    except Exception as exc:  # noqa: BLE001 - CheckpointError and what a damaged file raises
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise PreflightError(f"{key}: cannot load {path}: {text}") from None
    try:
        features = list(cfg.records.features)
        names = list(det.feature_names or [])
        if names != features and not det.adopt_feature_names(features):
            origin = f"{'checkpoint' if key == 'checkpoint.path' else 'model'} {path}"
            raise PreflightError(f"{key}: {path} was trained on features {names}, but "
                                 f"records.features is {features} (a model scores its "
                                 f"columns in the order it was trained on): "
                                 f"{start_over(cfg, origin)}")
    finally:
        det.close()


# ------------------------------------------------------------------------------------ Kafka

def kafka_needed(cfg) -> list[str]:
    """The config keys that need a Kafka cluster (empty: none)."""
    keys = []
    if cfg.source.type == "kafka":
        keys.append("source")
    if cfg.sink.type == "kafka":
        keys.append("sink")
    if cfg.dead_letter.type == "kafka":
        keys.append("dead_letter")
    if cfg.checkpoint.store == "kafka":
        keys.append("checkpoint")
    return keys


def servers(cfg) -> str:
    return ",".join(cfg.kafka.bootstrap_servers)


class Unreachable(ConnectionError):
    """No bootstrap address accepts a TCP connection."""


def _split_address(addr: str):
    host, _, port = addr.rpartition(":")
    if not host:
        return addr, 9092
    return host.strip("[]"), int(port)


def _tcp_check(cfg, timeout_s: float) -> None:
    """Unreachable (naming each address and why) unless one bootstrap address accepts a TCP
    connection: a quick, quiet first test before the Kafka client's own (noisy) bootstrap."""
    import socket

    reasons = []
    for addr in cfg.kafka.bootstrap_servers:
        try:
            host, port = _split_address(addr)
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            reasons.append(f"{addr}: {getattr(exc, 'strerror', None) or exc}")
    raise Unreachable("; ".join(reasons))


def list_topics(cfg, timeout_s: float) -> set:
    """One metadata round trip with a fresh admin client: the topic names, or an exception."""
    from kafka import KafkaAdminClient

    _tcp_check(cfg, min(timeout_s, 3.0))
    ms = int(max(1.0, timeout_s) * 1000)
    kwargs = dict(bootstrap_servers=list(cfg.kafka.bootstrap_servers),
                  client_id=f"{cfg.kafka.client_id}-preflight", bootstrap_timeout_ms=ms,
                  request_timeout_ms=ms)
    kwargs.update(dict(cfg.kafka.security or {}))
    admin = KafkaAdminClient(**kwargs)
    try:
        return set(admin.list_topics())
    finally:
        try:
            admin.close()
        except Exception:  # noqa: BLE001
            pass


class ClusterProbe:
    """Retries a metadata request with backoff in a background thread until it answers, so
    that the caller can wait for it while still reacting to a stop request at once."""

    def __init__(self, cfg, attempt_timeout: float = 5.0):
        self.cfg = cfg
        self.attempt_timeout = attempt_timeout
        self.topics: set | None = None
        self.error: BaseException | None = None
        self.attempts = 0
        self.done = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._main, name="kafka-preflight", daemon=True)

    def start(self) -> "ClusterProbe":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def _main(self) -> None:
        backoff = 0.5
        while not self._cancel.is_set():
            self.attempts += 1
            try:
                self.topics = list_topics(self.cfg, self.attempt_timeout)
                self.done.set()
                return
            except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, timeouts, auth...
                self.error = exc
            self._cancel.wait(backoff)
            backoff = min(backoff * 2, 5.0)


def describe(exc: BaseException) -> str:
    """`Type: message`, without the type twice (kafka-python's str() often starts with it)."""
    name, text = type(exc).__name__, str(exc).strip()
    if text.startswith(name):
        return text
    return f"{name}: {text}" if text else name


def check_kafka(cfg, timeout: float | None, stop_event: threading.Event | None = None,
                on_state=None) -> set | None:
    """Wait until the cluster answers a metadata request: its topic names. None when
    `stop_event` is set first. PreflightError naming the addresses after `timeout` seconds
    (None: wait for ever). `on_state(text)` is called once when the first attempt fails."""
    attempt = 5.0 if timeout is None else min(5.0, max(1.0, timeout / 3))
    quiet = _QuietClient()  # the probe's own client lines would only repeat our one line
    probe = ClusterProbe(cfg, attempt).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    try:
        while True:
            if probe.done.wait(0.1):
                return probe.topics
            if stop_event is not None and stop_event.is_set():
                return None
            if not told and probe.error is not None:
                told = True
                if on_state is not None:
                    on_state(describe(probe.error))
            if deadline is not None and time.monotonic() >= deadline:
                err = probe.error
                last = describe(err) if err is not None else "no answer"
                raise PreflightError(
                    f"kafka.bootstrap_servers: Kafka cluster at {servers(cfg)} unreachable "
                    f"for {timeout:g}s (kafka.connect_timeout_seconds; last error: {last})")
    finally:
        probe.cancel()
        quiet.restore()


class _QuietClient:
    """Silences the `kafka` loggers (below CRITICAL) while the start-up probe runs, unless
    the log level is DEBUG: nothing else talks to Kafka yet, and the probe reports itself."""

    def __init__(self):
        self.logger = logging.getLogger("kafka")
        self.level = self.logger.level
        self.active = logging.getLogger().getEffectiveLevel() > logging.DEBUG
        if self.active:
            self.logger.setLevel(logging.CRITICAL)

    def restore(self) -> None:
        if self.active:
            self.logger.setLevel(self.level)


def check_topics(cfg, topics: set) -> list[str]:
    """Warnings for output topics the cluster does not have (it may auto-create them)."""
    out = []
    for key, section in (("sink.topic", cfg.sink), ("dead_letter.topic", cfg.dead_letter)):
        if section.type == "kafka" and section.topic not in topics:
            out.append(f"{key}: topic {section.topic!r} does not exist on {servers(cfg)}; "
                       "sends fail unless the cluster creates topics automatically")
    if cfg.source.type == "kafka" and cfg.kafka.topics:
        missing = [t for t in cfg.kafka.topics if t not in topics]
        if missing:
            out.append(f"kafka.topics: {', '.join(repr(t) for t in missing)} do(es) not exist "
                       f"on {servers(cfg)} (yet): nothing to read from it until it does")
    return out


def check_warmup(cfg) -> list[str]:
    """A warning when the daemon will warm up (no ``model.path``) on fewer records than a fit
    of ``records.features`` needs (``detection.sizing``): its first model over-flags."""
    if cfg.model.path:
        return []
    from ...detection.sizing import sizing_warning
    from ..config import detector_dict
    w = sizing_warning(detector_dict(cfg), len(cfg.records.features))
    return [w] if w else []


def start_over(cfg, origin: str) -> str:
    """What to do to start from something else than ``origin`` (``checkpoint PATH``, ``state
    topic ...`` or ``model PATH``): the way out of a model the config does not fit."""
    target = (f"model.path ({cfg.model.path})" if cfg.model.path
              else "a warm-up (or a model.path)")
    if origin.startswith("checkpoint "):
        return f"to start from {target}, move the checkpoint {cfg.checkpoint.path} away"
    if origin.startswith("state topic "):
        return (f"to start from {target}, delete the group's state: a tombstone (a null value "
                f"keyed {cfg.kafka.group_id!r}) on {cfg.checkpoint.topic}")
    return ("fit a model on records.features ('streamgmm fit') and set model.path to it, or "
            "unset model.path to warm up")


def model_newer_than_checkpoint(cfg) -> bool:
    """Whether ``model.path`` was written after the checkpoint file (a model fitted since,
    that the operator means to use, though the checkpoint is restored first)."""
    path, ck = cfg.model.path, cfg.checkpoint.path
    try:
        return bool(path and ck) and os.path.getmtime(path) > os.path.getmtime(ck)
    except OSError:
        return False


def config_warnings(cfg) -> list[str]:
    """The warnings the settings alone give, at the daemon's start and in ``check-config``:
    a warm-up too small for the model, a state or a fleet sync larger than Kafka takes."""
    return check_warmup(cfg) + check_state_size(cfg) + check_sync_size(cfg)


def check_model_source(cfg) -> list[str]:
    """A warning when ``model.path`` is set but a checkpoint file exists: the daemon restores
    the checkpoint and does not load ``model.path`` (louder when the model file is newer: a
    model fitted since, that the operator means to use)."""
    path, ck = cfg.model.path, cfg.checkpoint.path
    if not path or cfg.checkpoint.store != "file" or not ck or not os.path.exists(ck):
        return []
    newer = model_newer_than_checkpoint(cfg)
    return [f"model.path: {path} will not be loaded: the checkpoint {ck} exists and is "
            "restored instead" + (" although the model file is newer" if newer else "") +
            "; to start from model.path, move the checkpoint away"]


def check_state_size(cfg) -> list[str]:
    """A warning when a daemon's state in Kafka (`checkpoint.store: kafka`, no fleet: a
    fleet stops at start-up instead, see the config's checks) can grow past
    `checkpoint.max_bytes`: such a checkpoint is not written (the daemon scores on)."""
    if cfg.checkpoint.store != "kafka" or cfg.fleet.enabled:
        return []
    from ...detection.sizing import components_text, state_bytes

    recent = cfg.checkpoint.include_recent_records
    need = state_bytes(cfg.detector, cfg.records.features, include_recent_records=recent)
    limit = cfg.checkpoint.max_bytes
    if need <= limit:
        return []
    without = state_bytes(cfg.detector, cfg.records.features)
    return [f"checkpoint.max_bytes: with {len(cfg.records.features)} features "
            f"({components_text(cfg.detector)}) the state can grow to {need:,} bytes"
            + (f" ({without:,} without checkpoint.include_recent_records)" if recent else "")
            + f", over checkpoint.max_bytes ({limit:,}): a checkpoint that large is not "
            f"written. Set checkpoint.max_bytes to at least {need:,} (raise the state "
            f"topic's max.message.bytes with it), or use checkpoint.store: file"]


# Apache Kafka's default max.message.bytes (broker message.max.bytes), ~1 MB
KAFKA_DEFAULT_MESSAGE_BYTES = 1_048_588


def check_sync_size(cfg) -> list[str]:
    """A warning when a fleet member's sync can pass Apache Kafka's default max.message.bytes:
    its rows are split into messages under 900 KB, but its online-EM statistics (features
    squared times full components) go in one message, refused whole by such a topic."""
    if not cfg.fleet.enabled:
        return []
    from ...detection.sizing import components_text, statistics_bytes
    from ..fleet.member import SCORES_PER_SYNC, SYNC_OVERHEAD

    need = (statistics_bytes(cfg.detector, cfg.records.features) + 16 * SCORES_PER_SYNC
            + SYNC_OVERHEAD)
    if need <= KAFKA_DEFAULT_MESSAGE_BYTES:
        return []
    return [f"fleet.topic: with {len(cfg.records.features)} features "
            f"({components_text(cfg.detector)}) a member's sync carries up to {need:,} bytes "
            f"of statistics in one message, over Apache Kafka's default max.message.bytes "
            f"({KAFKA_DEFAULT_MESSAGE_BYTES:,}): set max.message.bytes of the coordination "
            f"topic {cfg.fleet.topic!r} to at least {need:,}, or make the model smaller "
            f"(detector.covariance_type: diag, fewer components or features)"]


def check_metrics_address(cfg) -> None:
    """The metrics endpoint's address can be listened on (bound and released at once, as
    the daemon's HTTP server binds it: with SO_REUSEADDR)."""
    if not cfg.metrics.enabled:
        return
    import socket

    host, port = cfg.metrics.host, cfg.metrics.port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1)
    except OSError as exc:
        key = "metrics.host" if isinstance(exc, socket.gaierror) else "metrics.port"
        raise PreflightError(f"{key}: cannot serve metrics on {host}:{port}: "
                             f"{exc.strerror or exc}") from None


def run_preflight(cfg, network: bool = True, stop_event=None, on_state=None,
                  check_model: bool = False) -> list[str]:
    """All checks: PreflightError for the first problem; returns warnings (one line each).
    ``check_model`` also loads the model (check-config; the daemon loads it anyway).
    Returns None-equivalent early (empty list) when `stop_event` is set while waiting."""
    check_files(cfg)
    if check_model:  # check-config: the checks the daemon makes before these, too
        check_metrics_address(cfg)
        check_model_content(cfg)
    if not network or not kafka_needed(cfg):
        return []
    topics = check_kafka(cfg, cfg.kafka.connect_timeout_seconds, stop_event, on_state)
    if topics is None:
        return []
    return check_topics(cfg, topics)
