"""Layer 4: the daemon's YAML configuration, validated into nested frozen dataclasses.

One schema (the dataclasses below, in the order and with the defaults of docs/architecture.md)
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
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "ConfigError",
    "Config",
    "SourceConfig",
    "KafkaConfig",
    "RecordsConfig",
    "SinkConfig",
    "DeadLetterConfig",
    "DetectorSection",
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


class ConfigError(ValueError):
    """A bad configuration value: ``str()`` is ``"<key.path>: <message>"`` (CLI exit code 2)."""

    def __init__(self, key_path: str, message: str):
        self.key_path = key_path
        self.message = message
        super().__init__(f"{key_path}: {message}" if key_path else message)

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.key_path, self.message))


# --------------------------------------------------------------------------------------------
# Value checkers: each is ``check(value, path) -> normalised value`` and has a ``.expected``
# text used in messages ("expected <expected>, got <value>") and a ``.kind`` used to decide
# whether a whole-value ``${VAR}`` is parsed as a YAML scalar.
# --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A short YAML-flavoured rendering of a bad value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


class _Check:
    """Base checker: subclasses implement ``convert`` returning the value or raising TypeError."""

    kind = "str"
    expected = "a value"

    def __call__(self, value: Any, path: str) -> Any:
        try:
            return self.convert(value, path)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(path, f"expected {self.expected}, got {_show(value)}") from None

    def convert(self, value: Any, path: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


# PyYAML follows YAML 1.1, where ``1e-6`` (no dot, unsigned exponent) is a *string*; accept that
# exponent form as the number the user meant. Other quoted numbers stay errors.
_EXP_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def _exp_number(value: Any) -> Any:
    if isinstance(value, str) and _EXP_NUMBER_RE.match(value.strip()):
        return float(value)
    return value


class _Int(_Check):
    kind = "number"

    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi
        if lo is not None and hi is not None:
            self.expected = f"an integer in [{lo}, {hi}]"
        elif lo is not None:
            self.expected = f"an integer >= {lo}"
        else:
            self.expected = "an integer"

    def convert(self, value, path):
        value = _exp_number(value)
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise TypeError
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ValueError
        return value


class _Num(_Check):
    """A finite real number within optional (open or closed) bounds; ints become floats."""

    kind = "number"

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        if lo is not None and hi is not None:
            self.expected = (f"a number in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}"
                             f"{')' if hi_open else ']'}")
        elif lo is not None:
            self.expected = f"a number {'>' if lo_open else '>='} {_fmt(lo)}"
        else:
            self.expected = "a finite number"

    def convert(self, value, path):
        value = _exp_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        value = float(value)
        if not math.isfinite(value):
            raise ValueError
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            raise ValueError
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            raise ValueError
        return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class _Bool(_Check):
    kind = "bool"
    expected = "true or false"

    def convert(self, value, path):
        if not isinstance(value, bool):
            raise TypeError
        return value


class _Str(_Check):
    expected = "a non-empty string"

    def convert(self, value, path):
        if not isinstance(value, str) or not value.strip():
            raise TypeError
        return value


class _Choice(_Check):
    def __init__(self, *choices: str, upper: bool = False):
        self.choices = choices
        self.upper = upper
        self.expected = "one of " + ", ".join(choices)

    def convert(self, value, path):
        if not isinstance(value, str):
            raise TypeError
        norm = value.upper() if self.upper else value.lower()
        if norm not in self.choices:
            close = difflib.get_close_matches(norm, self.choices, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise ConfigError(path, f"expected {self.expected}, got {_show(value)}{hint}")
        return norm


class _Optional(_Check):
    """``null`` or the inner checker's value."""

    def __init__(self, inner: _Check):
        self.inner = inner
        self.kind = inner.kind
        self.expected = f"{inner.expected} or null"

    def convert(self, value, path):
        if value is None:
            return None
        try:
            return self.inner.convert(value, path)
        except ConfigError as exc:
            raise ConfigError(exc.key_path, exc.message.replace(
                f"expected {self.inner.expected}", f"expected {self.expected}", 1)) from None


class _Path(_Str):
    """A filesystem path (resolved later, once the config file's directory is known)."""

    expected = "a path (non-empty string)"


class _Regex(_Str):
    expected = "a regular expression"

    def convert(self, value, path):
        value = super().convert(value, path)
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(path, f"invalid regular expression {_show(value)}: {exc}") from None
        return value


