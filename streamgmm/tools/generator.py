"""Scenario generator: a synthetic, labelled JSON event stream for demos, tests and benchmarks.

Normal records come from a seeded Gaussian mixture; planted anomalies (isolated far points and
small tight clusters) arrive at a given rate; drift scenarios (abrupt shift, variance change, a
new component, slow drift) start on a schedule given in record indices. Ground truth goes to a
side file (``--labels``) or into a field of each record that the daemon ignores
(``--label-field``). The same seed and options always give the same records.

Python use::

    from streamgmm.tools.generator import Scenario, generate, generate_arrays, parse_drift
    for ev in generate(1000, seed=7, drifts=["shift@500:feature=0,size=3"]):
        ev.index, ev.record, ev.label           # dict to send, ground-truth dict
    X, labels = generate_arrays(10_000, d=4, k=3)   # arrays for benchmarks

CLI (registered as ``streamgmm generate``; also ``python -m streamgmm.tools.generator``)::

    streamgmm generate --count 100000 --output events.jsonl --labels labels.jsonl \\
        --drift shift@50000:feature=0,size=3
    streamgmm generate --bootstrap-servers kafka:9092 --topic events --rate 500 --count 0
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import IO, Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

__all__ = [
    "Drift",
    "DriftSpecError",
    "Event",
    "Scenario",
    "ScenarioGenerator",
    "add_arguments",
    "generate",
    "generate_arrays",
    "main",
    "parse_drift",
    "produce_kafka",
    "write_jsonl",
]

# Records are generated in fixed-size blocks, each from its own seeded RNG, so the stream is
# the same whatever is consumed (a prefix of a longer run is the shorter run).
BLOCK = 4096

# Seed-sequence tags so the different random streams never overlap.
_TAG_MIXTURE, _TAG_BLOCK, _TAG_CLUSTER, _TAG_DRIFT = 1, 2, 3, 4

DRIFT_KINDS = ("shift", "scale", "component", "slow")
_KIND_ALIASES = {
    "shift": "shift", "mean": "shift",
    "scale": "scale", "variance": "scale",
    "component": "component", "new-component": "component", "newcomp": "component",
    "slow": "slow", "ramp": "slow",
}
_DRIFT_KEYS = {
    "shift": {"feature", "size"},
    "slow": {"feature", "size"},
    "scale": {"feature", "factor"},
    "component": {"weight", "distance"},
}

DRIFT_HELP = """\
drift spec:  KIND@START[-END][:key=value[,key=value...]]
  START/END are record indices (0-based; suffix k = 1e3, M = 1e6). Without END the change is
  abrupt at START; with END it ramps linearly from START to END and then holds.
  shift      abrupt mean shift       keys: feature=all|I|NAME[+I...] (default 0), size=S (default 3)
                                     S is in within-component standard deviations of each feature
  slow       slow drift (needs END)  same keys as shift; the shift grows linearly START..END
  scale      variance change         keys: feature=... (default all), factor=F (default 2):
                                     deviations from the component mean are multiplied by F
  component  a new component         keys: weight=W (default 0.2): fraction of normal records
                                     drawn from it; distance=D (default the mixture separation)
  aliases: mean=shift, ramp=slow, variance=scale, new-component|newcomp=component
  examples: --drift shift@50000:feature=0,size=3   --drift slow@20k-60k:feature=1+2,size=4
            --drift scale@30000:factor=2.5         --drift component@80000:weight=0.3
label record (--labels FILE, one JSON line per record; the --label-field object has no "index"):
  {"index": i, "label": 0|1, "kind": "normal"|"point"|"cluster", "component": j,
   "cluster": c|null, "scenario": "stationary" or the active drift specs joined by ";"}
  with Kafka output each label line also has "topic", "partition" and "offset".
