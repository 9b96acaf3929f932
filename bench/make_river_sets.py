"""Write the labelled anomaly sets bundled with River as ``.npz`` files for ``bench_quality.py``.

    python bench/make_river_sets.py OUT_DIR
    python bench/bench_quality.py --data OUT_DIR

Real data that is not in ADBench's folder, read from the files River ships (no download; River
is in the ``bench`` extra): ``shuttle``, the UCI Statlog (Shuttle) data as ODDS casts it, 49,097
sensor records of 9 features, 7.2% anomalies (the rare classes). Arrays ``X`` and ``y``
(1 = anomaly) like ADBench's files, in River's order (``bench_quality.py`` shuffles).
"""
import sys

import numpy as np


def sets():
    """Yield (name, X, y) for every set the module docstring lists."""
    from river import datasets
    rows, labels = [], []
    for x, y in datasets.Shuttle():
        rows.append(list(x.values()))
        labels.append(int(y))
    yield "shuttle", np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.int8)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    from make_sklearn_sets import write  # bench/, the script's own folder
    write(sys.argv[1], sets())
