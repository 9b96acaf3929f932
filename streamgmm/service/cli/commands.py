"""The ``streamgmm`` command line: run the daemon, fit/score/inspect models offline, check a config.

Exit codes: 0 success; 2 usage or configuration error (one line on stderr naming the key, never a
traceback); 1 any other failure (one line on stderr); 130 interrupted.

Subcommands::

    streamgmm run --config FILE | --demo        the daemon (streamgmm.service.runtime.daemon.run)
    streamgmm fit --config FILE --input DATA --output MODEL
    streamgmm score --model MODEL --input DATA --output OUT|- [--trusted] [--config FILE]
    streamgmm inspect MODEL [--json] [--trusted]
    streamgmm check-config FILE [--offline]     validate; print the effective YAML, secrets
                                                masked; check files and the Kafka cluster
    streamgmm generate ...                      synthetic event stream (streamgmm.tools.generator)

DATA is a JSON-lines file (one object per line) or a CSV file with a header row (chosen by
``--format``, default by extension: ``.csv`` and ``.csv.gz`` are CSV; gzip-compressed inputs are recognised by content and decompressed); ``-`` reads stdin / writes stdout.
"""
from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import logging
import math
import os
import platform
import sys
import time
from typing import IO, Any, Iterator

from ..._version import __version__
from ..config import ConfigError, detector_dict, load_config
from ..local_io.compressed import CORRUPT_INPUT, corrupt_input_message, open_input, open_stream
from ..local_io.files import detect_format, strip_bom

__all__ = ["main", "build_parser", "UsageError"]

log = logging.getLogger("streamgmm.cli")

DEMO_CONFIG = "package:demo.yaml"
CHUNK_RECORDS = 20000
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


class UsageError(Exception):
    """A bad combination of arguments or inputs: exit code 2, message on stderr."""


