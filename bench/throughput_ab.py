"""Detector.process throughput of several checkouts, measured alternately in one session.

    git archive main | tar -x -C /tmp/base      # e.g. the baseline
    python3 bench/throughput_ab.py /tmp/base . [--rounds 3] [--batches 300]

Each round runs every checkout in a process of its own (PYTHONPATH=checkout) through the loop
of bench_detector.py's throughput line (d=8, batches of 1,000, best of 3 passes) for
{"n_components": 8} and for the defaults, timing wall and CPU (``time.process_time``). Then
the best of the rounds per checkout. Taking turns spreads a shared machine's load over all.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {"k=8": {"n_components": 8}, "defaults": {}}


def measure(n_batches, repeats=3):
    """{config: (records/s wall, records/s CPU)} of the imported streamgmm's process()."""
    import numpy as np

    from bench_detector import Mixture
    from streamgmm import Detector
    out = {}
    for name, cfg in CONFIGS.items():
        mix = Mixture(8, 8, seed=0)
        batches = [mix.draw(1000) for _ in range(n_batches)]
        det = Detector(cfg, background_refit=False)
        det.process(mix.draw(2000))
        wall = cpu = np.inf
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            for X in batches:
                det.process(X)
            wall = min(wall, time.perf_counter() - t)
            cpu = min(cpu, time.process_time() - c)
        out[name] = (1000 * n_batches / wall, 1000 * n_batches / cpu)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkouts", nargs="+", help="directories holding a streamgmm package")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import streamgmm
        where = os.path.abspath(a.checkouts[0])
        if not os.path.abspath(streamgmm.__file__).startswith(where + os.sep):
            sys.exit(f"streamgmm imported from {streamgmm.__file__}, not from {where}")
        print(json.dumps(measure(a.batches)))
        return
    best = {d: {c: (0.0, 0.0) for c in CONFIGS} for d in a.checkouts}
    for r in range(a.rounds):
        for d in a.checkouts:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(d))
            res = json.loads(subprocess.run(
                [sys.executable, os.path.abspath(__file__), d, "--child", "--batches",
                 str(a.batches)], env=env, check=True, capture_output=True, text=True).stdout)
            for c, (w, p) in res.items():
                print(f"round {r + 1} {d}: {c:8s} wall {w:9,.0f}  CPU {p:9,.0f} records/s",
                      flush=True)
                best[d][c] = (max(best[d][c][0], w), max(best[d][c][1], p))
    print("best of the rounds:")
    for d in a.checkouts:
        print(f"  {d}: " + "; ".join(f"{c} wall {w:,.0f} CPU {p:,.0f}"
                                    for c, (w, p) in best[d].items()))


if __name__ == "__main__":
    main()