class _StrList(_Check):
    """A list of non-empty strings; a single string is accepted as a comma-separated list."""

    def __init__(self, min_len: int = 1, unique: bool = True, item: _Check | None = None):
        self.min_len = min_len
        self.unique = unique
        self.item = item or _Str()
        self.expected = (f"a list of at least {min_len} string{'s' if min_len > 1 else ''}"
                         if min_len else "a list of strings")

    def convert(self, value, path):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        out = []
        for i, item in enumerate(value):
            out.append(self.item(item, f"{path}[{i}]"))
        if len(out) < self.min_len:
            raise ValueError
        if self.unique:
            seen = set()
            for i, item in enumerate(out):
                if item in seen:
                    raise ConfigError(f"{path}[{i}]", f"duplicate entry {_show(item)}")
                seen.add(item)
        return tuple(out)


class _FeaturePath(_Str):
    """A dotted path into a JSON object: non-empty segments separated by single dots."""

    expected = "a dotted field path like sensor.temp"

    def convert(self, value, path):
        value = super().convert(value, path)
        if any(not seg.strip() for seg in value.split(".")):
            raise ValueError
        return value


class _Map(_Check):
    """A free-form mapping with string keys; values checked by ``value`` if given."""

    expected = "a mapping"

    def __init__(self, value: _Check | None = None):
        self.value = value
        self.kind = value.kind if value is not None else "str"

    def convert(self, value, path):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise TypeError
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}.{k}", "keys must be strings")
            out[k] = self.value(v, f"{path}.{k}") if self.value is not None else v
        return out


class _NComponents(_Check):
    kind = "number"
    expected = 'an integer >= 1 or "auto"'

    def convert(self, value, path):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return _Int(1).convert(value, path)


def _opt(check: _Check, default: Any = None, **kw) -> Any:
    """A dataclass field with a checker in its metadata."""
    meta = {"check": check}
    meta.update(kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls) -> Any:
    """A nested-section dataclass field."""
    return field(default_factory=cls, metadata={"section": cls})


_REQUIRED = object()

# --------------------------------------------------------------------------------------------
# The schema. Field order = YAML order in docs/architecture.md and in ``to_dict``.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    """Where records come from: a Kafka topic, a CSV/JSON-lines file, or standard input."""

    type: str = _opt(_Choice("kafka", "file", "stdin"), "kafka")
    path: str | None = _opt(_Optional(_Path()), None, path=True)
    format: str = _opt(_Choice("auto", "jsonl", "csv"), "auto")
    follow: bool = _opt(_Bool(), False)


@dataclass(frozen=True)
class KafkaConfig:
    """Kafka connection and consumer settings (``security``/``consumer``/``producer`` pass through
    to kafka-python)."""

    bootstrap_servers: tuple = _opt(_StrList(1), ("localhost:9092",))
    topics: tuple | None = _opt(_Optional(_StrList(1)), ("events",))
    topic_pattern: str | None = _opt(_Optional(_Regex()), None)
    group_id: str = _opt(_Str(), "streamgmm")
    client_id: str = _opt(_Str(), "streamgmm")
    auto_offset_reset: str = _opt(_Choice("earliest", "latest"), "earliest")
    max_poll_records: int = _opt(_Int(1), 1000)
    poll_timeout_ms: int = _opt(_Int(0), 500)
    session_timeout_ms: int = _opt(_Int(1), 10000)
    heartbeat_interval_ms: int = _opt(_Int(1), 3000)
    compression_type: str = _opt(_Choice("none", "gzip", "snappy", "lz4", "zstd"), "none")
    security: dict = _opt(_Map(), {}, free=True, file_keys=True)
    consumer: dict = _opt(_Map(), {}, free=True)
    producer: dict = _opt(_Map(), {}, free=True)


@dataclass(frozen=True)
class RecordsConfig:
    """How a record becomes a feature vector (see streamgmm/service/records.py)."""

    features: tuple = _opt(_StrList(1, item=_FeaturePath()), _REQUIRED,
                           help="list the numeric record fields to score, e.g. "
                                "features: [amount, latency_ms, sensor.temp]")
    key_field: str | None = _opt(_Optional(_FeaturePath()), None)
    timestamp_field: str | None = _opt(_Optional(_FeaturePath()), None)
    max_bytes: int = _opt(_Int(1), 1048576)
    impute: dict = _opt(_Map(_Num()), {}, free=True)


