"""streamgmm.GaussianMixture against scikit-learn's GaussianMixture: same run, same data.

    python3 bench/bench_gmm.py                 # full run (a few minutes on 2 cores)
    python3 bench/bench_gmm.py --quick         # fewer repeats, smaller memory test (~2 min)

For N=200,000 rows and (d, k) in (4, 3), (8, 8), (32, 8), every covariance type:

* ``score_samples`` throughput (rows/s) of both libraries on the *same parameters* (a short
  scikit-learn fit copied into a streamgmm model), and the largest difference of the scores;
* ``fit`` time for the same initialisation and the same number of EM iterations
  (``init_params='random_from_data'``, ``random_state=0``, ``tol=0``, ``max_iter=--iters``),
  with the agreement of the fitted means and lower bound;
* the peak extra memory of ``score_samples`` on 5,000,000 rows (d=8, k=8, 'full'), measured
  with ``tracemalloc`` (numpy reports its buffers to it) as the traced peak during the call
  minus the returned array, for both libraries.

The machine is shared and noisy: each timing is the best of ``--repeats`` runs, the two
libraries alternating within every repeat so that both see the same conditions.
"""
import argparse
import datetime
import os
import platform
import sys
import time
import tracemalloc
import warnings

import numpy as np

import streamgmm
from streamgmm import GaussianMixture

try:
    import sklearn
    from sklearn.mixture import GaussianMixture as SKGaussianMixture
except ImportError:  # pragma: no cover
    sys.exit("the benchmark needs scikit-learn (pip install -e '.[dev]')")

SHAPES = ((4, 3), (8, 8), (32, 8))
COV_TYPES = ("full", "tied", "diag", "spherical")


def make_data(n, d, k, seed=0):
    """n rows from a random mixture of k full-covariance Gaussians in d dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(k, size=n)
    A = rng.normal(size=(k, d, d)) / np.sqrt(d) + np.eye(d)
    Z = rng.normal(size=(n, d))
    return centers[labels] + np.einsum("nd,nde->ne", Z, A[labels])


def copy_params(ref):
    model = GaussianMixture(ref.n_components, covariance_type=ref.covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(model, name, getattr(ref, name))
    return model


def best_of(repeats, *fns):
    """Best wall time of each function, alternating them within every repeat."""
    best = [np.inf] * len(fns)
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, results


def bench_scoring(X, d, k, ct, repeats):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SKGaussianMixture(k, covariance_type=ct, max_iter=5, init_params="random_from_data",
                                random_state=0).fit(X[:20000])
    ours = copy_params(ref)
    (t_ours, t_sk), (s_ours, s_sk) = best_of(repeats, lambda: ours.score_samples(X),
                                             lambda: ref.score_samples(X))
    diff = float(np.max(np.abs(s_ours - s_sk)))
    n = X.shape[0]
    return {"ours_rows_s": n / t_ours, "sk_rows_s": n / t_sk, "ratio": t_sk / t_ours,
            "max_abs_diff": diff}


def bench_fit(X, k, ct, iters, repeats):
    params = {"n_components": k, "covariance_type": ct, "tol": 0.0, "max_iter": iters,
              "init_params": "random_from_data", "random_state": 0}

    def ours():
        return GaussianMixture(**params).fit(X)

    def sk():
        return SKGaussianMixture(**params).fit(X)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never "converges": both warn, by design
        (t_ours, t_sk), (m_ours, m_sk) = best_of(repeats, ours, sk)
    assert m_ours.n_iter_ == m_sk.n_iter_ == iters
    scale = np.abs(m_sk.means_).max()
    return {"ours_s": t_ours, "sk_s": t_sk, "ratio": t_sk / t_ours,
            "means_rel_diff": float(np.max(np.abs(m_ours.means_ - m_sk.means_)) / scale),
            "lower_bound_diff": abs(m_ours.lower_bound_ - m_sk.lower_bound_)}


def traced_peak(fn):
    """(result, peak traced bytes during fn) with tracemalloc."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def bench_memory(n_rows):
    d, k = 8, 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SKGaussianMixture(k, max_iter=5, init_params="random_from_data",
                                random_state=0).fit(make_data(20000, d, k, seed=1))
    ours = copy_params(ref)
    X = make_data(n_rows, d, k, seed=2)
    out = {}
    for name, model in (("streamgmm", ours), ("scikit-learn", ref)):
        scores, peak = traced_peak(lambda: model.score_samples(X))
        out[name] = {"peak_bytes": peak, "extra_bytes": peak - scores.nbytes}
        del scores
    out["input_bytes"] = X.nbytes
    out["output_bytes"] = 8 * n_rows
    return out


def mib(b):
    return b / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--iters", type=int, default=10, help="EM iterations per fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-rows", type=int, default=5_000_000)
    parser.add_argument("--quick", action="store_true",
                        help="2 fit repeats, 6 scoring repeats, 1M rows for the memory test")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.memory_rows = 2, 1_000_000
    score_repeats = max(5, 3 * args.repeats)  # scoring is cheap: more repeats, less noise

    print(f"# streamgmm {streamgmm.__version__} vs scikit-learn {sklearn.__version__}; "
          f"numpy {np.__version__}; python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs; {datetime.date.today().isoformat()}")
    print(f"# N={args.rows:,} rows; fit: init_params='random_from_data', random_state=0, tol=0, "
          f"max_iter={args.iters}; best of {args.repeats} (fit) / {score_repeats} (score)")
    print()
    print("| d | k | covariance | score_samples streamgmm (rows/s) | scikit-learn (rows/s) "
          "| score ratio | fit streamgmm (s) | fit scikit-learn (s) | fit ratio "
          "| max abs score diff | means rel diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for d, k in SHAPES:
        X = make_data(args.rows, d, k)
        for ct in COV_TYPES:
            s = bench_scoring(X, d, k, ct, score_repeats)
            f = bench_fit(X, k, ct, args.iters, args.repeats)
            rows.append((d, k, ct, s, f))
            print(f"| {d} | {k} | {ct} | {s['ours_rows_s'] / 1e6:.2f} M | "
                  f"{s['sk_rows_s'] / 1e6:.2f} M | **{s['ratio']:.2f}x** | {f['ours_s']:.3f} | "
                  f"{f['sk_s']:.3f} | **{f['ratio']:.2f}x** | {s['max_abs_diff']:.1e} | "
                  f"{f['means_rel_diff']:.1e} |", flush=True)
    score_ratios = [r[3]["ratio"] for r in rows]
    fit_ratios = [r[4]["ratio"] for r in rows]
    print()
    print(f"score ratio: min {min(score_ratios):.2f}x, geometric mean "
          f"{np.exp(np.mean(np.log(score_ratios))):.2f}x; fit ratio: min {min(fit_ratios):.2f}x, "
          f"geometric mean {np.exp(np.mean(np.log(fit_ratios))):.2f}x")
    print()
    mem = bench_memory(args.memory_rows)
    print(f"score_samples on {args.memory_rows:,} rows (d=8, k=8, full; input "
          f"{mib(mem['input_bytes']):.0f} MiB, output {mib(mem['output_bytes']):.0f} MiB), "
          "tracemalloc peak during the call:")
    for name in ("streamgmm", "scikit-learn"):
        m = mem[name]
        print(f"  {name:12s} peak {mib(m['peak_bytes']):8.1f} MiB  "
              f"extra beyond the output {mib(m['extra_bytes']):8.1f} MiB")
    return rows, mem


if __name__ == "__main__":
    main()
