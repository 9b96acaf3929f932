"""p means p on the scenario generator's stationary streams (issue 9, point 2).

    PYTHONPATH=. python3 bench/bench_generator_streams.py [--records 40000] [--seeds 8] [--d 3]

The generator's streams are mixtures of well-separated clusters of unequal weight: a shape the
policy bench's streams do not have, where one-component members and a minor mode interact.
Per seed, in calls of 250 (no anomalies planted, p = 1%): the flagged fraction over p in every
10,000-record window (and the range over 1,000-record windows, where binomial noise alone
spans about 0.2-2.1), and drift events; beside the same detector with online learning off
(the fit frozen: the reference for what the threshold alone gives).
"""
from __future__ import annotations

import argparse

import numpy as np

from streamgmm import Detector
from streamgmm.tools.generator import generate_arrays


def run(X, cfg):
    det = Detector(cfg, background_refit=False)
    flags = np.concatenate([det.process(X[i:i + 250]).is_anomaly
                            for i in range(0, len(X), 250)])
    drifts = det.counters["drift_events"]
    det.close()
    w10 = flags[: len(flags) // 10_000 * 10_000].reshape(-1, 10_000).mean(axis=1) / 0.01
    w1 = flags[: len(flags) // 1000 * 1000].reshape(-1, 1000).mean(axis=1) / 0.01
    return w10, w1, drifts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--d", type=int, default=3)
    args = ap.parse_args(argv)
    worst = {"defaults": [], "frozen": []}
    for seed in range(args.seeds):
        X, _ = generate_arrays(args.records, seed=seed, d=args.d, anomaly_rate=0.0)
        for name, cfg in (("defaults", {}), ("frozen", {"online": {"enabled": False}})):
            w10, w1, drifts = run(X, cfg)
            worst[name] += [w10.min(), w10.max()]
            print(f"seed {seed} {name:8s}: flagged/p per 10k {np.round(w10, 2)}; per 1k "
                  f"{w1.min():.2f}-{w1.max():.2f}; drift events {drifts}", flush=True)
    for name, v in worst.items():
        print(f"{name}: every 10k window within {min(v):.2f}-{max(v):.2f} p")


if __name__ == "__main__":
    main()