"""


class DriftSpecError(ValueError):
    """A drift spec string that does not follow KIND@START[-END][:key=value,...]."""


@dataclass(frozen=True)
class Drift:
    """One scheduled change of the normal-data distribution (see DRIFT_HELP for the syntax)."""

    kind: str                      # shift | slow | scale | component
    start: int
    end: int | None = None         # None: abrupt at start; else linear ramp start..end
    features: tuple | None = None  # feature indices or names; None = all (resolved later)
    size: float = 3.0              # shift/slow: within-component standard deviations
    factor: float = 2.0            # scale: multiplier of deviations from the component mean
    weight: float = 0.2            # component: share of normal records from the new component
    distance: float | None = None  # component: min distance of its mean from existing means
    spec: str = ""                 # canonical text, used as the label's scenario name

    def progress(self, idx: np.ndarray) -> np.ndarray:
        """Fraction of the change in force at each record index (0 before start, 1 after)."""
        idx = np.asarray(idx, dtype=np.float64)
        if self.end is None or self.end <= self.start:
            return (idx >= self.start).astype(np.float64)
        return np.clip((idx - self.start) / float(self.end - self.start), 0.0, 1.0)


def _parse_count(text: str) -> int:
    """'50000', '50k', '1.5M' -> int."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise DriftSpecError(f"not a record index: {text!r}")
    mult = {"": 1, "k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}[m.group(2)]
    value = float(m.group(1)) * mult
    if value != int(value):
        raise DriftSpecError(f"not a whole record index: {text!r}")
    return int(value)


def parse_drift(spec: str) -> Drift:
    """Parse ``KIND@START[-END][:key=value,...]`` into a Drift; DriftSpecError says what is wrong."""
    if isinstance(spec, Drift):
        return spec
    text = spec.strip()
    m = re.fullmatch(r"([A-Za-z-]+)@([^:]+?)(?::(.*))?", text)
    if not m:
        raise DriftSpecError(f"{spec!r}: expected KIND@START[-END][:key=value,...]")
    kind = _KIND_ALIASES.get(m.group(1).lower())
    if kind is None:
        raise DriftSpecError(f"{spec!r}: unknown drift kind {m.group(1)!r} "
                             f"(one of {', '.join(DRIFT_KINDS)})")
    when = m.group(2)
    if "-" in when:
        a, b = when.split("-", 1)
        start, end = _parse_count(a), _parse_count(b)
        if end <= start:
            raise DriftSpecError(f"{spec!r}: END must be greater than START")
    else:
        start, end = _parse_count(when), None
    if kind == "slow" and end is None:
        raise DriftSpecError(f"{spec!r}: slow drift needs START-END")
    kw: dict[str, Any] = {}
    if m.group(3):
        for item in m.group(3).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise DriftSpecError(f"{spec!r}: {item!r} is not key=value")
            key, value = (s.strip() for s in item.split("=", 1))
            if key not in _DRIFT_KEYS[kind]:
                raise DriftSpecError(f"{spec!r}: key {key!r} does not apply to {kind} "
                                     f"(allowed: {', '.join(sorted(_DRIFT_KEYS[kind]))})")
            if key == "feature":
                if value.lower() == "all":
                    kw["features"] = None
                else:
                    parts = [p.strip() for p in value.split("+") if p.strip()]
                    if not parts:
                        raise DriftSpecError(f"{spec!r}: empty feature list")
                    kw["features"] = tuple(int(p) if p.isdigit() else p for p in parts)
            else:
                try:
                    num = float(value)
                except ValueError:
                    raise DriftSpecError(f"{spec!r}: {key}={value!r} is not a number") from None
                if not np.isfinite(num):
                    raise DriftSpecError(f"{spec!r}: {key} must be finite")
                kw[key] = num
    if kind in ("shift", "slow"):
        kw.setdefault("features", (0,))
    if kind == "scale" and kw.get("factor", 2.0) <= 0:
        raise DriftSpecError(f"{spec!r}: factor must be > 0")
    if kind == "component" and not 0 < kw.get("weight", 0.2) < 1:
        raise DriftSpecError(f"{spec!r}: weight must be in (0, 1)")
    if kind == "component" and kw.get("distance", 1.0) <= 0:
        raise DriftSpecError(f"{spec!r}: distance must be > 0")
    return Drift(kind=kind, start=start, end=end, spec=text, **kw)


@dataclass(frozen=True)
class Scenario:
    """Everything that determines the stream: mixture shape, anomalies, drifts, field names."""

    d: int = 3                          # features
    k: int = 3                          # mixture components
    seed: int = 0
    anomaly_rate: float = 0.01          # fraction of records that are planted anomalies
    cluster_fraction: float = 0.3       # share of anomalies that belong to tight clusters
    cluster_size: float = 8.0           # expected members of one anomaly cluster
    anomaly_distance: float = 6.0       # min Mahalanobis distance of anomalies from every component
    separation: float = 6.0             # min distance between component means (unit ~ component std)
    drifts: tuple = ()                  # Drift objects or spec strings
    feature_names: tuple | None = None  # dotted paths; default f0..f{d-1}

    def __post_init__(self):
        names = tuple(self.feature_names) if self.feature_names else None
        d = len(names) if names else int(self.d)
        if names and len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if d < 1 or self.k < 1:
            raise ValueError("d and k must be >= 1")
        if not 0 <= self.anomaly_rate < 1:
            raise ValueError("anomaly_rate must be in [0, 1)")
        if not 0 <= self.cluster_fraction <= 1:
            raise ValueError("cluster_fraction must be in [0, 1]")
        if self.cluster_size < 1:
            raise ValueError("cluster_size must be >= 1")
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "feature_names", names or tuple(f"f{i}" for i in range(d)))
        drifts = tuple(parse_drift(s) for s in self.drifts)
        object.__setattr__(self, "drifts", tuple(self._resolve(x) for x in drifts))

    def _resolve(self, drift: Drift) -> Drift:
        """Turn feature names into indices and check they exist."""
        if drift.features is None:
            return drift
        idx = []
        for f in drift.features:
            if isinstance(f, str):
                if f not in self.feature_names:
                    raise DriftSpecError(f"{drift.spec!r}: unknown feature {f!r}")
                f = self.feature_names.index(f)
            if not 0 <= int(f) < self.d:
                raise DriftSpecError(f"{drift.spec!r}: feature {f} out of range 0..{self.d - 1}")
            idx.append(int(f))
        return replace(drift, features=tuple(idx))