@dataclass(frozen=True)
class SinkConfig:
    """Where scored records (anomalies only, or all) go."""

    type: str = _opt(_Choice("kafka", "file", "stdout"), "kafka")
    topic: str = _opt(_Str(), "anomalies")
    path: str | None = _opt(_Optional(_Path()), None, path=True)
    emit: str = _opt(_Choice("anomalies", "all"), "anomalies")


@dataclass(frozen=True)
class DeadLetterConfig:
    """Where undecodable records go, with the reason."""

    type: str = _opt(_Choice("kafka", "file", "stdout"), "kafka")
    topic: str = _opt(_Str(), "events.dlq")
    path: str | None = _opt(_Optional(_Path()), None, path=True)


@dataclass(frozen=True)
class ThresholdConfig:
    """Anomaly threshold: the given lower percentile of training log-densities."""

    percentile: float = _opt(_Num(0, 50, lo_open=True, hi_open=True), 1.0)
    window: int = _opt(_Int(100), 20000)


@dataclass(frozen=True)
class OnlineConfig:
    """Online EM: step size (t + t0)^-alpha (stepwise) or constant-rate forgetting (exponential)."""

    enabled: bool = _opt(_Bool(), True)
    step: str = _opt(_Choice("stepwise", "exponential"), "stepwise")
    alpha: float = _opt(_Num(0.5, 1, lo_open=True), 0.6)
    t0: float = _opt(_Num(0), 10.0)
    half_life: float | None = _opt(_Optional(_Num(0, lo_open=True)), None)
    learn_from_anomalies: bool = _opt(_Bool(), False)
    batch_size: int = _opt(_Int(1), 256)


@dataclass(frozen=True)
class DriftConfig:
    """Drift detection: CUSUM tests on the log-density, the anomaly rate and each feature."""

    enabled: bool = _opt(_Bool(), True)
    expected_run_length: int = _opt(_Int(100), 10000000)
    feature_tests: bool = _opt(_Bool(), True)
    reference_records: int = _opt(_Int(100), 2000)
    block_size: int = _opt(_Int(5), 50)


@dataclass(frozen=True)
class RefitConfig:
    """Batch refit on a window of recent records after drift, at most once per cooldown."""

    window: int = _opt(_Int(2), 20000)
    min_records: int = _opt(_Int(2), 5000)
    cooldown_records: int = _opt(_Int(0), 20000)


@dataclass(frozen=True)
class DetectorSection:
    """The ``detector`` section: handed to ``Detector.from_dict`` via ``detector_dict``."""

    n_components: int | str = _opt(_NComponents(), "auto")
    max_components: int = _opt(_Int(1), 8)
    covariance_type: str = _opt(_Choice("full", "tied", "diag", "spherical"), "full")
    reg_covar: float = _opt(_Num(0), 1.0e-6)
    warmup_records: int = _opt(_Int(2), 2000)
    random_state: int | None = _opt(_Optional(_Int(0)), 0)
    min_component_weight: float = _opt(_Num(0, 0.5, hi_open=True), 0.02)
    threshold: ThresholdConfig = _section(ThresholdConfig)
    online: OnlineConfig = _section(OnlineConfig)
    drift: DriftConfig = _section(DriftConfig)
    refit: RefitConfig = _section(RefitConfig)


@dataclass(frozen=True)
class ModelConfig:
    """A pretrained model to start from (skips warm-up)."""

    path: str | None = _opt(_Optional(_Path()), None, path=True)
    trusted: bool = _opt(_Bool(), False)


