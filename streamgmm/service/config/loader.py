"""Layer 4: the daemon's YAML configuration, validated into nested frozen dataclasses.

One schema (the dataclasses below, in the order and with the defaults of docs/configuration.md)
drives parsing, validation, defaults, environment overrides and ``to_dict``. A bad value raises
``ConfigError(key_path, message)`` whose ``str()`` is ``"<key.path>: <message>"``: the CLI prints
that line and exits 2, so every message names the key and what was expected.

Sources of values, in increasing precedence:

1. the defaults below;
2. the YAML file (``load_config``) or mapping (``config_from_dict``);
3. environment overrides ``STREAMGMM__<SECTION>__<KEY>[__<SUBKEY>...]=value``: double underscore
   between levels, names case-insensitive, the value parsed as a YAML scalar or flow value
   (``STREAMGMM__KAFKA__TOPICS='[a, b]'``, ``STREAMGMM__DETECTOR__THRESHOLD__PERCENTILE=0.5``,
   ``STREAMGMM__SHUTDOWN_TIMEOUT_SECONDS=30``). An override naming an unknown key is an error
   naming it. Inside the free-form maps (``kafka.security``/``consumer``/``producer``,
   ``records.impute``) any key is accepted (lower-cased; impute keys match a feature name
   case-insensitively).

After that, string values are interpolated: ``${VAR}`` and ``${VAR:-default}`` are replaced from
the environment (``$${`` is a literal ``${``); an undefined ``${VAR}`` without a default is an
error naming the key. When a whole value is one ``${...}`` reference and the key expects a number
or a boolean, the substituted text is parsed as a YAML scalar (``port: ${PORT:-9108}`` works);
values in the free-form maps stay strings.

Paths (``source.path``, ``sink.path``, ``dead_letter.path``, ``model.path``, ``checkpoint.path``
and the ``ssl_*file`` entries of ``kafka.security``): ``~`` is expanded; a relative path in a
config *file* is resolved against that file's directory (in ``config_from_dict`` against
``base_dir``, default the current directory); ``package:NAME`` names a data file shipped in the
``streamgmm/data`` package directory (``package:demo.jsonl``), so the demo works from any cwd.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ...detection.config import (DetectorConfig, DriftConfig, OnlineConfig, RefitConfig,
                                 ThresholdConfig)
from ...schema import (REQUIRED, Bool, Builder, Choice, ConfigError, FeaturePath, Int, Map, Num,
                       Optional, PathStr, Regex, Str, StrList, TopicName, iter_settings, join,
                       section, setting, show, to_plain, unknown_key)
from .local_defaults import apply_local_defaults

__all__ = [
    "ConfigError",
    "Config",
    "SourceConfig",
    "KafkaConfig",
    "RecordsConfig",
    "SinkConfig",
    "DeadLetterConfig",
    "ThresholdConfig",
    "OnlineConfig",
    "DriftConfig",
    "RefitConfig",
    "ModelConfig",
    "CheckpointConfig",
    "MetricsConfig",
    "LoggingConfig",
    "load_config",
    "config_from_dict",
    "detector_dict",
    "resolve_path",
    "is_secret_key",
    "ENV_PREFIX",
    "MASK",
]

ENV_PREFIX = "STREAMGMM__"
MASK = "***"
_PACKAGE_PREFIX = "package:"
_SECRET_WORDS = ("password", "secret", "token", "credential")


# --------------------------------------------------------------------------------------------
# The schema. Field order = YAML order in docs/configuration.md and in ``to_dict``.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    """Where records come from: a Kafka topic, a CSV/JSON-lines file, or standard input."""

    type: str = setting(Choice("kafka", "file", "stdin"), "kafka",
        doc='`kafka`, `file` (CSV or JSON lines) or `stdin`')
    path: str | None = setting(Optional(PathStr()), None, path=True,
        doc='file source: the file to read (gzip-compressed files are recognised by content and decompressed)')
    format: str = setting(Choice("auto", "jsonl", "csv"), "auto",
        doc='`auto` (by extension: `.csv` and `.csv.gz` are CSV), `jsonl` or `csv`')
    follow: bool = setting(Bool(), False,
        doc=('file source: keep reading at end of file (like `tail -F`); otherwise the run '
             'ends with exit 0 at the end. A file renamed away and replaced (logrotate '
             '`create`, deleted and created again, or replaced by a rename over it) gives way '
             'to the new file, read from its start, and the old one is read on until nothing '
             'has been appended to it for 5 s (its writer may append to it until it reopens '
             'its log). A truncated file (`copytruncate`) is read again from its start, also '
             'when it was refilled past the read position before the daemon looked (its first '
             'bytes changed); what was written before the truncation and not read yet is read '
             'first from logrotate\'s copy (a file of the same directory whose name begins with '
             'the file\'s and that holds the bytes read: `app.log.1`). Lost are the lines '
             'written between the copy and the truncation (logrotate\'s own window), and the '
             'unread rest if the copy is compressed at once or in another directory or if the '
             'file was truncated twice between two looks (an idle daemon looks every '
             '`kafka.poll_timeout_ms`): prefer `create`. A '
             'truncated CSV file keeps its header (the first row after is a record unless it '
             'repeats the header); a new file has its own. A gzip input is not followed across '
             'a rotation, and a gzip file still being written is not read (exit 1, as a cut '
             'file)'))
    resume: bool = setting(Bool(), True,
        doc=('file source with a `checkpoint.path`: store the read position of the committed '
             'records in `<checkpoint.path>.position` (at each commit, atomically) and, after a '
             'restart, go on from it, as a Kafka consumer goes on from its committed offset. It '
             'is used only while the file begins with the same bytes as when it was stored and '
             'is unchanged up to it. A file rotated since (renamed in the same directory, '
             '`app.log.1`: found by its inode) is read to its end first, then the ones rotated '
             'after it (logrotate\'s numbering: `app.log.2`, then `app.log.1`), then the new '
             'file; a file truncated since (`copytruncate`) is read on from the position in '
             'its copy (a file of the same directory whose name begins with the file\'s and '
             'that holds the same bytes up to the position), then from its start (with or '
             'without `follow`). A truncated or regenerated file, a `.position` file that '
             'cannot be read or parsed, or one stored for another file (`source.path` changed '
             'since), is read from its start (a warning says so: records may be scored '
             'twice); so is the new file when the rotated one was compressed or moved to '
             'another directory, and what that one held after the position is then not read. '
             'Delete the `.position` file to read from the start '
             'again. `false`, or no `checkpoint.path`: every start reads the file from its first '
             'line'))


@dataclass(frozen=True)
class KafkaConfig:
    """Kafka connection and consumer settings (``security``/``consumer``/``producer`` pass through
    to kafka-python)."""

    bootstrap_servers: tuple = setting(StrList(1), ("localhost:9092",),
        doc='brokers')
    topics: tuple | None = setting(Optional(StrList(1, item=TopicName())), ("events",),
        doc='input topics (or `topic_pattern`; exactly one of the two)')
    topic_pattern: str | None = setting(Optional(Regex()), None,
        doc=('regex of input topics, matched from the start of a name (as kafka-python does); '
             'it must not match `sink.topic` or `dead_letter.topic`'))
    group_id: str = setting(Str(), "streamgmm",
        doc='consumer group; daemons with the same group split the partitions')
    client_id: str = setting(Str(), "streamgmm",
        doc='client id')
    auto_offset_reset: str = setting(Choice("earliest", "latest"), "earliest",
        doc='where a new group starts (`earliest` or `latest`)')
    max_poll_records: int = setting(Int(1), 1000,
        doc='records per poll (one vectorised batch)')
    poll_timeout_ms: int = setting(Int(0), 500,
        doc=('how long a poll waits for records when none are there (at most 1,000 ms per '
             'poll, so a stop signal is seen within a second; a followed file is looked at '
             'every 50 ms meanwhile, and its new lines are read at once)'))
    session_timeout_ms: int = setting(Int(1), 10000,
        doc='group session timeout')
    heartbeat_interval_ms: int = setting(Int(1), 3000,
        doc='heartbeat interval (below the session timeout)')
    connect_timeout_seconds: float | None = setting(Optional(Num(0, lo_open=True)), 60.0,
        doc=('at start-up, how long to wait for the cluster to answer (retried with backoff, '
             '`/readyz` not ready meanwhile) before exiting 1 with one line naming '
             '`bootstrap_servers`; `null` waits for ever. Also the wait of `check-config`. Once '
             'running, an outage is waited out whatever this says (docs/operations.md)'))
    compression_type: str = setting(Choice("none", "gzip", "snappy", "lz4", "zstd"), "none",
        doc=('compression of the record batches the daemon produces (events and dead letters): '
             '`none`, `gzip`, `snappy`, `lz4` or `zstd`. Input topics in any of these are read '
             'whatever this says. `none` by default because every reader of the output topics must'
             ' support the codec (gzip is the one every client has; zstd needs Kafka >= 2.1 '
             'clients and brokers), and with `emit: anomalies` the output is small; `lz4` or '
             '`zstd` pay off with `emit: all`. A `compression_type` under `kafka.producer` '
             'overrides it'))
    security: dict = setting(Map(), {}, free=True, file_keys=True,
        doc=("passed to kafka-python's consumer, producers and admin client: `security_protocol`, "
             '`sasl_mechanism`, `sasl_plain_username`, `sasl_plain_password`, `ssl_cafile`, '
             '`ssl_certfile`, `ssl_keyfile`, ... (names and value types are checked against '
             'kafka-python at start-up, as for `consumer` and `producer`)'))
    consumer: dict = setting(Map(), {}, free=True,
        doc=('extra `KafkaConsumer` arguments (an unknown name, or a value of another type than '
             "kafka-python's default, stops start-up naming the key)"))
    producer: dict = setting(Map(), {}, free=True,
        doc=("extra `KafkaProducer` arguments, over the daemon's defaults `acks: all`, `linger_ms:"
             ' 100`, `batch_size: 262144` (checked as `consumer` is)'))


@dataclass(frozen=True)
class RecordsConfig:
    """How a record becomes a feature vector (see streamgmm/service/records.py)."""

    features: tuple = setting(StrList(1, item=FeaturePath()), REQUIRED,
                           help="list the numeric record fields to score, e.g. "
                                "features: [amount, latency_ms, sensor.temp]",
        doc='the numeric fields to score, dotted paths for nested fields (`sensor.temp`)')
    key_field: str | None = setting(Optional(FeaturePath()), None,
        doc='a field carried to the output as `key`')
    timestamp_field: str | None = setting(Optional(FeaturePath()), None,
        doc='a field (epoch s/ms or ISO-8601) used when a record has no Kafka timestamp')
    max_bytes: int = setting(Int(1), 1048576,
        doc='larger records are dead letters (`too_large`)')
    impute: dict = setting(Map(Num()), {}, free=True,
        doc=('field → number: a missing or invalid value of that field is replaced instead of '
             'rejected'))


@dataclass(frozen=True)
class SinkConfig:
    """Where scored records (anomalies only, or all) go."""

    type: str = setting(Choice("kafka", "file", "stdout"), "kafka",
        doc='`kafka`, `file` or `stdout`')
    topic: str = setting(TopicName(), "anomalies",
        doc=('output topic. An event too big for one producer request '
             '(`kafka.producer.max_request_size`: only a huge record key can make it so) has '
             'its Kafka key cut to a quarter of the request and its `key` field (as a string) '
             'to the first characters that fit, with `"key_truncated": true`'))
    path: str | None = setting(Optional(PathStr()), None, path=True,
        doc=('file sink: JSON lines file, appended to. Renamed away or deleted (logrotate '
             '`create`), it is created again at the next write: no signal is needed (a '
             'SIGHUP is logged and otherwise ignored). `copytruncate` works '
             '(append mode) but loses the lines written between its copy and its truncation'))
    emit: str = setting(Choice("anomalies", "all"), "anomalies",
        doc='`anomalies` (flagged records only) or `all` (a line per record)')


@dataclass(frozen=True)
class DeadLetterConfig:
    """Where undecodable records go, with the reason."""

    type: str = setting(Choice("kafka", "file", "stdout"), "kafka",
        doc='`kafka`, `file` or `stdout`')
    topic: str = setting(TopicName(), "events.dlq",
        doc=('dead-letter topic: the original value, headers with the original topic, partition, '
             'offset, group, reason and message. A value too big for one producer request '
             '(`kafka.producer.max_request_size`, 1 MiB by default: any `too_large` record over '
             '1 MiB) keeps its first bytes that fit, with its whole size in the header '
             '`__streamgmm.errors.value.truncated`; if its key and headers alone are too big, '
             'its own headers are left out too (their number in '
             '`__streamgmm.errors.headers.dropped`) and its key cut to a quarter of the request '
             '(its whole size in `__streamgmm.errors.key.truncated`); a null header value '
             '(which kafka-python cannot send) becomes empty. A replayed dead letter that '
             'fails again gets the new failure\'s `__streamgmm.errors.*` headers in place of '
             'the earlier ones. The whole record stays in the '
             'input topic at the offset the headers name. If you raise `max_request_size`, '
             "raise the dead-letter topic's `max.message.bytes` with it: a dead letter the "
             'broker refuses as too large is cut to half its size (one warning), and so are '
             "the topic's later ones over that size"))
    path: str | None = setting(Optional(PathStr()), None, path=True,
        doc='file dead letters: JSON lines file (rotated as `sink.path` is)')


@dataclass(frozen=True)
class ModelConfig:
    """A pretrained model to start from (skips warm-up)."""

    path: str | None = setting(Optional(PathStr()), None, path=True,
        doc=('a pretrained model (`streamgmm fit` output, `.npz`): skips warm-up; the `detector` '
             'settings of this file apply to it. Read only when there is no checkpoint to '
             'restore: the start-up log then says it was not loaded (a warning when the file '
             'is newer than the checkpoint); move the checkpoint away to start from a new '
             'model'))
    trusted: bool = setting(Bool(), False,
        doc='allow a pickle-based `.joblib` model (it can run code when loaded)')
    sync_seconds: float = setting(Num(0, lo_open=True), 2.0,
        doc=('with `fleet.enabled`: how often members send their statistics and the leader '
             'publishes a version; every member scores with a new version within about this '
             'long'))


@dataclass(frozen=True)
class FleetConfig:
    """Daemons of one consumer group sharing one model through Kafka (docs/operations.md)."""

    enabled: bool = setting(Bool(), False,
        doc=('share one model, threshold and refits across the consumer group: members send '
             'online-EM statistics to a leader chosen by Kafka, which publishes versions to '
             '`checkpoint.topic`; needs `source.type: kafka` and `checkpoint.store: kafka`'))
    topic: str = setting(TopicName(), "streamgmm.fleet",
        doc=('coordination topic (created if missing, 1 partition): its owner in the group '
             '`<kafka.group_id>.fleet` is the leader, and members send it their syncs'))
    sample_records: int = setting(Int(0), 500,
        doc=('**raw data**: input rows each member sends per sync for group refits (they pass '
             'through `fleet.topic`; set its retention accordingly); 0 disables group refits'))


@dataclass(frozen=True)
class CheckpointConfig:
    """Periodic atomic checkpoints of the detector state: to a file (``path: null`` disables
    them) or, with ``store: kafka``, to a compacted Kafka topic keyed by the group id."""

    path: str | None = setting(Optional(PathStr()), None, path=True,
        doc=('checkpoint file (`null`: no checkpoints); restored at start (before `model.path`), '
             "with this file's `detector` settings. One trained on other `records.features`, or "
             'on the same in another order, is refused (exit 1, naming both lists): move it '
             'away to start from `model.path` or a warm-up'))
    interval_seconds: float = setting(Num(0, lo_open=True), 60.0,
        doc=('checkpoint period; also one right after each new model (the warm-up fit, '
             'a refit), before the records it was fitted on are committed, and one at shutdown'))
    include_recent_records: bool = setting(Bool(), False,
        doc=('**holds raw data**: also save the recent input records (up to '
             '`detector.refit.window` raw rows for a refit, the online-learning queue and the '
             "drift tests' unfinished reference), so that a refit can start right after a restart."
             ' Off: checkpoints and model files hold parameters, summary statistics and scores '
             'only, and after a restart a refit waits for enough new records'))
    store: str = setting(Choice("file", "kafka"), "file",
        doc=('`file` (`checkpoint.path`) or `kafka`: one record per checkpoint in the compacted '
             '`checkpoint.topic`, keyed by `kafka.group_id`; a daemon with no state restores the '
             'newest valid record at start (no warm-up); `checkpoint.path` must then be `null`'))
    topic: str = setting(TopicName(), "streamgmm.state",
        doc=('state topic for `store: kafka` (created if missing: 1 partition, '
             '`cleanup.policy=compact`)'))
    max_bytes: int = setting(Int(1024), 1000000,
        doc=('largest state record for `store: kafka` (a bigger state is not written and the '
             "log says so); Kafka's default `message.max.bytes` is about 1 MB: raise the "
             "topic's `max.message.bytes` before raising this. The state's size is bounded "
             'from `records.features` and `detector` at start-up (the default model passes '
             '1 MB at ~67 features): over this, a daemon is warned, and with `fleet.enabled` '
             'start-up stops (exit 2) naming the size a model version needs'))


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` on one HTTP server."""

    enabled: bool = setting(Bool(), True,
        doc='serve `/metrics`, `/healthz`, `/readyz`')
    host: str = setting(Str(), "0.0.0.0",
        doc='listen address')
    port: int = setting(Int(0, 65535), 9108,
        doc='listen port')
    ratio_window: int = setting(Int(1, 10_000_000), 10000,
        doc='records in the `streamgmm_anomaly_ratio` window')


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and format (``plain`` text or ``json`` lines) on stderr."""

    level: str = setting(Choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True), "INFO",
        doc='`DEBUG`, `INFO`, `WARNING`, `ERROR`')
    format: str = setting(Choice("plain", "json"), "plain",
        doc='`plain` or `json` (one JSON object per line)')


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration (attribute paths mirror the YAML keys)."""

    source: SourceConfig = section(SourceConfig)
    kafka: KafkaConfig = section(KafkaConfig)
    records: RecordsConfig = section(RecordsConfig)
    sink: SinkConfig = section(SinkConfig)
    dead_letter: DeadLetterConfig = section(DeadLetterConfig)
    detector: DetectorConfig = section(DetectorConfig)
    model: ModelConfig = section(ModelConfig)
    fleet: FleetConfig = section(FleetConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)
    metrics: MetricsConfig = section(MetricsConfig)
    logging: LoggingConfig = section(LoggingConfig)
    shutdown_timeout_seconds: float = setting(Num(0, lo_open=True), 10.0,
        doc='bound on the graceful shutdown after SIGTERM/SIGINT')

    def to_dict(self, mask_secrets: bool = False) -> dict:
        """The effective configuration as plain YAML-able data (secrets -> ``"***"`` if asked)."""
        return to_plain(self, is_secret_key if mask_secrets else None)