class Event(NamedTuple):
    """One generated record: its index, the JSON-able record, and its ground-truth label."""

    index: int
    record: dict
    label: dict


def _random_covariance_factor(rng: np.random.Generator, d: int) -> np.ndarray:
    """L with L @ L.T a random SPD covariance: random rotation times std devs in [0.5, 1.5]."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    return q * rng.uniform(0.5, 1.5, size=d)


def _place_means(rng, n, d, sep, existing=None, scale=None):
    """n points at pairwise (and from `existing`) distance >= sep, drawn in a growing box."""
    pts = [] if existing is None else [np.asarray(p) for p in existing]
    out = []
    box = scale if scale is not None else sep * max(1.0, (len(pts) + n) ** (1.0 / d))
    for _ in range(n):
        for attempt in range(10_000):
            cand = rng.uniform(-box, box, size=d)
            if all(np.linalg.norm(cand - p) >= sep for p in pts):
                break
            if attempt % 100 == 99:
                box *= 1.1
        pts.append(cand)
        out.append(cand)
    return np.array(out).reshape(n, d)


class ScenarioGenerator:
    """Generates the scenario's records block by block; every block is seeded on its own."""

    def __init__(self, scenario: Scenario | None = None, **kwargs):
        self.scenario = scenario if scenario is not None else Scenario(**kwargs)
        sc = self.scenario
        d, k = sc.d, sc.k
        rng = np.random.default_rng([sc.seed, _TAG_MIXTURE])
        self.weights = rng.dirichlet(np.full(k, 4.0))
        self.means = _place_means(rng, k, d, sc.separation)
        self.factors = np.stack([_random_covariance_factor(rng, d) for _ in range(k)])
        self.covariances = np.einsum("kij,klj->kil", self.factors, self.factors)
        # Within-component std of each feature: the unit of shift sizes.
        self.feature_std = np.sqrt(np.einsum("k,kii->i", self.weights, self.covariances))
        # New components of "component" drifts, in drift order.
        self.new_components: list[tuple[int, np.ndarray, np.ndarray]] = []
        means_so_far = list(self.means)
        for n, dr in enumerate(sc.drifts):
            if dr.kind != "component":
                continue
            drng = np.random.default_rng([sc.seed, _TAG_DRIFT, n])
            sep = dr.distance if dr.distance is not None else sc.separation
            mu = _place_means(drng, 1, d, sep, existing=means_so_far)[0]
            means_so_far.append(mu)
            self.new_components.append((n, mu, _random_covariance_factor(drng, d)))
        # Anomalies are kept far from every component that ever exists, under the widest scale.
        max_factor = max([1.0] + [dr.factor for dr in sc.drifts if dr.kind == "scale"])
        all_means = np.array(means_so_far).reshape(-1, d)
        all_factors = [*self.factors, *(f for _, _, f in self.new_components)]
        self._guard_means = all_means
        self._guard_prec_factors = np.stack([np.linalg.inv(f * max_factor) for f in all_factors])
        # Cluster anomalies: a cluster's members arrive within one window of this many records.
        rate = sc.anomaly_rate * sc.cluster_fraction
        self.cluster_window = int(max(1, round(sc.cluster_size / rate))) if rate > 0 else 1
        spread = float(np.mean(np.abs(np.linalg.eigvalsh(self.covariances)) ** 0.5))
        self.cluster_spread = 0.05 * spread

    # -- distribution at an index ---------------------------------------------------------
    def offsets(self, idx: np.ndarray) -> np.ndarray:
        """Mean translation (n, d) applied at each record index by shift/slow drifts."""
        out = np.zeros((len(idx), self.scenario.d))
        for dr in self.scenario.drifts:
            if dr.kind in ("shift", "slow"):
                feats = list(range(self.scenario.d)) if dr.features is None else list(dr.features)
                p = dr.progress(idx)
                out[:, feats] += np.outer(p, dr.size * self.feature_std[feats])
        return out

    def scale_factors(self, idx: np.ndarray) -> np.ndarray:
        """Per-record, per-feature multiplier (n, d) of deviations from the component mean."""
        out = np.ones((len(idx), self.scenario.d))
        for dr in self.scenario.drifts:
            if dr.kind == "scale":
                feats = list(range(self.scenario.d)) if dr.features is None else list(dr.features)
                p = dr.progress(idx)[:, None]
                out[:, feats] *= 1.0 + p * (dr.factor - 1.0)
        return out

    def active_drifts(self, i: int) -> list[Drift]:
        """Drifts whose start has passed at record index i."""
        return [dr for dr in self.scenario.drifts if i >= dr.start]

    def _min_distance(self, x: np.ndarray) -> float:
        """Smallest Mahalanobis distance of x (base coordinates) to any guarded component."""
        diff = x - self._guard_means
        z = np.einsum("kij,kj->ki", self._guard_prec_factors, diff)
        return float(np.sqrt(np.min(np.sum(z * z, axis=1))))

    def _far_point(self, rng: np.random.Generator, extra: float = 0.0) -> np.ndarray:
        """A point at Mahalanobis distance >= anomaly_distance + extra from every component."""
        sc = self.scenario
        lo = sc.anomaly_distance + extra
        x = None
        for attempt in range(1000):
            j = rng.choice(sc.k, p=self.weights)
            u = rng.standard_normal(sc.d)
            u /= np.linalg.norm(u) or 1.0
            r = rng.uniform(lo, lo + 4.0) * (1.0 + attempt / 50.0)
            x = self.means[j] + self.factors[j] @ (r * u)
            if self._min_distance(x) >= lo:
                return x
        return x  # pragma: no cover - only with absurd settings

    @lru_cache(maxsize=64)
    def cluster_center(self, c: int) -> np.ndarray:
        """Centre (base coordinates) of anomaly cluster number c; seeded by c alone."""
        rng = np.random.default_rng([self.scenario.seed, _TAG_CLUSTER, c])
        return self._far_point(rng, extra=1.0)

    # -- blocks ---------------------------------------------------------------------------
    def block(self, b: int) -> dict:
        """Arrays for records b*BLOCK .. (b+1)*BLOCK-1: X, is_anomaly, kind, component, cluster."""
        sc = self.scenario
        d, k = sc.d, sc.k
        idx = np.arange(b * BLOCK, (b + 1) * BLOCK)
        rng = np.random.default_rng([sc.seed, _TAG_BLOCK, b])
        comp = rng.choice(k, size=BLOCK, p=self.weights)
        z = rng.standard_normal((BLOCK, d))
        mu = self.means[comp].copy()
        dev = np.einsum("nij,nj->ni", self.factors[comp], z)
        for n, new_mu, new_f in self.new_components:
            dr = sc.drifts[n]
            u = rng.random(BLOCK)
            take = u < dr.weight * dr.progress(idx)
            comp[take] = k + [c[0] for c in self.new_components].index(n)
            mu[take] = new_mu
            dev[take] = z[take] @ new_f.T
        x = mu + dev * self.scale_factors(idx)
        u_anom = rng.random(BLOCK)
        u_kind = rng.random(BLOCK)
        is_anom = u_anom < sc.anomaly_rate
        is_cluster = is_anom & (u_kind < sc.cluster_fraction)
        cluster = np.full(BLOCK, -1)
        for i in np.flatnonzero(is_anom):
            if is_cluster[i]:
                c = int(idx[i] // self.cluster_window)
                cluster[i] = c
                x[i] = self.cluster_center(c) + self.cluster_spread * rng.standard_normal(d)
            else:
                x[i] = self._far_point(rng)
        x += self.offsets(idx)
        comp[is_anom] = -1
        kind = np.where(is_cluster, 2, np.where(is_anom, 1, 0))
        return {"index": idx, "X": x, "is_anomaly": is_anom, "kind": kind,
                "component": comp, "cluster": cluster}

    def arrays(self, count: int, start: int = 0) -> dict:
        """Arrays (as in block()) for records start .. start+count-1."""
        if count <= 0:
            return {k: v[:0] for k, v in self.block(0).items()}
        first, last = start // BLOCK, (start + count - 1) // BLOCK
        parts = [self.block(b) for b in range(first, last + 1)]
        lo = start - first * BLOCK
        return {key: np.concatenate([p[key] for p in parts])[lo:lo + count] for key in parts[0]}

    def blocks(self, start: int = 0, count: int | None = None) -> Iterator[dict]:
        """Successive array blocks from record `start`, `count` records in all (None: forever)."""
        b = start // BLOCK
        lo = start - b * BLOCK
        left = count
        while left is None or left > 0:
            blk = self.block(b)
            hi = BLOCK if left is None else min(BLOCK, lo + left)
            out = {key: v[lo:hi] for key, v in blk.items()}
            if left is not None:
                left -= hi - lo
            yield out
            b += 1
            lo = 0


_KIND_NAMES = ("normal", "point", "cluster")


def _set_path(obj: dict, path: str, value) -> None:
    """obj['a']['b'] = value for path 'a.b', creating nested objects."""
    parts = path.split(".")
    for p in parts[:-1]:
        obj = obj.setdefault(p, {})
    obj[parts[-1]] = value


def _events_from(gen: ScenarioGenerator, blocks: Iterable[dict], *, id_field: str | None,
                 timestamp_field: str | None, label_field: str | None,
                 decimals: int | None, clock) -> Iterator[Event]:
    """Turn array blocks into Event tuples (record dicts and label dicts)."""
    names = gen.scenario.feature_names
    scen_cache: dict[tuple, str] = {}
    for blk in blocks:
        X = blk["X"] if decimals is None else np.round(blk["X"], decimals)
        rows = X.tolist()
        for j, i in enumerate(blk["index"].tolist()):
            active = tuple(dr.spec for dr in gen.scenario.drifts if i >= dr.start)
            scenario = scen_cache.get(active)
            if scenario is None:
                scenario = scen_cache[active] = ";".join(active) or "stationary"
            kind = int(blk["kind"][j])
            label = {"index": i, "label": int(kind != 0), "kind": _KIND_NAMES[kind],
                     "component": int(blk["component"][j]),
                     "cluster": int(blk["cluster"][j]) if kind == 2 else None,
                     "scenario": scenario}
            rec: dict = {}
            if id_field:
                _set_path(rec, id_field, i)
            if timestamp_field:
                _set_path(rec, timestamp_field, clock(i))
            for name, v in zip(names, rows[j]):
                _set_path(rec, name, v)
            if label_field:
                _set_path(rec, label_field, {k: v for k, v in label.items() if k != "index"})
            yield Event(i, rec, label)


def generate(count: int | None = 10_000, *, scenario: Scenario | None = None, start: int = 0,
             id_field: str | None = "id", timestamp_field: str | None = "ts",
             label_field: str | None = None, decimals: int | None = 6,
             start_time: float | None = None, time_step: float = 0.001,
             **scenario_kwargs) -> Iterator[Event]:
    """Yield `count` Events (None: forever) from record index `start`.

    Scenario options (d, k, seed, anomaly_rate, drifts, feature_names, ...) are keyword args or
    a Scenario. Timestamps are the wall clock at generation unless `start_time` is given, then
    start_time + index * time_step (fully reproducible).
    """
    sc = scenario if scenario is not None else Scenario(**scenario_kwargs)
    gen = ScenarioGenerator(sc)
    if start_time is None:
        def clock(_i):
            return round(time.time(), 6)
    else:
        def clock(i):
            return round(start_time + i * time_step, 6)
    blocks = gen.blocks(start=start, count=count)
    yield from _events_from(gen, blocks, id_field=id_field, timestamp_field=timestamp_field,
                            label_field=label_field, decimals=decimals, clock=clock)


def generate_arrays(count: int, *, start: int = 0, scenario: Scenario | None = None,
                    **scenario_kwargs) -> tuple[np.ndarray, dict]:
    """(X (count, d), labels dict of arrays: index, is_anomaly, kind, component, cluster).

    The same values as generate() (before rounding) without building dicts: for benchmarks.
    """
    sc = scenario if scenario is not None else Scenario(**scenario_kwargs)
    arr = ScenarioGenerator(sc).arrays(count, start=start)
    X = arr.pop("X")
    return X, arr


class _Pacer:
    """Sleeps so that record i goes out no earlier than t0 + i/rate (rate <= 0: no pacing)."""

    def __init__(self, rate: float | None):
        self.rate = rate or 0.0
        self.t0 = time.monotonic()

    def wait(self, n_sent: int) -> bool:
        """Sleep until n_sent records are due; True if it slept (a good moment to flush)."""
        if self.rate <= 0:
            return False
        delay = self.t0 + n_sent / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            return True
        return False


def _pace_every(rate: float | None) -> int:
    """How many records to send between pacing checks (about 50 checks per second)."""
    if not rate or rate <= 0:
        return 1 << 30
    return max(1, int(rate / 50))


def write_jsonl(events: Iterable[Event], out: IO[str], *, labels: IO[str] | None = None,
                rate: float | None = None, stop: threading.Event | None = None) -> int:
    """Write events as JSON lines to `out` (labels to `labels`), paced at `rate`/s; return count."""
    pacer = _Pacer(rate)
    every = _pace_every(rate)
    n = 0
    for ev in events:
        if stop is not None and stop.is_set():
            break
        out.write(json.dumps(ev.record, separators=(",", ":")) + "\n")
        if labels is not None:
            labels.write(json.dumps(ev.label, separators=(",", ":")) + "\n")
        n += 1
        if n % every == 0 and pacer.wait(n):
            out.flush()
            if labels is not None:
                labels.flush()
    out.flush()
    if labels is not None:
        labels.flush()
    return n


def ensure_topic(bootstrap_servers, topic: str, partitions: int = 1,
                 replication_factor: int = 1, timeout_s: float = 30.0, **client_kw) -> bool:
    """Create `topic` if it does not exist; True if this call created it."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kw)
    try:
        if topic in set(admin.list_topics()):
            return False
        try:
            admin.create_topics([NewTopic(topic, partitions, replication_factor)])
        except TopicAlreadyExistsError:
            return False
        try:
            admin.wait_for_topics([topic], timeout_ms=int(timeout_s * 1000))
        except AttributeError:  # pragma: no cover - older kafka-python
            pass
        return True
    finally:
        admin.close()


def produce_kafka(events: Iterable[Event], bootstrap_servers, topic: str, *,
                  labels: IO[str] | None = None, rate: float | None = None,
                  key_field: str | None = None, producer_config: dict | None = None,
                  stop: threading.Event | None = None) -> int:
    """Send events to a Kafka topic (labels with partition/offset to `labels`); return count.

    Records are JSON values; the key is the record's `key_field` value when given. The call
    returns after every record is acknowledged (producer flushed).
    """
    from kafka import KafkaProducer

    cfg = {"acks": "all", "linger_ms": 20}
    cfg.update(producer_config or {})
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **cfg)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def on_ok(label, meta):
        if labels is not None:
            line = dict(label, topic=meta.topic, partition=meta.partition, offset=meta.offset)
            with lock:
                labels.write(json.dumps(line, separators=(",", ":")) + "\n")

    def on_err(exc):
        errors.append(exc)

    pacer = _Pacer(rate)
    every = _pace_every(rate)
    n = 0
    try:
        for ev in events:
            if stop is not None and stop.is_set():
                break
            if errors:
                raise errors[0]
            key = None
            if key_field:
                v: Any = ev.record
                for p in key_field.split("."):
                    v = v.get(p) if isinstance(v, dict) else None
                key = None if v is None else str(v).encode()
            value = json.dumps(ev.record, separators=(",", ":")).encode()
            fut = producer.send(topic, value=value, key=key)
            fut.add_callback(lambda meta, lab=ev.label: on_ok(lab, meta))
            fut.add_errback(on_err)
            n += 1
            if n % every == 0 and pacer.wait(n):
                producer.flush()
        producer.flush()
        if errors:
            raise errors[0]
    finally:
        producer.close(timeout=10)
        if labels is not None:
            with lock:
                labels.flush()
    return n


# -- CLI -------------------------------------------------------------------------------------

def _yaml_scalar(text: str):
    """Parse a -X value like YAML would ('5' -> 5, 'true' -> True, 'abc' -> 'abc')."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _drift_arg(text: str) -> Drift:
    """argparse type for --drift: a bad spec becomes a usage error (exit 2) naming the problem."""
    try:
        return parse_drift(text)
    except DriftSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `streamgmm generate` options to `parser` (and its help text on drift specs)."""
    if parser.description is None:
        parser.description = ("Write a synthetic, labelled JSON event stream (Gaussian mixture "
                              "+ planted anomalies + scheduled drift) to Kafka, a file or stdout.")
    parser.epilog = DRIFT_HELP if not parser.epilog else parser.epilog + "\n" + DRIFT_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter

    g = parser.add_argument_group("stream shape")
    g.add_argument("--count", "-n", type=int, default=100_000,
                   help="records to write; 0 = forever (default 100000)")
    g.add_argument("--start-index", type=int, default=0,
                   help="first record index (resume a stream; default 0)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--features", "-d", type=int, default=3, dest="d",
                   help="number of features d (default 3; ignored with --feature-names)")
    g.add_argument("--feature-names",
                   help="comma-separated field names, dotted paths make nested objects, e.g. "
                        "amount,latency_ms,sensor.temp (default f0..f{d-1})")
    g.add_argument("--components", "-k", type=int, default=3, dest="k",
                   help="mixture components k (default 3)")
    g.add_argument("--separation", type=float, default=6.0,
                   help="min distance between component means, in component std units (default 6)")
    g.add_argument("--anomaly-rate", type=float, default=0.01,
                   help="fraction of planted anomalies (default 0.01)")
    g.add_argument("--cluster-fraction", type=float, default=0.3,
                   help="share of anomalies in small tight clusters, the rest isolated (default 0.3)")
    g.add_argument("--cluster-size", type=float, default=8.0,
                   help="expected members per anomaly cluster (default 8)")
    g.add_argument("--anomaly-distance", type=float, default=6.0,
                   help="min Mahalanobis distance of anomalies from every component (default 6)")
    g.add_argument("--drift", action="append", type=_drift_arg, default=[], metavar="SPEC",
                   help="scheduled drift, repeatable; see 'drift spec' below")

    g = parser.add_argument_group("record fields")
    g.add_argument("--id-field", default="id",
                   help="field holding the record index ('' for none; default id)")
    g.add_argument("--timestamp-field", default="ts",
                   help="field holding the epoch-seconds timestamp ('' for none; default ts)")
    g.add_argument("--start-time", type=float, default=None,
                   help="fixed timestamps start_time + index*time_step instead of the wall clock")
    g.add_argument("--time-step", type=float, default=0.001,
                   help="seconds between records with --start-time (default 0.001)")
    g.add_argument("--decimals", type=int, default=6, help="round values (default 6; -1: no)")
    g.add_argument("--label-field", default=None,
                   help="put the ground-truth label object in this field (e.g. _label); the "
                        "daemon ignores fields it is not configured to read")
    g.add_argument("--labels", metavar="FILE", default=None,
                   help="write ground truth as JSON lines to FILE")

    g = parser.add_argument_group("output")
    g.add_argument("--output", "-o", default=None,
                   help="JSON-lines file, '-' for stdout (the default when no --topic)")
    g.add_argument("--append", action="store_true", help="append to --output/--labels files")
    g.add_argument("--rate", type=float, default=0.0,
                   help="records per second; 0 = as fast as possible (default)")
    g.add_argument("--bootstrap-servers", default=None,
                   help="Kafka bootstrap servers, comma separated (Kafka output with --topic)")
    g.add_argument("--topic", default=None, help="Kafka topic to write to")
    g.add_argument("--partitions", type=int, default=1,
                   help="partitions when the topic is created (default 1)")
    g.add_argument("--replication-factor", type=int, default=1,
                   help="replication factor when the topic is created (default 1)")
    g.add_argument("--no-create-topic", action="store_true",
                   help="do not create the topic when it is missing")
    g.add_argument("--key-field", default=None,
                   help="use this record field's value as the Kafka message key")
    g.add_argument("-X", "--producer-config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra kafka-python KafkaProducer option, repeatable (e.g. -X acks=1)")


def _scenario_from_args(args) -> Scenario:
    """The Scenario described by parsed CLI options."""
    names = None
    if getattr(args, "feature_names", None):
        names = tuple(n.strip() for n in args.feature_names.split(",") if n.strip())
    return Scenario(d=args.d, k=args.k, seed=args.seed, anomaly_rate=args.anomaly_rate,
                    cluster_fraction=args.cluster_fraction, cluster_size=args.cluster_size,
                    anomaly_distance=args.anomaly_distance, separation=args.separation,
                    drifts=tuple(args.drift), feature_names=names)


def main(args: argparse.Namespace) -> int:
    """Run `streamgmm generate` with parsed args; 0 on success, 2 on bad options, 1 on I/O error."""
    try:
        scenario = _scenario_from_args(args)
    except (ValueError, DriftSpecError) as exc:
        print(f"streamgmm generate: {exc}", file=sys.stderr)
        return 2
    if args.topic and args.output:
        print("streamgmm generate: use either --topic (Kafka) or --output (file), not both",
              file=sys.stderr)
        return 2
    if args.topic and not args.bootstrap_servers:
        print("streamgmm generate: --topic needs --bootstrap-servers", file=sys.stderr)
        return 2
    producer_config = {}
    for item in args.producer_config:
        if "=" not in item:
            print(f"streamgmm generate: -X {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        key, value = item.split("=", 1)
        producer_config[key.strip()] = _yaml_scalar(value)
    count = None if args.count == 0 else args.count
    if count is not None and count < 0:
        print("streamgmm generate: --count must be >= 0", file=sys.stderr)
        return 2
    events = generate(count, scenario=scenario, start=args.start_index,
                      id_field=args.id_field or None, timestamp_field=args.timestamp_field or None,
                      label_field=args.label_field, decimals=None if args.decimals < 0 else args.decimals,
                      start_time=args.start_time, time_step=args.time_step)
    mode = "a" if args.append else "w"
    # SIGTERM (docker stop) ends the stream cleanly: stop producing, flush, close.
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    labels = open(args.labels, mode, encoding="utf-8") if args.labels else None
    try:
        if args.topic:
            servers = [s.strip() for s in args.bootstrap_servers.split(",") if s.strip()]
            if not args.no_create_topic:
                ensure_topic(servers, args.topic, args.partitions, args.replication_factor)
            n = produce_kafka(events, servers, args.topic, labels=labels, rate=args.rate,
                              key_field=args.key_field, producer_config=producer_config,
                              stop=stop)
            where = f"topic {args.topic}"
        elif args.output in (None, "-"):
            n = write_jsonl(events, sys.stdout, labels=labels, rate=args.rate, stop=stop)
            where = "stdout"
        else:
            with open(args.output, mode, encoding="utf-8") as out:
                n = write_jsonl(events, out, labels=labels, rate=args.rate, stop=stop)
            where = args.output
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - report I/O or Kafka failures as one line
        print(f"streamgmm generate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if labels is not None:
            labels.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"streamgmm generate: wrote {n} records to {where}", file=sys.stderr)
    return 0


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamgmm generate")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_cli())