@dataclass(frozen=True)
class CheckpointConfig:
    """Periodic atomic checkpoints of the detector state; ``path: null`` disables them."""

    path: str | None = _opt(_Optional(_Path()), None, path=True)
    interval_seconds: float = _opt(_Num(0, lo_open=True), 60.0)


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` on one HTTP server."""

    enabled: bool = _opt(_Bool(), True)
    host: str = _opt(_Str(), "0.0.0.0")
    port: int = _opt(_Int(0, 65535), 9108)
    ratio_window: int = _opt(_Int(1), 10000)


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and format (``plain`` text or ``json`` lines) on stderr."""

    level: str = _opt(_Choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True), "INFO")
    format: str = _opt(_Choice("plain", "json"), "plain")


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration (attribute paths mirror the YAML keys)."""

    source: SourceConfig = _section(SourceConfig)
    kafka: KafkaConfig = _section(KafkaConfig)
    records: RecordsConfig = _section(RecordsConfig)
    sink: SinkConfig = _section(SinkConfig)
    dead_letter: DeadLetterConfig = _section(DeadLetterConfig)
    detector: DetectorSection = _section(DetectorSection)
    model: ModelConfig = _section(ModelConfig)
    checkpoint: CheckpointConfig = _section(CheckpointConfig)
    metrics: MetricsConfig = _section(MetricsConfig)
    logging: LoggingConfig = _section(LoggingConfig)
    shutdown_timeout_seconds: float = _opt(_Num(0, lo_open=True), 10.0)

    def to_dict(self, mask_secrets: bool = False) -> dict:
        """The effective configuration as plain YAML-able data (secrets -> ``"***"`` if asked)."""
        return _to_plain(self, mask_secrets)


# --------------------------------------------------------------------------------------------
# Building: raw mapping -> dataclasses
# --------------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(path: str, key: Any, valid: list[str], hint: str = "") -> ConfigError:
    """The unknown-key error with the nearest valid key suggested."""
    close = difflib.get_close_matches(str(key).lower(), valid, n=1, cutoff=0.6)
    if close:
        suggestion = f'; did you mean "{close[0]}"?'
    else:
        suggestion = "; valid keys: " + ", ".join(valid)
    return ConfigError(_join(path, str(key)), f"unknown key{hint}{suggestion}")


class _Builder:
    """Walks the schema over a raw mapping, interpolating, checking and resolving paths."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path):
        self.environ = environ
        self.base_dir = base_dir

    def check_keys(self, cls, raw: Any, path: str) -> None:
        """First pass: reject unknown keys anywhere (so a typo of a required key is reported as
        the typo, with a suggestion, not as a missing key)."""
        if not isinstance(raw, Mapping):
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in fields:
                raise _unknown_key(path, key, list(fields))
            if "section" in fields[key].metadata:
                self.check_keys(fields[key].metadata["section"], value, _join(path, key))

    def build(self, cls, raw: Any, path: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            where = path or "(top level)"
            raise ConfigError(where, f"expected a mapping, got {_show(raw)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                raise _unknown_key(path, key, list(fields))
        values = {}
        for name, f in fields.items():
            key_path = _join(path, name)
            if "section" in f.metadata:
                values[name] = self.build(f.metadata["section"], raw.get(name), key_path)
                continue
            check: _Check = f.metadata["check"]
            if name not in raw:
                if f.default is _REQUIRED:
                    raise ConfigError(key_path, f"required key is missing: {f.metadata['help']}")
                continue  # dataclass default
            value = self.interpolate(raw[name], key_path, check.kind)
            value = check(value, key_path)
            if f.metadata.get("path") and value is not None:
                value = resolve_path(value, self.base_dir)
            if f.metadata.get("file_keys"):  # ssl_cafile, ssl_certfile, ssl_keyfile, ...
                value = {k: (resolve_path(v, self.base_dir)
                             if k.endswith("file") and isinstance(v, str) and v else v)
                         for k, v in value.items()}
            values[name] = value
        return cls(**values)

    def interpolate(self, value: Any, path: str, kind: str) -> Any:
        """Substitute ``${VAR}`` in strings (recursively in lists and maps); a whole-value
        reference is YAML-parsed when the key expects a number or boolean (``kind``)."""
        if isinstance(value, str):
            return _interpolate_str(value, path, self.environ, parse=kind != "str")
        if isinstance(value, Mapping):
            return {k: self.interpolate(v, _join(path, str(k)), kind) for k, v in value.items()}
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
            raise ConfigError(path, f"invalid environment variable reference {_show(m.group(0))}")
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


def _apply_env_overrides(raw: dict, environ: Mapping[str, str]) -> dict:
    """Return a copy of ``raw`` with every ``STREAMGMM__A__B=value`` applied (sorted by name,
    so the result does not depend on environment order)."""
    raw = _deep_copy(raw)
    items = sorted((k, v) for k, v in environ.items() if k.upper().startswith(ENV_PREFIX))
    for name, text in items:
        parts = [p for p in name[len(ENV_PREFIX):].split("__")]
        if not parts or any(not p for p in parts):
            raise ConfigError(name, "malformed override name: expected "
                              "STREAMGMM__SECTION__KEY with double underscores between levels")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _set_override(raw, parts, value, name)
    return raw


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
            path = _join(path, key)
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
            raise _unknown_key(path, key, list(fields), hint)
        f = fields[key]
        path = _join(path, key)
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
    if cfg.source.type == "file" and cfg.source.path in (cfg.sink.path, cfg.dead_letter.path):
        raise ConfigError("source.path", "must differ from the sink and dead-letter paths")
    if cfg.sink.type == "kafka" and cfg.source.type == "kafka" and kafka.topics and \
            cfg.sink.topic in kafka.topics:
        raise ConfigError("sink.topic", f"must differ from the input topics, got "
                          f"{_show(cfg.sink.topic)}")
    if cfg.dead_letter.type == "kafka" and cfg.source.type == "kafka" and kafka.topics and \
            cfg.dead_letter.topic in kafka.topics:
        raise ConfigError("dead_letter.topic", f"must differ from the input topics, got "
                          f"{_show(cfg.dead_letter.topic)}")

    rec = cfg.records
    for name in rec.impute:
        if name not in rec.features:
            close = difflib.get_close_matches(name, list(rec.features), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise ConfigError(f"records.impute.{name}", f"is not one of records.features{hint}")

    det = cfg.detector
    if isinstance(det.n_components, int) and det.n_components > det.max_components:
        raise ConfigError("detector.n_components", f"must be <= detector.max_components "
                          f"({det.max_components}), got {det.n_components}")
    k = det.n_components if isinstance(det.n_components, int) else det.max_components
    which = "n_components" if isinstance(det.n_components, int) else "max_components"
    least = max(2 * k, 10)
    for key, value in (("warmup_records", det.warmup_records), ("refit.window", det.refit.window)):
        if value < least:
            raise ConfigError(f"detector.{key}", f"must be >= max(10, 2 * detector.{which}) "
                              f"= {least}, got {value}")
    if det.online.step == "exponential" and det.online.half_life is None:
        raise ConfigError("detector.online.half_life", "required (a number of records > 0) "
                          "when detector.online.step is exponential")
    if cfg.model.path is not None and cfg.model.path.endswith(".joblib") and \
            not cfg.model.trusted:
        raise ConfigError("model.path", "a .joblib model is a pickle that runs code when "
                          "loaded; set model.trusted: true only if you trust the file, or "
                          "convert it to a streamgmm .npz model")
    return cfg


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
        raise ConfigError("(top level)", f"expected a mapping, got {_show(d)}")
    raw = _apply_env_overrides(dict(d), environ)
    base = Path(base_dir) if base_dir is not None else Path(os.getcwd())
    builder = _Builder(environ, base)
    builder.check_keys(Config, raw, "")
    cfg = builder.build(Config, raw, "")
    cfg = _cross_checks(cfg, raw)
    _detector_checks(cfg)
    return cfg


def _detector_checks(cfg: Config) -> None:
    """Let the Detector's own config validation speak now (as a ConfigError), not at warm-up."""
    try:
        from streamgmm.detection.config import DetectorConfig
    except ImportError:  # layer 3 not importable: the schema checks above still hold
        return
    try:
        DetectorConfig.from_dict(detector_dict(cfg))
    except (ValueError, TypeError) as exc:
        text = str(exc)
        key, sep, message = text.partition(": ")
        if sep and key.startswith("detector.") and " " not in key:
            if key not in iter_keys():
                message += (" (an internal detector setting, not a config key: adjust the "
                            "related detector keys)")
            raise ConfigError(key, message) from None
        raise ConfigError("detector", text) from None


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
                None, None, f"duplicate key {_show(key)} (first at line {seen[key] + 1})",
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
                          f"level (line 1), got {_show(data)}")
    return config_from_dict(data, environ, base_dir=Path(path).resolve().parent)


def is_secret_key(key: str) -> bool:
    """True for keys whose values must not be printed (passwords, secrets, tokens)."""
    k = str(key).lower()
    return any(word in k for word in _SECRET_WORDS)


def _to_plain(obj: Any, mask: bool, key: str = "") -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name), mask, f.name)
                for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: (MASK if mask and is_secret_key(k) and v is not None
                    else _to_plain(v, mask, str(k)))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v, mask) for v in obj]
    return obj


def detector_dict(cfg: Config) -> dict:
    """The ``detector`` section as a plain nested dict for ``Detector.from_dict``."""
    return _to_plain(cfg.detector, False)


def iter_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    """Every leaf key path of the schema (used by docs and tests)."""
    out = []
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        if "section" in f.metadata:
            out.extend(iter_keys(f.metadata["section"], path))
        else:
            out.append(path)
    return out