# --------------------------------------------------------------------------------------------
# Building: raw mapping -> dataclasses
# --------------------------------------------------------------------------------------------


class _Builder(Builder):
    """The schema walk plus ``${VAR}`` interpolation and path resolution."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path):
        self.environ = environ
        self.base_dir = base_dir

    def finish(self, f, value: Any) -> Any:
        if f.metadata.get("path") and value is not None:
            value = resolve_path(value, self.base_dir)
        if f.metadata.get("file_keys"):  # ssl_cafile, ssl_certfile, ssl_keyfile, ...
            value = {k: (resolve_path(v, self.base_dir)
                         if k.endswith("file") and isinstance(v, str) and v else v)
                     for k, v in value.items()}
        return value

    def interpolate(self, value: Any, path: str, kind: str) -> Any:
        """Substitute ``${VAR}`` in strings (recursively in lists and maps); a whole-value
        reference is YAML-parsed when the key expects a number or boolean (``kind``)."""
        if isinstance(value, str):
            return _interpolate_str(value, path, self.environ, parse=kind != "str")
        if isinstance(value, Mapping):
            return {k: self.interpolate(v, join(path, str(k)), kind) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.interpolate(v, f"{path}[{i}]", kind) for i, v in enumerate(value)]
        return value


_VAR_RE = re.compile(r"\$\$\{|\$\{([^}:]*)(?::-([^}]*))?\}")
_WHOLE_VAR_RE = re.compile(r"^\$\{([^}:]*)(?::-([^}]*))?\}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _interpolate_str(text: str, path: str, environ: Mapping[str, str], parse: bool) -> Any:
    """Replace ``${VAR}``/``${VAR:-default}``; ``$${`` stays a literal ``${``."""
    if "${" not in text:
        return text

    def sub(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if not _NAME_RE.match(name or ""):
            raise ConfigError(path, f"invalid environment variable reference {show(m.group(0))}")
        val = environ.get(name)
        if val is None or (val == "" and default is not None):
            if default is None:
                raise ConfigError(path, f"environment variable {name} is not set "
                                  f"(referenced as ${{{name}}}; use ${{{name}:-default}} "
                                  "for a default)")
            return default
        return val

    result = _VAR_RE.sub(sub, text)
    if parse and _WHOLE_VAR_RE.match(text):
        try:
            parsed = yaml.safe_load(result)
        except yaml.YAMLError:
            return result
        if isinstance(parsed, (bool, int, float)) or parsed is None:
            return parsed
    return result


def resolve_path(value: str, base_dir: str | os.PathLike | None = None) -> str:
    """Expand ``~``, map ``package:NAME`` to the shipped data dir, make relative paths absolute
    against ``base_dir`` (the config file's directory)."""
    if value.startswith(_PACKAGE_PREFIX):
        name = value[len(_PACKAGE_PREFIX):].lstrip("/")
        return str(Path(__file__).resolve().parents[2] / "data" / name)
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = Path(base_dir if base_dir is not None else os.getcwd()) / p
    return os.path.normpath(str(p))


# --------------------------------------------------------------------------------------------
# Environment overrides
# --------------------------------------------------------------------------------------------


def _apply_env_overrides(raw: dict, environ: Mapping[str, str],
                         origins: dict | None = None) -> dict:
    """Return a copy of ``raw`` with every ``STREAMGMM__A__B=value`` applied (sorted by name,
    so the result does not depend on environment order); ``origins`` (if given) gets
    ``{key.path: variable name}`` so that a bad value's error can name the variable."""
    raw = _deep_copy(raw)
    items = sorted((k, v) for k, v in environ.items() if k.upper().startswith(ENV_PREFIX))
    for name, text in items:
        parts = [p for p in name[len(ENV_PREFIX):].split("__")]
        if not parts or any(not p for p in parts):
            raise ConfigError(name, "malformed override name: expected "
                              "STREAMGMM__SECTION__KEY with double underscores between levels")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            if text.lstrip().startswith(("[", "{")):  # meant as a list or map: say so
                raise ConfigError(name, f"is not a valid YAML flow value ({text!r}): "
                                  f"{str(exc).splitlines()[0]}") from None
            value = text  # any other text is a string (a password with ': ' or '@' in it)
        _set_override(raw, parts, value, name)
        if origins is not None:
            origins[".".join(p.lower() for p in parts)] = name
    return raw


def _name_env_variable(exc: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """The same error, naming the environment variable when the bad value came from one."""
    key = exc.key_path or ""
    for path, name in origins.items():
        if (key == path or key.startswith(path + ".") or key.startswith(path + "[")) \
                and name not in exc.message:
            return ConfigError(exc.key_path, f"{exc.message} (set by environment variable "
                                             f"{name})")
    return exc


def _set_override(raw: dict, parts: list[str], value: Any, env_name: str) -> None:
    """Set one override, checking each name level against the schema."""
    cls: Any = Config
    node = raw
    path = ""
    hint = f" (environment variable {env_name})"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if cls is None:  # inside a free-form map: any key, lower-cased
            key = part.lower()
            path = join(path, key)
            if last:
                node[key] = value
                return
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        key = part.lower()
        if key not in fields:
            raise unknown_key(path, key, list(fields), hint)
        f = fields[key]
        path = join(path, key)
        if last:
            node[key] = value
            return
        if "section" in f.metadata:
            cls = f.metadata["section"]
        elif f.metadata.get("free"):
            cls = None
            if f.name == "impute":  # keys are feature names: match them case-insensitively
                rest = "__".join(parts[i + 1:])
                feats = raw.get("records", {}).get("features") if isinstance(
                    raw.get("records"), dict) else None
                match = rest
                if isinstance(feats, (list, tuple)):
                    for feat in feats:
                        if isinstance(feat, str) and feat.lower() == rest.lower():
                            match = feat
                            break
                imp = node.get(key)
                if not isinstance(imp, dict):
                    imp = {}
                    node[key] = imp
                imp[match] = value
                return
        else:
            raise ConfigError(path, f"is not a section; cannot set "
                              f"{'.'.join(p.lower() for p in parts)}{hint}")
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def _deep_copy(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_deep_copy(v) for v in x]
    return x


# --------------------------------------------------------------------------------------------
# Cross-field checks
# --------------------------------------------------------------------------------------------


def _client_settings():
    """{map key: (kafka-python's settings with their defaults, which clients)} for the
    pass-through maps: ``security`` goes to every client, so it takes what all of them do."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    consumer, producer = KafkaConsumer.DEFAULT_CONFIG, KafkaProducer.DEFAULT_CONFIG
    common = set(consumer) & set(producer) & set(KafkaAdminClient.DEFAULT_CONFIG)
    return {"consumer": (consumer, "a KafkaConsumer setting"),
            "producer": (producer, "a KafkaProducer setting"),
            "security": ({k: consumer[k] for k in common},
                         "a setting every kafka-python client (consumer, producer, admin) takes")}


def _checked_client_map(section: str, values: Mapping) -> dict:
    """``kafka.<section>`` against kafka-python's own settings: an unknown name or a value of
    the wrong type stops start-up naming the key (kafka-python would fail later, blaming the
    connection); digits given as text (an environment value) become the number."""
    defaults, what = _client_settings()[section]
    out = {}
    for name, value in values.items():
        key = f"kafka.{section}.{name}"
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise ConfigError(key, f"is not {what} (kafka-python {_kafka_version()}){hint}")
        default = defaults[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:  # None, a tuple, a class...: kafka-python checks those itself
            ok = True
        if not ok:
            raise ConfigError(key, f"expected {type(default).__name__} (kafka-python's "
                              f"default is {default!r}), got {show(value)}")
        out[name] = value
    return out


def _kafka_version() -> str:
    import kafka

    return getattr(kafka, "__version__", "?")


def _is_input(kafka, topic: str) -> bool:
    """Whether the daemon's Kafka source reads ``topic`` (a listed topic, or one its pattern
    matches as kafka-python matches it: ``re.match``)."""
    if kafka.topics:
        return topic in kafka.topics
    return bool(kafka.topic_pattern and re.match(kafka.topic_pattern, topic))


def _cross_checks(cfg: Config, raw: Mapping) -> Config:
    """Checks spanning several keys; may fill ``kafka.topics`` from the pattern choice."""
    raw_kafka = raw.get("kafka") if isinstance(raw.get("kafka"), Mapping) else {}
    kafka = cfg.kafka
    # topics has a default; a user who gives only topic_pattern means "pattern instead".
    if kafka.topic_pattern is not None and "topics" not in raw_kafka:
        kafka = dataclasses.replace(kafka, topics=None)
        cfg = dataclasses.replace(cfg, kafka=kafka)

    if cfg.source.type == "kafka":
        if kafka.topics is not None and kafka.topic_pattern is not None:
            raise ConfigError("kafka.topic_pattern", "set either kafka.topics or "
                              "kafka.topic_pattern, not both")
        if kafka.topics is None and kafka.topic_pattern is None:
            raise ConfigError("kafka.topics", "set kafka.topics (a list of topic names) or "
                              "kafka.topic_pattern (a regex) for the kafka source")
    maps = {section: _checked_client_map(section, getattr(kafka, section) or {})
            for section in ("security", "consumer", "producer")}
    if any(maps[k] != dict(getattr(kafka, k) or {}) for k in maps):
        kafka = dataclasses.replace(kafka, **maps)
        cfg = dataclasses.replace(cfg, kafka=kafka)
    if kafka.heartbeat_interval_ms >= kafka.session_timeout_ms:
        raise ConfigError("kafka.heartbeat_interval_ms", f"must be lower than "
                          f"kafka.session_timeout_ms ({kafka.session_timeout_ms}), got "
                          f"{kafka.heartbeat_interval_ms}")

    if cfg.source.type == "file" and cfg.source.path is None:
        raise ConfigError("source.path", "required when source.type is file")
    if cfg.sink.type == "file" and cfg.sink.path is None:
        raise ConfigError("sink.path", "required when sink.type is file")
    if cfg.dead_letter.type == "file" and cfg.dead_letter.path is None:
        raise ConfigError("dead_letter.path", "required when dead_letter.type is file")
    if (cfg.sink.type == "file" and cfg.dead_letter.type == "file"
            and cfg.sink.path == cfg.dead_letter.path):
        raise ConfigError("dead_letter.path", "must differ from sink.path")
    if (cfg.sink.type == "kafka" and cfg.dead_letter.type == "kafka"
            and cfg.sink.topic == cfg.dead_letter.topic):
        raise ConfigError("dead_letter.topic", "must differ from sink.topic (dead letters are "
                          "the raw records, not JSON events: their readers would get both), "
                          f"got {show(cfg.dead_letter.topic)}")
    if cfg.source.type == "file" and cfg.source.path in (cfg.sink.path, cfg.dead_letter.path):
        raise ConfigError("source.path", "must differ from the sink and dead-letter paths")
    for key, out in (("sink", cfg.sink), ("dead_letter", cfg.dead_letter)):
        if out.type == "kafka" and cfg.source.type == "kafka" and _is_input(kafka, out.topic):
            raise ConfigError(f"{key}.topic", f"must not be an input topic (the daemon would "
                              f"read its own outputs back), got {show(out.topic)}"
                              + (f", which kafka.topic_pattern {show(kafka.topic_pattern)} "
                                 "matches" if kafka.topic_pattern else ""))
    paths = {"source.path": cfg.source.path if cfg.source.type == "file" else None,
             "sink.path": cfg.sink.path if cfg.sink.type == "file" else None,
             "dead_letter.path": cfg.dead_letter.path if cfg.dead_letter.type == "file"
             else None}
    ck = cfg.checkpoint.path
    if ck is not None:
        for key, path in paths.items():
            if path is not None and os.path.abspath(path) in (
                    os.path.abspath(ck), os.path.abspath(ck) + ".position"):
                raise ConfigError("checkpoint.path", f"must differ from {key} ({path}): a "
                                  "checkpoint replaces its file at every write")
    for i, server in enumerate(kafka.bootstrap_servers):
        host, sep, port = server.rpartition(":")
        if sep and not host.endswith("]") and ":" in host:
            host, sep, port = server, "", ""  # a bare IPv6 address
        if (sep and (not host or not port.isdigit() or not 0 < int(port) < 65536)) or \
                any(c.isspace() for c in server):
            raise ConfigError(f"kafka.bootstrap_servers[{i}]", f"expected host or host:port "
                              f"with a port from 1 to 65535, got {show(server)}")

    if cfg.checkpoint.store == "kafka":
        if cfg.checkpoint.path is not None:
            raise ConfigError("checkpoint.path", "must be null when checkpoint.store is kafka "
                              f"(the state goes to the topic {show(cfg.checkpoint.topic)})")
        used = set(kafka.topics or ()) if cfg.source.type == "kafka" else set()
        used |= {s.topic for s in (cfg.sink, cfg.dead_letter) if s.type == "kafka"}
        if cfg.checkpoint.topic in used:
            raise ConfigError("checkpoint.topic", "must differ from the input, sink and "
                              f"dead-letter topics, got {show(cfg.checkpoint.topic)}")

    if cfg.fleet.enabled:
        if cfg.source.type != "kafka":
            raise ConfigError("fleet.enabled", f"needs source.type kafka (a fleet is a "
                              f"consumer group), got {show(cfg.source.type)}")
        if cfg.checkpoint.store != "kafka":
            raise ConfigError("fleet.enabled", "needs checkpoint.store: kafka (the group's "
                              "model versions live in checkpoint.topic)")
        used = set(kafka.topics or ()) | {cfg.checkpoint.topic}
        used |= {s.topic for s in (cfg.sink, cfg.dead_letter) if s.type == "kafka"}
        if cfg.fleet.topic in used:
            raise ConfigError("fleet.topic", "must differ from the input, sink, dead-letter "
                              f"and state topics, got {show(cfg.fleet.topic)}")
        _check_version_size(cfg)

    rec = cfg.records
    for name in rec.impute:
        if name not in rec.features:
            close = difflib.get_close_matches(name, list(rec.features), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise ConfigError(f"records.impute.{name}", f"is not one of records.features{hint}")

    cfg.detector.validate()
    return cfg  # model.path's content (npz, or pickle needing model.trusted) is checked at start-up


def _check_version_size(cfg: Config) -> None:
    """A fleet's leader publishes every model version as one state record: a version over
    `checkpoint.max_bytes` is never published, and members waiting for a first one wait for
    ever. The size is known from the settings (`detection.sizing.state_bytes`, an upper
    bound); versions hold no raw rows, whatever `checkpoint.include_recent_records` says."""
    from ...detection.sizing import components_text, state_bytes

    need = state_bytes(cfg.detector, cfg.records.features)
    limit = cfg.checkpoint.max_bytes
    if need > limit:
        raise ConfigError("checkpoint.max_bytes", (
            f"{limit:,} is too small for the fleet's model versions: with "
            f"{len(cfg.records.features)} features ({components_text(cfg.detector)}) a "
            f"version needs up to {need:,} bytes, and a version the leader cannot publish "
            f"leaves the other members waiting for ever. Set checkpoint.max_bytes to at least "
            f"{need:,} (raise the state topic's max.message.bytes with it), or make the model "
            f"smaller (detector.covariance_type: diag, fewer components or features)"))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def config_from_dict(d: Mapping | None, environ: Mapping[str, str] | None = None,
                     base_dir: str | os.PathLike | None = None) -> Config:
    """Validate a mapping (as parsed from YAML) plus environment overrides into a ``Config``.

    Relative paths resolve against ``base_dir`` (default: the current directory).
    """
    if environ is None:
        environ = os.environ
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigError("(top level)", f"expected a mapping, got {show(d)}")
    origins: dict = {}
    raw = _apply_env_overrides(dict(d), environ, origins)
    base = Path(base_dir) if base_dir is not None else Path(os.getcwd())
    builder = _Builder(environ, base)
    try:
        builder.check_keys(Config, raw, "")
        cfg = builder.build(Config, raw, "")
        cfg = _cross_checks(cfg, raw)
        cfg = apply_local_defaults(cfg, raw)  # file/stdin source: outputs default to stdout
    except ConfigError as exc:
        raise _name_env_variable(exc, origins) from None
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping below reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key)} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a YAML config file (``package:NAME`` reads a shipped file)."""
    if environ is None:
        environ = os.environ
    path = str(path)
    if path.startswith(_PACKAGE_PREFIX):
        path = resolve_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text: {exc.reason}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, f"invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"invalid config: expected a mapping of sections at the top "
                          f"level (line 1), got {show(data)}")
    return config_from_dict(data, environ, base_dir=Path(path).resolve().parent)


def is_secret_key(key: str) -> bool:
    """True for keys whose values must not be printed (passwords, secrets, tokens)."""
    k = str(key).lower()
    return any(word in k for word in _SECRET_WORDS)


def detector_dict(cfg: Config) -> dict:
    """The ``detector`` section as a plain nested dict for ``Detector.from_dict``."""
    return cfg.detector.to_dict()


def iter_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    """Every leaf key path of the schema (used by docs and tests)."""
    return [key for key, _ in iter_settings(cls, prefix)]

