"""Write scikit-learn's bundled labelled sets as ``.npz`` files for ``bench_quality.py``.

    python bench/make_sklearn_sets.py OUT_DIR
    python bench/bench_quality.py --data OUT_DIR

Real data that is not in ADBench's folder (the product is judged on other data too): each
digit of ``load_digits`` in turn as the anomaly class, ``load_breast_cancer``'s malignant
class, and each class of ``load_wine`` and ``load_iris``; anomalies downsampled to 3% of the
normal records (seed 1), arrays ``X`` and ``y`` (1 = anomaly) like ADBench's files.
"""
import os
import sys

import numpy as np

RATE = 0.03
SEED = 1


def one_vs_rest(X, labels, anomaly, rng, rate=RATE):
    """(X, y): every record not of class ``anomaly``, plus ``rate`` times as many of it."""
    normal = np.flatnonzero(labels != anomaly)
    odd = np.flatnonzero(labels == anomaly)
    odd = rng.choice(odd, size=max(1, min(len(odd), round(rate * len(normal)))),
                     replace=False)
    idx = np.concatenate([normal, odd])
    return X[idx].astype(np.float64), (labels[idx] == anomaly).astype(np.int8)


def sets():
    """Yield (name, X, y) for every set the module docstring lists."""
    from sklearn import datasets
    rng = np.random.default_rng(SEED)
    d = datasets.load_digits()
    for digit in range(10):
        yield f"digits_{digit}", *one_vs_rest(d.data, d.target, digit, rng)
    b = datasets.load_breast_cancer()  # target 0 = malignant
    yield "breast_malignant", *one_vs_rest(b.data, b.target, 0, rng)
    for loader, name in ((datasets.load_wine, "wine"), (datasets.load_iris, "iris")):
        s = loader()
        for c in np.unique(s.target):
            yield f"{name}_{c}", *one_vs_rest(s.data, s.target, c, rng)


def write(out, named_sets):
    """Save each (name, X, y) as OUT/name.npz, the layout ``bench_quality.py`` reads."""
    os.makedirs(out, exist_ok=True)
    for name, X, y in named_sets:
        np.savez(os.path.join(out, f"{name}.npz"), X=X, y=y)
        print(f"{name}: {len(X)} rows x {X.shape[1]}, {int(y.sum())} anomalies")


def main(out):
    write(out, sets())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
