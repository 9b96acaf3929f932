"""Layer 4: raw records (JSON bytes/str, or CSV rows) -> float64 feature matrix, per batch.

A record that cannot become a feature vector is not an exception: it is reported in
``DecodedBatch.errors`` as ``(index, reason, message)`` so the caller can dead-letter it and go
on. ``reason`` is one of ``REASONS`` (a Prometheus label value, so exactly these strings):

* ``too_large``     the raw record is longer than ``records.max_bytes`` bytes
* ``invalid_json``  not parseable JSON (also: invalid UTF-8, an empty or null Kafka value)
* ``not_object``    valid JSON but not an object (array, number, ...); a CSV row with more
                    cells than the header, or whose quoted field never closes (``None``)
* ``missing_field`` a feature path is absent, its value is ``null``, a CSV cell is empty, or an
                    intermediate value of a dotted path is not an object
* ``non_numeric``   the value is not a JSON number: strings (even ``"3.5"``: JSON producers that
                    quote numbers are usually buggy, and silently accepting them hides that),
                    booleans, arrays, objects
* ``non_finite``    NaN, Infinity, or a number outside the float64 range (``1e400``)

Features are dotted paths into the JSON object (``sensor.temp`` reads ``{"sensor": {"temp":
..}}``; if the nested walk fails, a literal top-level key ``"sensor.temp"`` is tried). A feature
listed in ``records.impute`` never causes missing_field/non_numeric/non_finite: its bad value is
replaced by the configured number. ``too_large``, ``invalid_json`` and ``not_object`` are never
imputed. In CSV each row is a mapping of column name -> string, so features name columns
literally (no nesting) and numeric strings are numbers (an empty cell is missing).

Timestamps (``records.timestamp_field``) are metadata, never a reason to reject a record:
numbers are epoch seconds (values >= 1e11 are taken as milliseconds, >= 1e14 microseconds, >= 1e17
nanoseconds), strings are numbers or ISO-8601 (naive = UTC); anything else gives NaN.
"""
from __future__ import annotations

import functools
import json
import math
import operator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgspec
import numpy as np

__all__ = [
    "REASONS",
    "RecordSpec",
    "DecodedBatch",
    "compile_spec",
    "decode_batch",
    "decode_csv_rows",
    "missing_csv_columns",
    "to_epoch_seconds",
]

REASONS = ("invalid_json", "not_object", "missing_field", "non_numeric", "non_finite",
           "too_large")

_NUMERIC_TYPES = frozenset((int, float))
_MISSING = object()
_SHORT_ROW = object()  # a CSV row that ends before this column (the header has it)
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean",
                    int: "number", float: "number", type(None): "null"}
_loads = json.loads
_scan_once = json.JSONDecoder().scan_once  # the C scanner json.loads ends up in
_JSON_SPACE = " \t\n\r"
_msgspec_decode = msgspec.json.Decoder().decode
_MSGSPEC_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)
# msgspec and json count nesting against the same recursion limit, but msgspec gives up 3
# levels deeper: a record nested within a few levels of sys.getrecursionlimit() would decode
# with msgspec and not with json.loads ("nested too deeply"). Records that cannot be nested
# that deep (short ones, or few brackets) are safe; the rest take json's path.
_FAST_MAX_NESTING = 256


def _loads_object(raw):
    """json.loads(raw), fast: msgspec's decoder first (3-5x faster than json on small records),
    and on any failure json's own path, so results and error messages are json.loads's.

    Where msgspec succeeds it returns what json.loads returns (same types, same floats, big
    integers as int, last duplicate key wins: fuzzed in tests/test_records.py); it is only
    stricter (NaN/Infinity literals, lone surrogates, a byte-order mark, 1e400, ...), and
    those records fall through to json below."""
    if len(raw) <= 2 * _FAST_MAX_NESTING or _brackets(raw) < _FAST_MAX_NESTING:
        try:
            return _msgspec_decode(raw)
        except _MSGSPEC_ERRORS:
            pass
    return _json_loads_object(raw)


def _brackets(raw) -> int:
    if type(raw) is str:
        return raw.count("{") + raw.count("[")
    return raw.count(b"{") + raw.count(b"[")


