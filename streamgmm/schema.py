"""Settings declared once: each with its default, type and range check, and doc line.

A section is a dataclass whose fields are made by ``setting(check, default, doc)`` or
``section(cls)``. From that one declaration come: validation of a raw mapping (YAML, a dict
handed to ``Detector``) with errors naming the key, the defaults, the environment-override
paths, and the reference tables in docs/configuration.md. Pure Python, no I/O: the detection
layer declares the detector's settings here and the service layer its own.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import field
from typing import Any, Mapping


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


def show(value: Any) -> str:
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


class Check:
    """Base checker: subclasses implement ``convert`` returning the value or raising TypeError."""

    kind = "str"
    expected = "a value"

    def __call__(self, value: Any, path: str) -> Any:
        try:
            return self.convert(value, path)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(path, f"expected {self.expected}, got {show(value)}") from None

    def convert(self, value: Any, path: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


# PyYAML follows YAML 1.1, where ``1e-6`` (no dot, unsigned exponent) is a *string*; accept that
# exponent form as the number the user meant. Other quoted numbers stay errors.
_EXP_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def _exp_number(value: Any) -> Any:
    if isinstance(value, str) and _EXP_NUMBER_RE.match(value.strip()):
        return float(value)
    return value


class Int(Check):
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


class Num(Check):
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


class Bool(Check):
    kind = "bool"
    expected = "true or false"

    def convert(self, value, path):
        if not isinstance(value, bool):
            raise TypeError
        return value


class Str(Check):
    expected = "a non-empty string"

    def convert(self, value, path):
        if not isinstance(value, str) or not value.strip():
            raise TypeError
        return value


class Choice(Check):
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
            raise ConfigError(path, f"expected {self.expected}, got {show(value)}{hint}")
        return norm


class Optional(Check):
    """``null`` or the inner checker's value."""

    def __init__(self, inner: Check):
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


class PathStr(Str):
    """A filesystem path (resolved later, once the config file's directory is known)."""

    expected = "a path (non-empty string)"


class Regex(Str):
    expected = "a regular expression"

    def convert(self, value, path):
        value = super().convert(value, path)
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(path, f"invalid regular expression {show(value)}: {exc}") from None
        return value


_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TopicName(Str):
    """A Kafka topic name as Kafka (and kafka-python, before any send) requires it: at most
    249 ASCII letters, digits, ".", "_" and "-", not "." or "..". An illegal name used to be
    taken and every send to it refused for ever."""

    expected = 'a Kafka topic name (at most 249 of ASCII letters, digits, ".", "_" and "-")'

    def convert(self, value, path):
        value = super().convert(value, path)
        if not _TOPIC_RE.fullmatch(value) or value in (".", ".."):
            raise ValueError
        return value


class StrList(Check):
    """A list of non-empty strings; a single string is accepted as a comma-separated list."""

    def __init__(self, min_len: int = 1, unique: bool = True, item: Check | None = None):
        self.min_len = min_len
        self.unique = unique
        self.item = item or Str()
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
                    raise ConfigError(f"{path}[{i}]", f"duplicate entry {show(item)}")
                seen.add(item)
        return tuple(out)


class FeaturePath(Str):
    """A dotted path into a JSON object: non-empty segments separated by single dots."""

    expected = "a dotted field path like sensor.temp"

    def convert(self, value, path):
        value = super().convert(value, path)
        if any(not seg.strip() for seg in value.split(".")):
            raise ValueError
        return value


class Map(Check):
    """A free-form mapping with string keys; values checked by ``value`` if given."""

    expected = "a mapping"

    def __init__(self, value: Check | None = None):
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


class NComponents(Check):
    kind = "number"
    expected = 'an integer >= 1 or "auto"'

    def convert(self, value, path):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return Int(1).convert(value, path)


def setting(check: Check, default: Any = None, doc: str = "", **kw) -> Any:
    """A setting declared once: its checker (type and range), default and doc line, as a
    dataclass field whose metadata the builder, the docs table and the env overrides read."""
    meta = {"check": check, "doc": doc}
    meta.update(kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls, doc: str = "") -> Any:
    """A nested-section dataclass field."""
    return field(default_factory=cls, metadata={"section": cls, "doc": doc})


REQUIRED = object()


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key(path: str, key: Any, valid: list[str], hint: str = "") -> ConfigError:
    """The unknown-key error with the nearest valid key suggested."""
    close = difflib.get_close_matches(str(key).lower(), valid, n=1, cutoff=0.6)
    if close:
        suggestion = f'; did you mean "{close[0]}"?'
    else:
        suggestion = "; valid keys: " + ", ".join(valid)
    return ConfigError(join(path, str(key)), f"unknown key{hint}{suggestion}")


class Builder:
    """Walks a schema over a raw mapping: unknown keys (with the nearest valid one suggested),
    checks, defaults. Subclasses hook ``interpolate`` (``${VAR}``) and ``finish`` (paths)."""

    def check_keys(self, cls, raw: Any, path: str) -> None:
        """First pass: reject unknown keys anywhere (so a typo of a required key is reported as
        the typo, with a suggestion, not as a missing key)."""
        if not isinstance(raw, Mapping):
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in fields:
                raise unknown_key(path, key, list(fields))
            if "section" in fields[key].metadata:
                self.check_keys(fields[key].metadata["section"], value, join(path, key))

    def build(self, cls, raw: Any, path: str):
        """An instance of section ``cls`` from ``raw`` (None: all defaults)."""
        if raw is None:
            raw = {}
        if dataclasses.is_dataclass(raw):
            raw = to_plain(raw)
        if not isinstance(raw, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {show(raw)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                raise unknown_key(path, key, list(fields))
        values = {}
        for name, f in fields.items():
            key_path = join(path, name)
            if "section" in f.metadata:
                values[name] = self.build(f.metadata["section"], raw.get(name), key_path)
                continue
            check: Check = f.metadata["check"]
            if name not in raw:
                if f.default is REQUIRED:
                    raise ConfigError(key_path, f"required key is missing: {f.metadata['help']}")
                continue  # dataclass default
            value = check(self.interpolate(raw[name], key_path, check.kind), key_path)
            values[name] = self.finish(f, value)
        return cls(**values)

    def interpolate(self, value: Any, path: str, kind: str) -> Any:
        return value

    def finish(self, f, value: Any) -> Any:
        return value


def build(cls, raw: Mapping | None, path: str = ""):
    """Validate ``raw`` against section ``cls``: the instance, or ConfigError naming the key."""
    b = Builder()
    b.check_keys(cls, raw, path)
    return b.build(cls, raw, path)


def check_values(obj, path: str = "") -> None:
    """Re-check the current values of a section instance (set in code, not read from a file)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "section" in f.metadata:
            check_values(value, join(path, f.name))
        elif "check" in f.metadata:
            f.metadata["check"](value, join(path, f.name))


def iter_settings(cls, prefix: str = ""):
    """(dotted key, field) for every leaf setting of a section, in declaration order."""
    for f in dataclasses.fields(cls):
        key = join(prefix, f.name)
        if "section" in f.metadata:
            yield from iter_settings(f.metadata["section"], key)
        else:
            yield key, f


def default_of(f) -> Any:
    """A setting's default (REQUIRED for required ones)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def to_plain(obj: Any, mask=None, key: str = "") -> Any:
    """Plain YAML-able data; ``mask(key)`` true -> the value is replaced by ``"***"``."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name), mask, f.name)
                for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: ("***" if mask is not None and mask(k) and v is not None
                    else to_plain(v, mask, str(k)))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, mask) for v in obj]
    return obj
