"""Detector benchmarks: process() throughput, drift false alarms and detection delays.

    python bench/bench_detector.py [--quick]

Throughput: ``Detector.process`` on batches of 1,000 (d=8, k=8, full covariances: scale,
score, decide, learn, threshold, drift; then the defaults, whose model is the auto ensemble) against scikit-learn's ``GaussianMixture.score_samples``
alone on the same batches (scoring only: the peer does a fraction of the work). False alarms:
stationary records from a d=8, k=4 mixture on the default settings. Delays: records from an
abrupt change to its drift event (1 sigma mean shift in one feature, doubled variance, a new
component with 20% weight).
"""
import argparse
import time

import numpy as np

from streamgmm import Detector


class Mixture:
    def __init__(self, d, k, seed):
        self.rng = np.random.default_rng(seed)
        self.d, self.k = d, k
        self.means = self.rng.normal(0, 3, (k, d))
        self.A = self.rng.normal(0, 1, (k, d, d)) * 0.3 + np.eye(d)

    def draw(self, n, var=1.0, shift=None, new=None):
        c = self.rng.integers(0, self.k, n)
        X = self.means[c] + np.einsum("nij,nj->ni", self.A[c],
                                      self.rng.normal(size=(n, self.d)) * np.sqrt(var))
        if shift is not None:
            X += shift
        if new is not None:
            m = self.rng.random(n) < 0.2
            X[m] = self.rng.normal(size=(m.sum(), self.d)) + new
        return X


def throughput(n_batches, repeats=3, config=None, label="d=8 k=8 full"):
    from sklearn.mixture import GaussianMixture as SkGMM
    mix = Mixture(8, 8, seed=0)
    batches = [mix.draw(1000) for _ in range(n_batches)]
    det = Detector({"n_components": 8} if config is None else config, background_refit=False)
    det.process(mix.draw(2000))
    sk = SkGMM(8, random_state=0).fit(det.scaler_.transform(mix.draw(5000)))
    best_ours = best_sk = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for X in batches:
            det.process(X)
        best_ours = min(best_ours, time.perf_counter() - t)
        t = time.perf_counter()
        for X in batches:
            sk.score_samples(X)
        best_sk = min(best_sk, time.perf_counter() - t)
    n = 1000 * n_batches
    ours, peer = n / best_ours, n / best_sk
    print(f"process() {label}, batches of 1000: {ours:,.0f} records/s; "
          f"sklearn score_samples alone: {peer:,.0f} records/s; ratio {ours / peer:.2f}")


def false_alarms(n_records, seeds):
    for seed in seeds:
        mix = Mixture(8, 4, seed=seed)
        det = Detector({"n_components": 4, "random_state": seed}, background_refit=False)
        det.process(mix.draw(2000))
        t = time.perf_counter()
        for _ in range(n_records // 1000):
            det.process(mix.draw(1000))
        flagged = det.counters["anomalies"] / det.counters["records"]
        print(f"stationary d=8 k=4 seed={seed}: {det.counters['drift_events']} drift events in "
              f"{n_records:,} records; flagged {100 * flagged:.3f}% (p=1%); "
              f"{time.perf_counter() - t:.1f}s")


def delays(seeds):
    for change in ("mean shift 1 sigma (feature 0)", "doubled variance",
                   "new component, 20% weight"):
        found = []
        for seed in seeds:
            mix = Mixture(8, 4, seed=100 + seed)
            sd0 = mix.draw(50000)[:, 0].std()
            det = Detector({"n_components": 4}, background_refit=False)
            det.process(mix.draw(2000))
            for _ in range(20):
                det.process(mix.draw(1000))
            start = det.counters["records"]
            kw = {"mean": {"shift": np.eye(8)[0] * sd0}, "doubled": {"var": 2.0},
                  "new": {"new": mix.means.mean(axis=0) + 5.0}}[change.split()[0]]
            delay = None
            for _ in range(100):
                res = det.process(mix.draw(20, **kw))
                hits = [e for e in res.events if e.kind == "drift"]
                if hits:
                    delay = (hits[0].detail["record"] - start, hits[0].detector)
                    break
            found.append(delay)
        print(f"{change}: delays (records, detector) = {found}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer records (smoke run)")
    a = ap.parse_args()
    throughput(50 if a.quick else 300)
    throughput(50 if a.quick else 300, config={},
               label="d=8 defaults (auto: ensemble of 6 mixtures)")
    delays(range(3 if a.quick else 5))
    false_alarms(100_000 if a.quick else 1_000_000, [0] if a.quick else [0, 1, 2])


if __name__ == "__main__":
    main()