# ------------------------------------------------------------------------------------ parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser; ``generate``'s options are loaded only when that command is used."""
    ap = argparse.ArgumentParser(
        prog="streamgmm",
        description="Streaming anomaly detection with Gaussian mixture models (Kafka daemon "
                    "and offline tools).",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage or configuration error. "
               "Run 'streamgmm COMMAND --help' for a command's options.")
    ap.add_argument("--version", action="version",
                    version=f"streamgmm {__version__} (python {platform.python_version()})")
    ap.add_argument("--log-level", default="WARNING", metavar="LEVEL",
                    choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                    type=str.upper, help="log level of the offline commands (default WARNING; "
                    "'run' uses logging.level from the config)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run the daemon",
                       description="Run the streaming daemon until SIGTERM/SIGINT or the end of "
                                   "a file source.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    g.add_argument("--demo", action="store_true",
                   help="run the built-in no-Kafka demo (shipped demo stream, anomalies to stdout)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fit", help="fit a model on a file and save it",
                       description="Fit scaler, mixture and threshold on a whole CSV/JSON-lines "
                                   "file (records.features and the detector section of the "
                                   "config) and save the model (.npz).")
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="YAML config file")
    p.add_argument("--input", "-i", required=True, metavar="DATA", help="CSV or JSON-lines file")
    p.add_argument("--output", "-o", required=True, metavar="MODEL", help="model file to write")
    _add_format(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("score", help="score a file with a saved model",
                       description="Write one JSON line per input record, in input order: "
                                   "line, score, anomaly, threshold, component, contributions "
                                   "(and key); bad records get error and message instead.")
    p.add_argument("--model", "-m", required=True, metavar="MODEL", help="model file")
    p.add_argument("--input", "-i", required=True, metavar="DATA",
                   help="CSV or JSON-lines file, - for stdin")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output file, - for stdout")
    p.add_argument("--trusted", action="store_true",
                   help="allow pickle-based (.joblib) models, which run code when loaded")
    p.add_argument("--config", "-c", metavar="FILE",
                   help="take key_field/timestamp_field/impute/max_bytes from this config")
    _add_format(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("inspect", help="describe a saved model",
                       description="Print a model's components, weights, means and threshold.")
    p.add_argument("model", metavar="MODEL", help="model file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--trusted", action="store_true",
                   help="allow pickle-based (.joblib) models, which run code when loaded")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("check-config", help="validate a config file",
                       description="Validate a config file (with environment overrides) and "
                                   "print the effective configuration as YAML, secrets masked.")
    p.add_argument("config", metavar="FILE", help="YAML config file")
    p.add_argument("--quiet", "-q", action="store_true", help="only validate; print nothing")
    p.add_argument("--offline", action="store_true",
                   help="validate the file only (for a config meant for another machine): "
                        "skip the checks of its paths and of the Kafka cluster, which by "
                        "default must answer within kafka.connect_timeout_seconds")
    p.set_defaults(func=cmd_check_config)

    _add_generate(sub, argv)
    return ap


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=["auto", "jsonl", "csv"], default="auto",
                   help="input format (default auto: .csv is CSV, anything else JSON lines)")


def _first_command(argv: list[str] | None) -> str | None:
    """The subcommand word in argv (the first non-option word), if any."""
    args = sys.argv[1:] if argv is None else argv
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--log-level":
            skip = True
            continue
        if a.startswith("-"):
            continue
        return a
    return None


def _load_generator():
    """The generator module, or the ImportError saying why it is not available."""
    try:
        from ...tools import generator
    except ImportError as exc:  # optional: the rest of the CLI works without it
        return exc
    return generator


def _add_generate(sub, argv: list[str] | None) -> None:
    """Register ``generate``; import the generator only when it is the command being run."""
    wanted = _first_command(argv) == "generate"
    gen = _load_generator() if wanted else None
    p = sub.add_parser("generate", help="write a synthetic event stream",
                       description="Write a synthetic, labelled JSON event stream to Kafka, a "
                                   "file or stdout.")
    if wanted and not isinstance(gen, ImportError):
        gen.add_arguments(p)
        p.set_defaults(func=lambda args: gen.main(args))
    else:
        p.set_defaults(func=cmd_generate_missing)


# ---------------------------------------------------------------------------------- commands


def cmd_generate_missing(args) -> int:
    print("streamgmm generate: error: the generator is not available", file=sys.stderr)
    return 1


def cmd_run(args) -> int:
    """Load the config, set up logging, hand over to the daemon loop."""
    cfg = load_config(DEMO_CONFIG if args.demo else args.config)
    from ..runtime.logs import setup_logging
    setup_logging(cfg.logging.level, cfg.logging.format)
    if args.demo:
        log.info("running the built-in demo: anomalies and dead letters as JSON lines on stdout")
    from ..runtime.daemon import run  # lazily: the daemon pulls in Kafka and Prometheus clients
    # Once started (libraries, model, clients loaded), move every object so far out of the
    # garbage collector's view: full collections then skip them (each cost ~30 ms and all
    # collections ~0.5 us per record on a backlog, BENCHMARKS.md). Only this process's own.
    return int(run(cfg, ready_callback=lambda daemon: gc.freeze()) or 0)


def cmd_check_config(args) -> int:
    """Validate; print the effective config (secrets masked) as YAML on stdout."""
    import yaml

    from ..runtime import preflight

    cfg = load_config(args.config)
    if not args.quiet:
        sys.stdout.write(f"# effective configuration of {args.config} (secrets masked)\n")
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(mask_secrets=True), sort_keys=False,
                                        default_flow_style=False))
        sys.stdout.flush()
    # the same checks as the daemon's start-up: files, then the Kafka cluster
    try:
        warnings = preflight.config_warnings(cfg) + preflight.check_model_source(cfg)
        warnings += [] if args.offline else preflight.run_preflight(cfg, check_model=True)
    except preflight.PreflightError as exc:
        print(f"streamgmm check-config: error: {exc}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"streamgmm check-config: warning: {w}", file=sys.stderr)
    needs = preflight.kafka_needed(cfg)
    if needs and not args.offline:
        print(f"{args.config}: OK (files; Kafka cluster at {preflight.servers(cfg)} reachable)",
              file=sys.stderr)
    else:
        print(f"{args.config}: OK" + (" (paths and Kafka not checked: --offline)"
                                      if args.offline else ""), file=sys.stderr)
    return 0


def cmd_fit(args) -> int:
    """Decode the whole input, fit a Detector on it, save it."""
    from streamgmm import Detector

    cfg = load_config(args.config)
    _check_input(args.input)
    features = list(cfg.records.features)
    X, n_records, counts, first = _read_all(args.input, args.format, cfg.records)
    n_bad = sum(counts.values())
    if n_bad:
        print(f"streamgmm fit: skipped {n_bad} of {n_records} records "
              f"({_reason_counts(counts)}); first: {first}", file=sys.stderr)
    if len(X) == 0:
        raise RuntimeError(f"{args.input}: no valid records to fit on"
                           + _format_hint(args.input, args.format, counts))
    from ...detection.sizing import min_training_records

    dcfg = detector_dict(cfg)
    need = min_training_records(dcfg, len(features))
    if len(X) < need:
        k = cfg.detector.n_components
        raise RuntimeError(
            f"{args.input}: {len(X)} valid records are too few to fit: at least {need} are "
            f"needed for {len(features)} features, "
            f"{k if isinstance(k, int) else f'up to {cfg.detector.max_components}'} "
            f"{cfg.detector.covariance_type}-covariance components and a "
            f"{cfg.detector.threshold.percentile:g}% threshold (twice the free parameters "
            f"of {'the mixture' if isinstance(k, int) else 'its simplest member'}, and "
            f"100/percentile records)")
    det = Detector.from_dict(dcfg, feature_names=features)
    try:
        t0 = time.perf_counter()
        det.fit(X)
        elapsed = time.perf_counter() - t0
        det.save(args.output)
    finally:
        det.close()
    thr = getattr(det, "threshold_", None)
    print(f"streamgmm fit: {len(X)} records x {len(features)} features -> {args.output} "
          f"({det.n_components} components, threshold "
          f"{'n/a' if thr is None else f'{thr:.4g}'}, {elapsed:.2f}s)", file=sys.stderr)
    return 0


def _count(n, noun):
    """'1 record', '2 records', '1 anomaly', '0 anomalies'."""
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def cmd_score(args) -> int:
    """Score every input record with a saved model; one JSON line per record, input order."""
    from streamgmm import Detector

    from ..records import compile_spec

    _check_input(args.input)
    if _same_file(args.input, args.output):
        raise UsageError(f"-o {args.output} is the input file: writing the scores there "
                         "would overwrite the records before they are read")
    det = _load_model(Detector, args.model, args.trusted)
    try:
        names = [str(n) for n in (det.feature_names or [])]
        if args.config:
            cfg = load_config(args.config)
            if not names or det.adopt_feature_names(cfg.records.features):
                names = list(cfg.records.features)  # the config names a positional model
            if list(cfg.records.features) != names:
                raise UsageError(f"records.features in {args.config} is "
                                 f"{list(cfg.records.features)}, but the model was trained on "
                                 f"{names}")
            spec = compile_spec(cfg.records)
        elif names and not det.train_info_.get("positional_features"):
            spec = compile_spec({"features": names})
        else:
            raise UsageError(f"{args.model} knows its features by position only (no names): "
                             "pass --config with records.features naming them in order")
        counts: dict = {}
        n_anom = n_total = 0
        seen: dict = {}
        with _open_out(args.output) as out:
            for lines, dec in _iter_decoded(args.input, args.format, spec, seen):
                res = det.score(dec.X) if len(dec) else None
                n_total += len(lines)
                if res is not None:
                    n_anom += int(res.is_anomaly.sum())
                for i, reason, _ in dec.errors:
                    counts[reason] = counts.get(reason, 0) + 1
                out.write(_score_lines(lines, dec, res, spec.key_field is not None))
    finally:
        det.close()
    n_bad = sum(counts.values())
    print(f"streamgmm score: {_count(n_total, 'record')}, {_count(n_anom, 'anomaly')}, "
          f"{n_bad} bad"
          + (f" ({_reason_counts(counts)})" if n_bad else ""), file=sys.stderr)
    if n_total and n_bad == n_total:
        raise RuntimeError(f"{args.input}: none of the {n_total} records could be scored"
                           + _format_hint(args.input, args.format, counts,
                                          seen.get("first", b"")))
    if not n_total:
        raise RuntimeError(f"{args.input}: no records to score")
    return 0


def cmd_inspect(args) -> int:
    """Print ``det.describe()`` as text or JSON."""
    from streamgmm import Detector

    det = _load_model(Detector, args.model, args.trusted)
    try:
        info = _jsonable(det.describe())
    finally:
        det.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        sys.stdout.write(render_description(info, args.model))
    return 0


# ----------------------------------------------------------------------------------- helpers


def _load_model(Detector, path: str, trusted: bool):
    from ...persistence import PICKLE_KINDS, identify

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    kind, what = identify(path)  # by the magic bytes, not the name
    if kind in PICKLE_KINDS:
        if not trusted:
            raise UsageError(f"{path} is {what}, which runs code when loaded; pass --trusted "
                             "only if you trust where it came from")
    elif kind != "zip":
        raise RuntimeError(f"{path} is not a streamgmm model: it is {what} (a model is the "
                           ".npz file 'streamgmm fit' writes)")
    return Detector.load(path, trusted=trusted)


def _check_input(path: str) -> None:
    if path != "-" and not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such input file")


def _same_file(a: str, b: str) -> bool:
    """Whether two paths (not stdin/stdout) name one existing file."""
    if "-" in (a, b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _format_hint(path: str, fmt: str, counts: dict, first: bytes = b"") -> str:
    """A hint when a CSV input was read as JSON lines (every record invalid JSON and the first
    line, ``first``, looks like a CSV header)."""
    if detect_format(path, fmt) != "jsonl" or \
            counts.get("invalid_json", 0) != sum(counts.values()):
        return ""
    first = first[:65536].decode("utf-8", errors="replace").strip()
    if "," in first and not first.startswith(("{", "[")):
        return ("; the input was read as JSON lines but looks like CSV: "
                "pass --format csv (or name the file .csv)")
    return ""


def _reason_counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


class _Progress:
    """``\\rreading FILE: 42% (1,234,567 records)`` on stderr, at most twice a second."""

    def __init__(self, path: str, total: int):
        self.path, self.total = path, total
        self.enabled = total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done_bytes: int, records: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        pct = 100.0 * min(done_bytes, self.total) / self.total
        sys.stderr.write(f"\rreading {self.path}: {pct:5.1f}% ({records:,} records)")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _until_cut(items, cut: list):
    """``items`` until a cut or corrupt compressed input ends them; its error into ``cut``."""
    try:
        yield from items
    except CORRUPT_INPUT as exc:
        cut.append(exc)


def _whole_sizes(dec, sizes: dict, max_bytes: int):
    """A too_large message names the line's whole size, not the prefix that was kept."""
    from ..records import too_large_message

    if sizes:
        dec.errors = [(i, reason, too_large_message(sizes[i], max_bytes)
                       if reason == "too_large" and i in sizes else message)
                      for i, reason, message in dec.errors]
    return dec


def _iter_decoded(path: str, fmt: str, spec,
                  seen: dict | None = None) -> Iterator[tuple[list[int], Any]]:
    """Yield ``(line_numbers, DecodedBatch)`` per chunk of the input (blank lines skipped).
    A file and stdin (``-``) are read alike: gzip by content, a UTF-8 byte-order mark
    dropped, bytes that are not UTF-8 replaced (as the daemon reads them). ``seen["first"]``:
    the first non-blank JSON line, for `_format_hint`."""
    seen = {} if seen is None else seen
    from ..records import (compile_spec, decode_batch, decode_csv_rows,
                           duplicate_csv_columns, missing_csv_columns)

    spec = compile_spec(spec)
    fmt = detect_format(path, fmt)
    stdin = path == "-"
    total = 0 if stdin else os.path.getsize(path)
    progress = _Progress(path, total)
    n_records = 0
    raw = open_stream(sys.stdin.buffer) if stdin else open_input(path)
    if fmt == "csv":
        f = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        try:
            counted = [0]

            def lines():
                for line in f:
                    counted[0] += len(line)
                    yield line

            reader = csv.reader(lines())
            header = next(reader, None)
            if header is None:
                raise RuntimeError(f"{path}: empty CSV file (no header row)")
            dup = [c for c in duplicate_csv_columns(header) if c in spec.features]
            if dup:
                raise RuntimeError(f"{path}: the CSV header has more than one column "
                                   f"{', '.join(repr(c) for c in dup)}: which to score is "
                                   f"ambiguous")
            missing = missing_csv_columns(header, spec)
            if missing:
                raise RuntimeError(f"{path}: the CSV header has no column "
                                   f"{', '.join(repr(m) for m in missing)} "
                                   f"(records.features needs {list(spec.features)})")
            rows, nums, cut = [], [], []
            for row in _until_cut(reader, cut):
                if not row:
                    continue
                rows.append(row)
                nums.append(reader.line_num)
                if len(rows) >= CHUNK_RECORDS:
                    n_records += len(rows)
                    yield nums, decode_csv_rows(header, rows, spec)
                    progress.update(counted[0], n_records)
                    rows, nums = [], []
            if rows:
                n_records += len(rows)
                yield nums, decode_csv_rows(header, rows, spec)
            if cut:
                raise RuntimeError(corrupt_input_message(path, n_records, cut[0]))
        finally:
            if raw is sys.stdin.buffer:
                f.detach()  # leave stdin open
            else:
                f.close()
    else:
        f = raw
        try:
            from ..local_io.files import BoundedLineReader

            done = 0
            values, nums, sizes, cut = [], [], {}, []
            lines = BoundedLineReader(f, spec.max_bytes)  # an over-long line: only a prefix
            for lineno, (line, size) in enumerate(_until_cut(iter(lines.read, None), cut), 1):
                done += size
                if not line.strip():
                    continue
                if not seen:
                    seen["first"] = line
                    line = strip_bom(line)
                if size > len(line):
                    sizes[len(values)] = size
                values.append(line.rstrip(b"\r\n"))
                nums.append(lineno)
                if len(values) >= CHUNK_RECORDS:
                    n_records += len(values)
                    yield nums, _whole_sizes(decode_batch(values, spec), sizes, spec.max_bytes)
                    progress.update(done, n_records)
                    values, nums, sizes = [], [], {}
            if values:
                n_records += len(values)
                yield nums, _whole_sizes(decode_batch(values, spec), sizes, spec.max_bytes)
            if cut:
                raise RuntimeError(corrupt_input_message(path, n_records, cut[0]))
        finally:
            if raw is not sys.stdin.buffer:
                f.close()
    progress.update(total, n_records, final=True)


def _read_all(path: str, fmt: str, spec):
    """All good rows of a file as one matrix, plus record count, error counts, first error."""
    import numpy as np

    parts, counts, first, n = [], {}, None, 0
    for lines, dec in _iter_decoded(path, fmt, spec):
        n += len(lines)
        if len(dec):
            parts.append(dec.X)
        for i, reason, message in dec.errors:
            counts[reason] = counts.get(reason, 0) + 1
            if first is None:
                first = f"line {lines[i]}: {reason}: {message}"
    d = len(getattr(spec, "features", ()) or ())
    X = np.concatenate(parts) if parts else np.empty((0, d))
    return X, n, counts, first


def _num(x: Any) -> Any:
    """A JSON-safe number (NaN/inf -> null)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _score_lines(lines: list[int], dec, res, with_key: bool) -> str:
    """The JSON lines of one chunk, good and bad records merged back into input order."""
    out: list = [None] * len(lines)
    for i, reason, message in dec.errors:
        rec = {"line": lines[i], "error": reason, "message": message, "score": None,
               "anomaly": None, "threshold": None, "rarity": None, "severity": None,
               "component": None}
        out[i] = json.dumps(rec)
    if res is not None:
        scores = res.scores.tolist()
        flags = res.is_anomaly.tolist()
        thr = res.threshold.tolist()
        comp = res.component.tolist()
        rarity, severity = res.rarity.tolist(), res.severity.tolist()
        contrib = res.contributions
        for j, i in enumerate(dec.good_index.tolist()):
            rec = {"line": lines[i], "score": _num(scores[j]), "anomaly": bool(flags[j]),
                   "threshold": _num(thr[j]), "rarity": _num(rarity[j]),
                   "severity": _num(round(severity[j], 3)), "component": int(comp[j]),
                   "contributions": [[str(n), _num(s)] for n, s in contrib[j]]}
            if with_key:
                rec["key"] = dec.keys[j]
            out[i] = json.dumps(rec, default=str)
    return "".join(s + "\n" for s in out)


class _open_out:
    """Context manager: a text file for writing, or stdout for ``-`` (not closed). A missing
    directory is made, as ``fit -o`` and the daemon's file sink make theirs."""

    def __init__(self, path: str):
        self.path = path
        self.f: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self.path == "-":
            self.f = sys.stdout
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.f = open(self.path, "w", encoding="utf-8")
        return self.f

    def __exit__(self, *exc) -> None:
        if self.f is not None and self.path != "-":
            self.f.close()
        elif self.f is not None:
            self.f.flush()


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types (non-finite floats -> null)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy array or scalar
        return _jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def render_description(info: dict, path: str = "") -> str:
    """``det.describe()`` as readable text: a summary, a table of components (weight and mean
    per feature), then any remaining sections as indented YAML."""
    import yaml

    info = dict(info)
    lines = [f"model {path}".rstrip()]
    names = info.get("feature_names") or []
    weights = info.pop("weights", None)
    means = info.pop("means", None)
    scalars = {k: v for k, v in info.items() if not isinstance(v, (dict, list))}
    for k in scalars:
        info.pop(k)
    if names:
        scalars = {"features": ", ".join(str(n) for n in names), **scalars}
        info.pop("feature_names", None)
    width = max((len(k) for k in scalars), default=0)
    for k, v in scalars.items():
        lines.append(f"  {k.ljust(width)}  {_fmt_scalar(v)}")
    if isinstance(weights, list) and isinstance(means, list) and len(weights) == len(means):
        cols = [str(n) for n in names] if names and means and len(means[0]) == len(names) \
            else [f"x{j}" for j in range(len(means[0]) if means else 0)]
        table = [["component", "weight"] + [f"mean {c}" for c in cols]]
        for k, (w, mu) in enumerate(zip(weights, means)):
            table.append([str(k), _fmt_scalar(w)] + [_fmt_scalar(m) for m in mu])
        widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
        lines.append("components:")
        for row in table:
            lines.append("  " + "  ".join(cell.rjust(wd) for cell, wd in zip(row, widths)))
    elif weights is not None or means is not None:
        info.update({"weights": weights, "means": means})
    if info:
        dumped = yaml.safe_dump(info, sort_keys=False, default_flow_style=None, width=100)
        lines.extend(dumped.rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (OSError,)) and getattr(exc, "filename", None) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamgmm`` console script and ``python -m streamgmm``."""
    if argv is not None:
        argv = list(argv)
    if _first_command(argv) == "generate":
        gen = _load_generator()
        if isinstance(gen, ImportError):
            print(f"streamgmm generate: error: the generator is not available ({gen})",
                  file=sys.stderr)
            return 1
    parser = build_parser(argv)
    args = parser.parse_args(argv)  # exits 2 with usage on bad arguments
    command = args.command
    if command not in ("run", "generate"):
        from ..runtime.logs import setup_logging
        setup_logging(args.log_level, "plain")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"streamgmm {command}: config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"streamgmm {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamgmm {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `streamgmm score ... -o - | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's flush quiet
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, no traceback (--log-level DEBUG shows it)
        log.debug("%s failed", command, exc_info=True)
        print(f"streamgmm {command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
