"""Regenerate demo.jsonl, the no-Kafka demo stream (``python3 streamgmm/data/make_demo.py``).

6,000 JSON lines: events of a 3-component Gaussian mixture over ``amount``, ``latency_ms`` and
the nested ``sensor.temp``, with 60 planted anomalies (1%) far from every component and 5
malformed lines (one per dead-letter reason the demo can show). Deterministic (fixed seed).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

N_LINES = 6000
N_ANOMALIES = 60
SEED = 20240501
T0 = 1_714_521_600  # 2024-05-01T00:00:00Z

# (weight, mean [amount, latency_ms, sensor.temp], std, correlation amount~latency)
COMPONENTS = [
    (0.5, [50.0, 120.0, 21.0], [12.0, 15.0, 0.8], 0.6),
    (0.3, [220.0, 80.0, 24.5], [30.0, 10.0, 0.6], -0.4),
    (0.2, [25.0, 320.0, 18.0], [6.0, 35.0, 1.0], 0.3),
]

# Malformed lines placed at fixed positions: (line index, text).
MALFORMED = [
    (2400, '{"id": "evt-bad-1", "amount": 12.5, "latency_ms": 90'),         # invalid_json
    (3100, '["evt-bad-2", 12.5, 90.0, 21.0]'),                               # not_object
    (3800, '{"id": "evt-bad-3", "amount": 40.0, "sensor": {"temp": 21.2}}'),  # missing_field
    (4500, '{"id": "evt-bad-4", "amount": "41.5", "latency_ms": 118.0, '
           '"sensor": {"temp": 20.9}}'),                                     # non_numeric
    (5200, '{"id": "evt-bad-5", "amount": 39.0, "latency_ms": 121.0, '
           '"sensor": {"temp": NaN}}'),                                      # non_finite
]


def generate(seed: int = SEED) -> tuple[list[str], np.ndarray]:
    """The demo lines and the line indices of the planted anomalies."""
    rng = np.random.default_rng(seed)
    bad_pos = {i for i, _ in MALFORMED}
    n_good = N_LINES - len(MALFORMED)
    weights = np.array([c[0] for c in COMPONENTS])
    comp = rng.choice(len(COMPONENTS), size=n_good, p=weights)
    X = np.empty((n_good, 3))
    for k, (_, mean, std, rho) in enumerate(COMPONENTS):
        idx = np.flatnonzero(comp == k)
        cov = np.diag(np.square(std))
        cov[0, 1] = cov[1, 0] = rho * std[0] * std[1]
        X[idx] = rng.multivariate_normal(mean, cov, size=idx.size)
    X[:, 0] = np.abs(X[:, 0])
    X[:, 1] = np.abs(X[:, 1])

    # Planted anomalies: far out on one or two features (>= 8 standard deviations).
    anomalous = np.sort(rng.choice(n_good, size=N_ANOMALIES, replace=False))
    for j, r in enumerate(anomalous):
        kind = j % 4
        if kind == 0:
            X[r, 0] = rng.uniform(900.0, 2500.0)          # huge amount
        elif kind == 1:
            X[r, 1] = rng.uniform(1500.0, 4000.0)         # latency spike
        elif kind == 2:
            X[r, 2] = rng.uniform(38.0, 55.0)             # overheating sensor
        else:
            X[r, 0] = rng.uniform(450.0, 700.0)           # mixed: large amount, slow, cold
            X[r, 1] = rng.uniform(600.0, 900.0)
            X[r, 2] = rng.uniform(5.0, 10.0)

    lines: list[str] = []
    anomaly_lines = []
    g = 0
    anomalous_set = set(anomalous.tolist())
    malformed = dict(MALFORMED)
    for i in range(N_LINES):
        if i in bad_pos:
            lines.append(malformed[i])
            continue
        amount, latency, temp = (round(float(v), 2) for v in X[g])
        rec = {
            "id": f"evt-{i:05d}",
            "ts": T0 + i // 2,
            "amount": amount,
            "latency_ms": latency,
            "sensor": {"id": f"s-{int(comp[g]) + 1}", "temp": temp},
        }
        if g in anomalous_set:
            anomaly_lines.append(i)
        lines.append(json.dumps(rec, separators=(", ", ": ")))
        g += 1
    return lines, np.asarray(anomaly_lines)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("demo.jsonl")
    lines, _ = generate()
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} lines to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
