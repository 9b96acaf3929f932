"""Benchmark: OnlineGaussianMixture.partial_fit throughput vs score_samples, and vs a naive peer.

Run:  python3 bench/bench_online.py                    (d=8, k=8, full, mini-batches of 512)
      python3 bench/bench_online.py --cov diag --k 4 --json

All timings are taken in the same process, interleaved round by round (partial_fit, then
score_samples on the same mini-batches, then the peer), and the median round is reported, so a
busy machine slows every contender alike. Measured:

* ``partial_fit``: one online-EM step per mini-batch (E-step + statistics + blend + parameters).
* ``score_samples``: the same model scoring the same mini-batches one call per batch (the hot
  path of the detector), and once more as one big array (bulk, for reference).
* the naive peer: scikit-learn ``GaussianMixture(warm_start=True, max_iter=1)`` refitted on each
  mini-batch (one EM iteration from the previous parameters, the usual "online" workaround).

It also prints the held-out average log-likelihood after streaming the data through each
learner (the peer: after its ``--peer-batches``; one EM step per batch means it only remembers
the last few anyway), next to the initial fit and a batch fit on all the data: throughput
without quality means little.

BLAS threading matters on small machines: set OPENBLAS_NUM_THREADS=1 to measure without
OpenBLAS's thread start-up on tiny matrices (scikit-learn's per-component triangular solves
suffer most from it). The thread setting and load average are printed with the results.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

from streamgmm import GaussianMixture, OnlineGaussianMixture


def make_data(n, d, k, seed=0):
    """Records from a random, well-separated k-component mixture in d dimensions."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * 3.0
    weights = rng.dirichlet(np.full(k, 5.0))
    A = rng.normal(size=(k, d, d)) / np.sqrt(d)
    L = np.linalg.cholesky(np.einsum("kij,klj->kil", A, A) + 0.3 * np.eye(d))
    comp = rng.choice(k, size=n, p=weights)
    z = rng.standard_normal((n, d))
    return means[comp] + np.einsum("nij,nj->ni", L[comp], z)


def timed(fn):
    """(wall seconds, CPU seconds of this process) for one call of fn."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--cov", default="full", choices=["full", "tied", "diag", "spherical"])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--batches", type=int, default=1000, help="mini-batches per round")
    ap.add_argument("--peer-batches", type=int, default=150,
                    help="mini-batches per round for the (slow) scikit-learn peer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fit-records", type=int, default=10_000)
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    args = ap.parse_args(argv)

    from sklearn.mixture import GaussianMixture as SkGaussianMixture
    import sklearn

    d, k, B, nb = args.d, args.k, args.batch, args.batches
    n_stream = nb * B
    X = make_data(args.fit_records + n_stream + 50_000, d, k)
    X_fit = X[:args.fit_records]
    stream = X[args.fit_records:args.fit_records + n_stream]
    held_out = X[-50_000:]
    batches = [stream[i:i + B] for i in range(0, n_stream, B)]
    peer_batches = batches[:args.peer_batches]

    base = OnlineGaussianMixture(k, covariance_type=args.cov, random_state=0).fit(X_fit)
    state = base.get_state()
    sk = SkGaussianMixture(k, covariance_type=args.cov, warm_start=True, max_iter=1,
                           random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X_fit)
    sk_init = (sk.weights_.copy(), sk.means_.copy(), sk.covariances_.copy(),
               sk.precisions_cholesky_.copy(), sk.precisions_.copy())

    names = ("partial_fit", "score_batches", "score_bulk", "sklearn_warm")
    rates = {key: [] for key in names}
    cpu_rates = {key: [] for key in names}

    def record(key, n, times):
        rates[key].append(n / times[0])
        cpu_rates[key].append(n / times[1])

    for _ in range(args.rounds):
        model = OnlineGaussianMixture.from_state(state)

        def learn():
            for b in batches:
                model.partial_fit(b)
        record("partial_fit", n_stream, timed(learn))

        scorer = OnlineGaussianMixture.from_state(state)

        def score():
            for b in batches:
                scorer.score_samples(b)
        record("score_batches", n_stream, timed(score))
        record("score_bulk", n_stream, timed(lambda: scorer.score_samples(stream)))

        (sk.weights_, sk.means_, sk.covariances_, sk.precisions_cholesky_,
         sk.precisions_) = (a.copy() for a in sk_init)

        def peer():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for b in peer_batches:
                    sk.fit(b)
        record("sklearn_warm", len(peer_batches) * B, timed(peer))

    med = {key: statistics.median(v) for key, v in rates.items()}
    cpu = {key: statistics.median(v) for key, v in cpu_rates.items()}

    # Quality after streaming everything through each learner.
    online = OnlineGaussianMixture.from_state(state)
    for b in batches:
        online.partial_fit(b)
    # (the peer's state after its last timed round: it only remembers the last few batches)
    full_batch = GaussianMixture(k, covariance_type=args.cov, random_state=0).fit(
        np.vstack([X_fit, stream]))
    quality = {"online": online.score(held_out), "sklearn_warm": float(sk.score(held_out)),
               "initial_fit": base.score(held_out), "batch_all": full_batch.score(held_out)}

    res = {
        "config": {"d": d, "k": k, "covariance_type": args.cov, "batch": B,
                   "records_per_round": n_stream, "rounds": args.rounds,
                   "fit_records": args.fit_records},
        "records_per_s": {key: round(v) for key, v in med.items()},
        "records_per_cpu_s": {key: round(v) for key, v in cpu.items()},
        "ratio_partial_fit_to_score_batches": med["partial_fit"] / med["score_batches"],
        "ratio_partial_fit_to_score_bulk": med["partial_fit"] / med["score_bulk"],
        "speedup_vs_sklearn_warm_start": med["partial_fit"] / med["sklearn_warm"],
        "heldout_avg_loglik": quality,
        "env": {"python": platform.python_version(), "numpy": np.__version__,
                "sklearn": sklearn.__version__, "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                "load_avg_1min": os.getloadavg()[0]},
    }
    us = 1e6 * B
    env = res["env"]
    print(f"OnlineGaussianMixture benchmark: d={d}, k={k}, {args.cov}, mini-batch {B}, "
          f"{n_stream:,} records/round, median of {args.rounds} interleaved rounds "
          f"({env['cpus']} CPUs, load {env['load_avg_1min']:.1f}, "
          f"OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']})")
    print(f"  {'':34}{'records/s (wall)':>18}{'us/batch':>10}{'records/CPU-s':>16}")
    labels = {"partial_fit": "partial_fit",
              "score_batches": "score_samples (per mini-batch)",
              "score_bulk": "score_samples (one bulk array)",
              "sklearn_warm": "sklearn warm_start, max_iter=1"}
    for key in names:
        print(f"  {labels[key]:34}{med[key]:>18,.0f}{us / med[key]:>10.1f}{cpu[key]:>16,.0f}")
    print(f"  partial_fit / score_samples throughput: "
          f"{res['ratio_partial_fit_to_score_batches']:.2f} (per mini-batch), "
          f"{res['ratio_partial_fit_to_score_bulk']:.2f} (bulk)")
    print(f"  partial_fit vs sklearn warm-start refit: "
          f"{res['speedup_vs_sklearn_warm_start']:.1f}x the throughput")
    print("  held-out avg log-likelihood after the stream: " + ", ".join(
        f"{key} {v:.4f}" for key, v in quality.items()))
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
