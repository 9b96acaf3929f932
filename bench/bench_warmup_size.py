"""Flag rate and ranking against the warm-up's size, in multiples of the feature count d.

    python bench/bench_warmup_size.py --data DIR [--only NAME[,NAME]] [--mults 2,4,8,16]

For each labelled set (``X``, ``y`` in DIR/*.npz) and each multiple m: three shuffles (seeds
0-2); the default ``Detector`` warms up on the first max(16, m d) records, then scores the next
2,000 in batches of 250 before learning from them. Printed: the share of normal records
flagged at p = 1% (overall and in the first 200) and ROC-AUC. This is the evidence behind
``detection/sizing.py``'s minimum for the auto ensemble (4 d, and 100 / percentile).
"""
import argparse
import glob
import os
import warnings

import numpy as np

STREAM = 2000
BATCH = 250


def run(X0, y0, n, seed):
    from sklearn.metrics import roc_auc_score

    from streamgmm import Detector
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(X0))
    X, y = X0[p], y0[p]
    end = min(len(X), n + STREAM)
    det = Detector({"warmup_records": n}, background_refit=False)
    try:
        det.process(X[:n])
        out = [det.process(X[i:i + BATCH]) for i in range(n, end, BATCH)]
    finally:
        det.close()
    s = np.concatenate([r.scores for r in out])
    f = np.concatenate([r.is_anomaly for r in out])
    yy = y[n:end]
    return (100 * f[yy == 0].mean(), 100 * f[:200][yy[:200] == 0].mean(),
            roc_auc_score(yy, -s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--only")
    ap.add_argument("--mults", default="2,4,8,16")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    paths = sorted(glob.glob(os.path.join(a.data, "*.npz")))
    if a.only:
        paths = [q for q in paths if any(s in os.path.basename(q) for s in a.only.split(","))]
    print(f"{'dataset':20s} {'d':>3s} {'warm-up':>8s}  flagged% normals (max)  first 200  ROC-AUC")
    for path in paths:
        with np.load(path) as z:
            X0, y0 = z["X"].astype(np.float64), np.asarray(z["y"]).astype(int).ravel()
        d = X0.shape[1]
        for m in (float(v) for v in a.mults.split(",")):
            n = int(max(16, m * d))
            if n + 500 > len(X0):
                continue
            res = np.array([run(X0, y0, n, seed) for seed in range(3)])
            print(f"{os.path.basename(path)[:-4]:20s} {d:3d} {n:5d} ={m:g}d  "
                  f"{res[:, 0].mean():6.2f} ({res[:, 0].max():5.2f})         "
                  f"{res[:, 1].mean():6.1f}    {res[:, 2].mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