def _json_loads_object(raw):
    """json.loads(raw) for the common case, a UTF-8 record that starts with "{", without
    json.loads's encoding detection and wrappers (about 40% of its time on small records);
    anything else goes through json.loads itself, so results and error messages are its own."""
    if type(raw) is not str:
        if raw[:1] != b"{":
            return _loads(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _loads(raw)
    elif raw[:1] == "{":
        text = raw
    else:
        return _loads(raw)
    try:
        obj, end = _scan_once(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return _loads(raw)
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return _loads(raw)  # trailing data: json.loads raises the error
    return obj


@dataclass
class DecodedBatch:
    """Decoded good rows plus the errors of the bad ones.

    ``X[j]`` is the feature vector of input record ``good_index[j]``; ``keys[j]`` its
    ``key_field`` value (any JSON value, None if unset/absent); ``timestamps[j]`` its
    ``timestamp_field`` in epoch seconds (NaN if unset/absent/unparseable). ``errors`` lists
    ``(input index, reason, message)`` sorted by index.
    """

    X: np.ndarray
    good_index: np.ndarray
    keys: list
    timestamps: np.ndarray
    errors: list = field(default_factory=list)
    n_input: int = 0

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def error_counts(self) -> dict:
        """``{reason: count}`` of this batch's bad records."""
        counts: dict = {}
        for _, reason, _ in self.errors:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


@dataclass(frozen=True)
class RecordSpec:
    """What to extract from each record, with precompiled getters (build via ``compile_spec``)."""

    features: tuple
    key_field: str | None = None
    timestamp_field: str | None = None
    max_bytes: int = 1048576
    impute: tuple = ()  # ((feature, value), ...) so the spec is hashable

    @functools.cached_property
    def _fast_get(self) -> Callable[[dict], tuple]:
        return _compile_getter(self.features)

    @functools.cached_property
    def _impute_row(self) -> tuple:
        imp = dict(self.impute)
        return tuple(imp.get(f, None) for f in self.features)

    @functools.cached_property
    def _impute_cols(self) -> tuple:
        return tuple((j, v) for j, v in enumerate(self._impute_row) if v is not None)

    @functools.cached_property
    def _typed(self):
        """(decode, row) for the typed fast path, or None (see `_typed_decoder`)."""
        return _typed_decoder(self.features, self.key_field, self.timestamp_field)

    @functools.cached_property
    def _typed_batch(self):
        """(decode_lines, feature getters) for a whole batch in one call, or None; off when
        the record-by-record typed path is (`_typed` None)."""
        if self._typed is None:
            return None
        return _typed_lines(self.features, self.key_field, self.timestamp_field)

    @functools.cached_property
    def _key_get(self):
        return None if self.key_field is None else _compile_getter([self.key_field])

    @functools.cached_property
    def _ts_get(self):
        return None if self.timestamp_field is None else _compile_getter([self.timestamp_field])


def compile_spec(spec: Any) -> RecordSpec:
    """A ``RecordSpec`` from a ``RecordSpec``, the config's ``records`` section, a ``Config``, a
    mapping with the same keys, or a plain list of feature names."""
    if isinstance(spec, RecordSpec):
        return spec
    if hasattr(spec, "records") and not isinstance(spec, Mapping):
        spec = spec.records
    if isinstance(spec, (list, tuple)):
        return _cached_spec(tuple(spec), None, None, 1048576, ())
    get = spec.get if isinstance(spec, Mapping) else (lambda k, d=None: getattr(spec, k, d))
    features = tuple(get("features"))
    if not features:
        raise ValueError("records.features must list at least one field")
    impute = get("impute", None) or {}
    for name in impute:
        if name not in features:
            raise ValueError(f"records.impute.{name}: is not one of records.features")
    return _cached_spec(features, get("key_field", None), get("timestamp_field", None),
                        int(get("max_bytes", 1048576) or 1048576),
                        tuple((k, float(v)) for k, v in impute.items()))


@functools.lru_cache(maxsize=64)
def _cached_spec(features, key_field, timestamp_field, max_bytes, impute) -> RecordSpec:
    return RecordSpec(features, key_field, timestamp_field, max_bytes, impute)


def _compile_getter(paths: Sequence[str]) -> Callable[[dict], tuple]:
    """``lambda o: (o['a'], o['b']['c'], ...)``: one precompiled expression for all features,
    raising KeyError/TypeError when any path is not there (then the slow path explains why)."""
    exprs = []
    for p in paths:
        exprs.append("o" + "".join(f"[{seg!r}]" for seg in p.split(".")))
    src = f"lambda o: ({', '.join(exprs)},)"
    return eval(src, {"__builtins__": {}}, {})  # noqa: S307 - literals are repr()-quoted


def _typed_decoder(features, key_field, timestamp_field):
    """msgspec Struct types shaped like the record (feature paths as float fields, nested
    paths as nested Structs, key/timestamp fields as any JSON value, everything else
    skipped), and `row(struct) -> tuple of floats`; None when the spec does not fit that
    shape (a path that is both a value and an object, a repeated feature, a dotted
    key/timestamp field: those need the literal-dotted-key fallback of `_get_path`).

    A record it decodes has exactly the outcome of the general path: every feature a finite
    JSON number (ints converted like float(int), floats parsed identically, a value out of
    float64 range rejected), the last of duplicate keys, key/timestamp as json.loads gives
    them (None when absent or null). Anything else raises and takes the general path. The
    Structs are not tracked by the garbage collector (JSON values cannot form cycles)."""
    tree: dict = {}
    for j, path in enumerate(features):
        node, segs = tree, path.split(".")
        for seg in segs[:-1]:
            node = node.setdefault(seg, {})
            if not isinstance(node, dict):
                return None
        if segs[-1] in node:
            return None
        node[segs[-1]] = j
    meta = [f for f in (key_field, timestamp_field) if f is not None]
    if any("." in f or f in tree for f in meta) or len(set(meta)) < len(meta):
        return None
    if not all(_plain_name(f) for f in (*features, *meta)):
        return None
    counter = iter(range(1 << 30))
    exprs: dict = {}

    def build(node: dict, prefix: str, extra=()):
        fields, rename = [], {}
        for seg, sub in node.items():
            attr = f"f{next(counter)}"
            rename[attr] = seg
            if isinstance(sub, dict):
                fields.append((attr, build(sub, f"{prefix}.{attr}")))
            else:
                fields.append((attr, float))
                exprs[sub] = f"{prefix}.{attr}"
        for attr, name in extra:
            rename[attr] = name
            fields.append((attr, Any, None))
        return msgspec.defstruct(f"Record{next(counter)}", fields, rename=rename, gc=False)

    extra = [(a, f) for a, f in (("key", key_field), ("ts", timestamp_field)) if f is not None]
    try:
        root = build(tree, "s", extra)
    except (TypeError, ValueError):  # a name msgspec does not take
        return None
    src = f"lambda s: ({', '.join(exprs[j] for j in range(len(features)))},)"
    row = eval(src, {"__builtins__": {}}, {})  # noqa: S307 - generated attribute names only
    return msgspec.json.Decoder(root).decode, row


@functools.lru_cache(maxsize=64)
def _typed_lines(features, key_field, timestamp_field):
    """(decode_lines, one attrgetter per feature) for the same Struct shape as
    `_typed_decoder`: a whole batch, newline-joined, in one msgspec call."""
    typed = _typed_decoder(features, key_field, timestamp_field)
    if typed is None:
        return None
    root = typed[0].__self__.type
    getters = []
    for path in features:  # the Struct attribute path of each feature's JSON path
        node, attrs = root, []
        for seg in path.split("."):
            fld = {f.encode_name: f for f in msgspec.structs.fields(node)}[seg]
            attrs.append(fld.name)
            node = fld.type
        getters.append(operator.attrgetter(".".join(attrs)))
    return msgspec.json.Decoder(root).decode_lines, tuple(getters)


def _plain_name(name: str) -> bool:
    """Printable ASCII without quotes or backslashes: a key that JSON writes as itself."""
    return name.isascii() and name.isprintable() and '"' not in name and "\\" not in name


def _get_path(obj: Any, path: str) -> Any:
    """Value at a dotted path, or ``_MISSING``; falls back to a literal dotted top-level key."""
    cur = obj
    for seg in path.split("."):
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
        else:
            if isinstance(obj, dict) and "." in path and path in obj:
                return obj[path]
            return _MISSING
    return cur


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True, default=str)
    except RecursionError:  # a value nested nearly as deep as a record may be
        return "[[[[..." if isinstance(value, list) else '{"...'
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_value(value: Any, name: str) -> tuple[float | None, str | None, str | None]:
    """One feature value -> (float, None, None) or (None, reason, message)."""
    if value is _MISSING:
        return None, "missing_field", f'missing field "{name}"'
    if value is None:
        return None, "missing_field", f'field "{name}" is null'
    t = type(value)
    if t in _NUMERIC_TYPES:
        try:
            x = float(value)
        except OverflowError:
            return None, "non_finite", f'field "{name}" is out of float64 range: {_short(value)}'
        if not math.isfinite(x):
            return None, "non_finite", f'field "{name}" is not finite: {_short(value)}'
        return x, None, None
    kind = _JSON_TYPE_NAMES.get(t, t.__name__)
    return None, "non_numeric", f'field "{name}" is not a number: {_short(value)} ({kind})'


def _slow_row(obj: dict, spec: RecordSpec) -> tuple[list | None, str | None, str | None]:
    """Explain a record the fast getter rejected: the row (with imputes) or the first error."""
    row = []
    for name, imp in zip(spec.features, spec._impute_row):
        x, reason, msg = _check_value(_get_path(obj, name), name)
        if reason is not None:
            if imp is None:
                return None, reason, msg
            x = imp
        row.append(x)
    return row, None, None


def decode_batch(values: Sequence[bytes | str | None], spec: Any) -> DecodedBatch:
    """Decode a batch of raw JSON records (bytes or str) into a feature matrix and errors."""
    spec = compile_spec(spec)
    if len(values) > 1 and spec._typed_batch is not None:
        whole = _decode_whole_batch(values, spec)
        if whole is not None:
            return whole
    max_bytes = spec.max_bytes
    fast_get = spec._fast_get
    numeric = _NUMERIC_TYPES
    key_get, ts_get = spec._key_get, spec._ts_get
    key_field, ts_field = spec.key_field, spec.timestamp_field
    typed = spec._typed
    typed_decode, typed_row = typed if typed is not None else (None, None)
    typed_errors = _MSGSPEC_ERRORS
    short = 2 * _FAST_MAX_NESTING
    rows: list = []
    good: list = []
    keys: list | None = [] if key_field is not None else None
    stamps: list | None = [] if ts_field is not None else None
    errors: list = []
    append_row, append_good = rows.append, good.append

    for i, raw in enumerate(values):
        if raw is None or len(raw) == 0:
            errors.append((i, "invalid_json", "empty record"))
            continue
        n = len(raw)
        if n > max_bytes or (type(raw) is str and n * 4 > max_bytes
                             and len(raw.encode("utf-8", "surrogatepass")) > max_bytes):
            size = n if type(raw) is not str else len(raw.encode("utf-8", "surrogatepass"))
            errors.append((i, "too_large", too_large_message(size, max_bytes)))
            continue
        # The typed fast path: ASCII only (msgspec does not check the UTF-8 of the values it
        # skips, json does), short or shallow (see _FAST_MAX_NESTING).
        if typed_decode is not None and raw.isascii() and (
                n <= short or _brackets(raw) < _FAST_MAX_NESTING):
            try:
                rec = typed_decode(raw)
            except typed_errors:
                pass
            else:
                append_row(typed_row(rec))
                append_good(i)
                if keys is not None:
                    keys.append(rec.key)
                if stamps is not None:
                    stamps.append(rec.ts)
                continue
        try:
            obj = _loads_object(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            errors.append((i, "invalid_json", f"invalid JSON: {exc}"))
            continue
        except RecursionError:
            errors.append((i, "invalid_json", "invalid JSON: nested too deeply"))
            continue
        if type(obj) is not dict:
            kind = _JSON_TYPE_NAMES.get(type(obj), type(obj).__name__)
            errors.append((i, "not_object", f"expected a JSON object, got {kind}"))
            continue
        try:
            vals = fast_get(obj)
            ok = set(map(type, vals)) <= numeric
        except (KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            vals, reason, msg = _slow_row(obj, spec)
            if reason is not None:
                errors.append((i, reason, msg))
                continue
        append_row(vals)
        append_good(i)
        if keys is not None:
            keys.append(_meta_get(obj, key_get, key_field))
        if stamps is not None:
            stamps.append(_meta_get(obj, ts_get, ts_field))

    return _finish(rows, good, keys, stamps, errors, spec, len(values))


def _decode_whole_batch(values, spec: RecordSpec) -> DecodedBatch | None:
    """The typed fast path for a whole batch in one msgspec call, with no per-record Python
    work: the values newline-joined and decoded line by line (`decode_lines`), each feature
    column gathered by one attrgetter over the Structs. Only when every record would take
    the typed path on its own: bytes, none empty, none over max_bytes, all ASCII, no newline
    inside a record (the join's newlines are then exactly the record boundaries, and each
    line is decoded as that record alone), none both long and bracket-heavy (see
    _FAST_MAX_NESTING), and msgspec accepts every line. Otherwise None: the record-by-record
    loop decides, with its errors."""
    n = len(values)
    try:
        joined = b"\n".join(values)
    except TypeError:  # str or None among the values
        return None
    if not joined.isascii() or joined.count(b"\n") != n - 1 or not all(values):
        return None
    longest = max(map(len, values))
    if longest > spec.max_bytes:
        return None
    short = 2 * _FAST_MAX_NESTING
    if longest > short and any(_brackets(v) >= _FAST_MAX_NESTING
                               for v in values if len(v) > short):
        return None
    decode_lines, getters = spec._typed_batch
    try:
        recs = decode_lines(joined)
    except _MSGSPEC_ERRORS:
        return None
    if len(recs) != n:  # a blank (whitespace-only) record: decode_lines skips it
        return None
    X = np.empty((n, len(getters)), dtype=np.float64)
    for j, get in enumerate(getters):  # Struct fields typed float: finite floats only
        X[:, j] = np.fromiter(map(get, recs), np.float64, n)
    if not np.isfinite(X).all():  # not expected; the loop explains it record by record
        return None
    keys = list(map(_KEY, recs)) if spec.key_field is not None else None
    stamps = list(map(_TS, recs)) if spec.timestamp_field is not None else None
    return _finish_matrix(X, None, np.arange(n, dtype=np.intp), keys, stamps, [], spec, n)


_KEY, _TS = operator.attrgetter("key"), operator.attrgetter("ts")


def _meta_get(obj: dict, get, path: str):
    """The value at ``path`` (None when absent), fast path first."""
    try:
        return get(obj)[0]
    except (KeyError, TypeError, IndexError):
        v = _get_path(obj, path)
        return None if v is _MISSING else v


def _finish(rows, good, keys, stamps, errors, spec: RecordSpec, n_input: int) -> DecodedBatch:
    """Rows -> float64 matrix; reject/impute non-finite rows; attach keys and timestamps
    (`keys`/`stamps`: the raw values per good row, or None when the field is not set)."""
    d = len(spec.features)
    if rows:
        try:
            X = np.array(rows, dtype=np.float64)
        except OverflowError:  # an int beyond float64: convert row by row
            X = np.empty((len(rows), d))
            for r, row in enumerate(rows):
                for j, v in enumerate(row):
                    try:
                        X[r, j] = float(v)
                    except OverflowError:
                        X[r, j] = math.inf
        X = X.reshape(len(rows), d)
    else:
        X = np.empty((0, d), dtype=np.float64)
    return _finish_matrix(X, rows, np.asarray(good, dtype=np.intp), keys, stamps, errors, spec,
                          n_input)


def _finish_matrix(X, rows, good_index, keys, stamps, errors, spec: RecordSpec,
                   n_input: int) -> DecodedBatch:
    """`_finish` once the matrix is built (`rows` are only read to explain non-finite rows)."""
    finite = np.isfinite(X)
    if not finite.all():
        for j, v in spec._impute_cols:
            col_bad = ~finite[:, j]
            if col_bad.any():
                X[col_bad, j] = v
        finite = np.isfinite(X)
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        if bad_rows.size:
            for r in bad_rows:
                j = int(np.flatnonzero(~finite[r])[0])
                name = spec.features[j]
                raw_val = rows[r][j]
                what = ("out of float64 range" if isinstance(raw_val, int)
                        else f"not finite: {_short(raw_val)}")
                errors.append((int(good_index[r]), "non_finite", f'field "{name}" is {what}'))
            keep = np.ones(len(X), dtype=bool)
            keep[bad_rows] = False
            X = X[keep]
            good_index = good_index[keep]
            if keys is not None:
                keys = [k for k, m in zip(keys, keep) if m]
            if stamps is not None:
                stamps = [t for t, m in zip(stamps, keep) if m]
            errors.sort(key=lambda e: e[0])

    n_good = len(good_index)
    if keys is None:
        keys = [None] * n_good
    if stamps is not None:
        raw_ts = stamps
        numeric = np.fromiter((type(v) in _NUMERIC_TYPES for v in raw_ts), dtype=bool,
                              count=n_good)
        ts = np.full(n_good, np.nan)
        if numeric.any():
            try:
                ts[numeric] = np.array([v for v, m in zip(raw_ts, numeric) if m],
                                       dtype=np.float64)
            except OverflowError:
                numeric[:] = False
            ts[numeric] = _scale_epoch(ts[numeric])
        for j in np.flatnonzero(~numeric):
            ts[j] = to_epoch_seconds(raw_ts[j])
    else:
        ts = np.full(n_good, np.nan)
    return DecodedBatch(X=X, good_index=good_index, keys=keys, timestamps=ts, errors=errors,
                        n_input=n_input)


def _scale_epoch(x: np.ndarray) -> np.ndarray:
    """Vectorised unit guess: s, ms (>= 1e11), us (>= 1e14), ns (>= 1e17) -> seconds."""
    ax = np.abs(x)
    div = np.where(ax >= 1e17, 1e9, np.where(ax >= 1e14, 1e6, np.where(ax >= 1e11, 1e3, 1.0)))
    out = x / div
    out[~np.isfinite(out)] = np.nan
    return out


def to_epoch_seconds(value: Any) -> float:
    """A timestamp value (epoch s/ms/us/ns number or string, or ISO-8601) -> epoch seconds/NaN."""
    if value is None or value is _MISSING or isinstance(value, bool):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z"))
                                            else text)
            except ValueError:
                return math.nan
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return dt.timestamp()
    if not isinstance(value, (int, float)):
        return math.nan
    try:
        x = float(value)
    except OverflowError:
        return math.nan
    if not math.isfinite(x):
        return math.nan
    ax = abs(x)
    if ax >= 1e17:
        return x / 1e9
    if ax >= 1e14:
        return x / 1e6
    if ax >= 1e11:
        return x / 1e3
    return x


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def missing_csv_columns(header: Sequence[str], spec: Any) -> list[str]:
    """Feature columns absent from a CSV header and not imputed (every row would be rejected)."""
    spec = compile_spec(spec)
    cols = {h.strip() for h in header}
    imputed = dict(spec.impute)
    return [f for f in spec.features if f not in cols and f not in imputed]


def too_large_message(size: int, max_bytes: int, kept: int | None = None) -> str:
    """The ``too_large`` reason's message; ``kept``: the bytes of it a dead letter carries."""
    tail = f" (only its first {kept} bytes are kept)" if kept is not None else ""
    return f"record is {size} bytes, over records.max_bytes = {max_bytes}{tail}"


def duplicate_csv_columns(header: Sequence[str]) -> list[str]:
    """Names a CSV header gives more than one column (the first such column is read)."""
    seen: set = set()
    dup: list = []
    for h in (h.strip() for h in header):
        if h in seen and h not in dup:
            dup.append(h)
        seen.add(h)
    return dup


def _csv_cell(cell: Any, name: str) -> tuple[float | None, str | None, str | None]:
    """One CSV cell (a string) -> float or (reason, message); an empty cell is missing."""
    if cell is _MISSING:
        return None, "missing_field", f'missing column "{name}"'
    if cell is _SHORT_ROW:
        return None, "missing_field", f'CSV row too short: no cell for column "{name}"'
    text = cell.strip() if isinstance(cell, str) else cell
    if text == "" or text is None:
        return None, "missing_field", f'field "{name}" is empty'
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None, "non_numeric", f'field "{name}" is not a number: {_short(cell)}'
    if not math.isfinite(x):
        return None, "non_finite", f'field "{name}" is not finite: {_short(cell)}'
    return x, None, None


def decode_csv_rows(header: Sequence[str], rows: Iterable[Sequence[str]], spec: Any
                    ) -> DecodedBatch:
    """Decode CSV rows (lists of strings, as from ``csv.reader``) given the header row.

    Indices in the result count the given rows from 0. A row longer than the header is
    ``not_object``, and so is ``None`` (a row whose quoted field never closed, as a file
    source gives it at the end of its input); a short row's absent cells are missing.
    """
    spec = compile_spec(spec)
    header = [h.strip() for h in header]
    pos = {}
    for j, h in enumerate(header):
        pos.setdefault(h, j)
    feat_idx = [pos.get(f) for f in spec.features]
    width = len(header)
    max_bytes = spec.max_bytes
    imp_row = spec._impute_row
    all_present = all(j is not None for j in feat_idx)
    key_j = pos.get(spec.key_field) if spec.key_field is not None else None
    ts_j = pos.get(spec.timestamp_field) if spec.timestamp_field is not None else None

    cells: list = []   # per good-candidate row: list of feature strings
    cand: list = []    # input indices of the candidates
    extra: list = []   # (key, ts) raw per candidate
    errors: list = []
    n_input = 0
    for i, row in enumerate(rows):
        n_input = i + 1
        if row is None:  # (files.py: lines gathered for a quoted field that never closed)
            errors.append((i, "not_object", "CSV row with a quoted field that is never "
                           "closed: it runs to the end of the input"))
            continue
        n = len(row)
        if n == 0:
            errors.append((i, "not_object", "empty CSV row"))
            continue
        if n > width:
            errors.append((i, "not_object", f"CSV row has {n} fields, the header has {width}"))
            continue
        size = sum(map(len, row)) + n - 1
        if size > max_bytes:
            errors.append((i, "too_large", too_large_message(size, max_bytes)))
            continue
        if all_present and n == width:
            cells.append([row[j] for j in feat_idx])
        else:
            cells.append([_MISSING if j is None else row[j] if j < n else _SHORT_ROW
                          for j in feat_idx])
        cand.append(i)
        extra.append((row[key_j] if key_j is not None and key_j < n else None,
                      row[ts_j] if ts_j is not None and ts_j < n else None))

    d = len(spec.features)
    X = None
    if cells and all_present:
        try:
            X = np.array(cells, dtype=np.float64).reshape(len(cells), d)
        except (ValueError, TypeError):
            X = None
        if X is not None and not np.isfinite(X).all():
            X = None  # let the per-row path apply imputes and name the field
    if X is not None:
        keep_idx = cand
        keep_extra = extra
    else:
        out_rows, keep_idx, keep_extra = [], [], []
        for i, row_cells, ex in zip(cand, cells, extra):
            row = []
            for name, cell, imp in zip(spec.features, row_cells, imp_row):
                x, reason, msg = _csv_cell(cell, name)
                if reason is not None:
                    if imp is None:
                        errors.append((i, reason, msg))
                        row = None
                        break
                    x = imp
                row.append(x)
            if row is not None:
                out_rows.append(row)
                keep_idx.append(i)
                keep_extra.append(ex)
        X = (np.array(out_rows, dtype=np.float64).reshape(len(out_rows), d) if out_rows
             else np.empty((0, d)))
        errors.sort(key=lambda e: e[0])

    keys = [k for k, _ in keep_extra] if spec.key_field is not None else [None] * len(keep_idx)
    if spec.timestamp_field is not None:
        ts = np.array([to_epoch_seconds(t) for _, t in keep_extra], dtype=np.float64)
    else:
        ts = np.full(len(keep_idx), np.nan)
    return DecodedBatch(X=X, good_index=np.asarray(keep_idx, dtype=np.intp), keys=keys,
                        timestamps=ts, errors=errors, n_input=n_input)
