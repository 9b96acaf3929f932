"""Drift, autocorrelation and flag-rate benchmark for the Detector's policy (issue 9, 2-4).

    PYTHONPATH=. python3 bench/bench_drift.py [--quick] [--data ../shared/data/adbench]
                                              [--only SECTION ...] [--config JSON]

Generated streams (d=8, k=4 mixture): stationary flag-rate windows; AR(1) rho 0.3/0.6/0.9
stationary (false drift alarms per 1M records); stationary with 1% far-away anomalies (the
daemon benchmark's stream; false alarms per 1M, and a 1-sigma shift in it); abrupt 1-sigma mean shift (i.i.d. and AR 0.6),
a 3-unit shift of every feature, gradual change, a new component, two successive changes; and
class-switch streams from the real datasets (normals, then the anomaly class as the new normal).
Reported: records to the drift event, records until the flagged fraction is back in
[0.5p, 2p] (trailing 1,000, staying there 3 more windows; on the real switch streams also
counting flagged normals only, which stays below 0.5p when the 1% planted anomalies take
the p = 1% of flags, as they should), post-change ROC-AUC (streamgmm and
River HalfSpaceTrees in the same run), per-dataset max windowed flagged fraction, batch-size
invariance.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import (Mixture, class_switch, contaminate, daemon_bench_rows,  # noqa: E402
                     first_in_band, normal_split_switch, roc_auc, windowed_rates)

from streamgmm import Detector  # noqa: E402

P = 0.01
EXTRA = {}  # --config: detector settings over the defaults, for the auto (ensemble) detectors


def run(det, X, call):
    res = [det.process(X[i:i + call]) for i in range(0, len(X), call)]
    cat = lambda k: np.concatenate([getattr(r, k) for r in res])  # noqa: E731
    return cat("scores"), cat("is_anomaly"), [e for r in res for e in r.events]


def hst_scores(X, n_warm):
    """River HalfSpaceTrees (River's documented set-up: min-max scaled inputs), prequential."""
    try:
        from river import anomaly, preprocessing
    except ImportError:
        return None
    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=0)
    out = np.empty(len(X))
    for i, row in enumerate(X):
        x = {j: float(v) for j, v in enumerate(row)}
        out[i] = model.score_one(x)
        model.learn_one(x)
    return out[n_warm:]


def stationary(n, seeds):
    for seed in seeds:
        mix = Mixture(8, 4, seed=seed)
        det = Detector({"n_components": 4}, background_refit=False)
        X = mix.draw(2000 + n)
        _, flags, _ = run(det, X, 1000)
        f = flags[2000:]
        # the best any threshold can do: the generating mixture's exact p-quantile of its own
        # log-density (from an independent sample), applied to the same records
        ref = Mixture(8, 4, seed=seed)
        ref.rng = np.random.default_rng(seed + 1000)
        cut = np.quantile(ref.logpdf(ref.draw(1_000_000)), P)
        f_oracle = mix.logpdf(X[2000:]) < cut
        for w in (1000, 10_000):
            for who, ff in (("streamgmm", f), ("exact-quantile oracle", f_oracle)):
                r = windowed_rates(ff, w) / P
                band = np.mean((r >= 0.8) & (r <= 1.25))
                print(f"stationary seed {seed}: windows of {w:>6,}, {who}: flagged/p min "
                      f"{r.min():.2f} max {r.max():.2f} mean {r.mean():.3f}; "
                      f"{100 * band:.0f}% of windows in [0.8p, 1.25p]")
        print(f"  drift events {det.counters['drift_events']}")


def autocorrelated(n, rhos, seeds):
    for rho in rhos:
        alarms = total = 0
        t = time.perf_counter()
        for seed in seeds:
            mix = Mixture(8, 4, seed=seed)
            det = Detector({"n_components": 4}, background_refit=False)
            det.process(mix.draw(2000, rho=rho))
            for _ in range(n // 5000):
                det.process(mix.draw(5000, rho=rho))
            alarms += det.counters["drift_events"]
            total += det.counters["records"] - 2000
        print(f"AR(1) rho={rho}: {alarms} false drift events in {total:,} records "
              f"({alarms / total * 1e6:.2f} per 1M); {time.perf_counter() - t:.0f}s")


def contaminated(n, seeds):
    """Stationary streams with 1% far-away anomalies (+30 in every feature): false drift
    events per 1M records (the daemon benchmark's stream, and the d=8 k=4 mixture), then a
    1-sigma shift of feature 0 in the contaminated d=8 stream: records to the drift event."""
    for name, make in (("daemon bench stream (d=4, 3 comp.)", lambda s: daemon_bench_rows(n, s)[0]),
                       ("d=8 k=4 mixture", lambda s: contaminate(Mixture(8, 4, seed=s).draw(n),
                                                                 0.01, 30.0, s + 1)[0])):
        alarms, by, t = 0, {}, time.perf_counter()
        for seed in seeds:
            det = Detector(dict(EXTRA))
            _, _, ev = run(det, make(seed), 1000)
            for e in ev:
                if e.kind == "drift":
                    alarms += 1
                    by[e.detector] = by.get(e.detector, 0) + 1
        total = n * len(seeds)
        print(f"stationary + 1% far, {name}: {alarms} drift events in {total:,} records "
              f"({alarms / total * 1e6:.2f} per 1M) {by}; {time.perf_counter() - t:.0f}s")
    delays = []
    for seed in seeds:
        mix = Mixture(8, 4, seed=seed)
        det = Detector({"n_components": 4}, background_refit=False)
        run(det, contaminate(mix.draw(22_000), 0.01, 30.0, seed + 1)[0], 1000)
        start = det.counters["records"]
        Xa, _ = contaminate(mix.draw(5000, shift=_one_sigma(mix)), 0.01, 30.0, seed + 2)
        _, _, ev = run(det, Xa, 250)
        d = [e for e in ev if e.kind == "drift"]
        delays.append(d[0].detail["record"] - start if d else None)
    print(f"1-sigma shift, feature 0, in the contaminated d=8 stream: delay {delays}")


def change_streams(seeds, call):
    cases = {
        "1-sigma shift, feature 0": lambda m: dict(shift=_one_sigma(m)),
        "1-sigma shift, AR rho 0.6": lambda m: dict(shift=_one_sigma(m), rho=0.6),
        "3-unit shift, all features": lambda m: dict(shift=np.full(8, 3.0)),
        "doubled variance": lambda m: dict(var=2.0),
        "new component, 20%": lambda m: dict(new=m.means.mean(axis=0) + 5.0),
    }
    for name, make in cases.items():
        rows = []
        for seed in seeds:
            mix = Mixture(8, 4, seed=seed)
            kw = make(mix)
            rho = kw.pop("rho", 0.0)
            det = Detector({"n_components": 4}, background_refit=True)
            run(det, mix.draw(22_000, rho=rho), 1000)
            start = det.counters["records"]
            Xa = mix.draw(20_000, rho=rho, **kw)
            # planted anomalies after the change for a post-change ROC-AUC
            y = np.zeros(len(Xa), bool)
            idx = mix.rng.choice(len(Xa), 50, replace=False)  # 0.25%: well under p
            Xa[idx] += mix.rng.normal(0, 6, (50, 8))
            y[idx] = True
            s, f, ev = run(det, Xa, call)
            det.close()
            d = [e for e in ev if e.kind == "drift"]
            delay = d[0].detail["record"] - start if d else None
            band = first_in_band(f, 0, P)
            auc = roc_auc(y[5000:], -s[5000:])
            rows.append((delay, band, auc, len(d), det.counters["refits"]))
        print(f"{name:28s} call {call:>6}: delay {[r[0] for r in rows]}, back in band "
              f"{[r[1] for r in rows]}, post-change AUC {np.mean([r[2] for r in rows]):.3f}, "
              f"drifts {[r[3] for r in rows]}, refits {[r[4] for r in rows]}")


def _one_sigma(mix):
    s = np.zeros(8)
    s[0] = mix.feature_sd()
    return s


def gradual_and_two_changes(seed=0):
    mix = Mixture(8, 4, seed=seed)
    det = Detector({"n_components": 4}, background_refit=False)
    run(det, mix.draw(22_000), 1000)
    parts, t0 = [], det.counters["records"]
    for i in range(40):  # 3 units over 40,000 records
        parts.append(mix.draw(1000, shift=np.full(8, 3.0 * i / 40)))
    s, f, ev = run(det, np.vstack(parts), 1000)
    r = windowed_rates(f, 5000) / P
    print(f"gradual 3-unit shift over 40k: drifts {sum(e.kind == 'drift' for e in ev)}, "
          f"refits {sum(e.kind == 'refit_done' for e in ev)}, flagged/p per 5k windows "
          f"{np.round(r, 2).tolist()}")
    det = Detector({"n_components": 4}, background_refit=False)
    run(det, mix.draw(22_000), 1000)
    for k, shift in enumerate((3.0, -3.0)):
        start = det.counters["records"]
        s, f, ev = run(det, mix.draw(20_000, shift=np.full(8, shift)), 500)
        d = [e for e in ev if e.kind == "drift"]
        print(f"two changes, change {k + 1}: delay {d[0].detail['record'] - start if d else None},"
              f" change_start error {d[0].detail['change_start'] - start if d else None}, "
              f"back in band {first_in_band(f, 0, P)}, refits so far {det.counters['refits']}")


def invariance(seed=7):
    mix = Mixture(4, 2, seed=seed)
    rng = np.random.default_rng(seed)
    X = mix.draw(2000 + 50_000)
    y = np.zeros(len(X), bool)
    idx = rng.choice(np.arange(2000, len(X)), 500, replace=False)
    X[idx] += rng.normal(0, 4, (500, 4))
    y[idx] = True
    out = {}
    for call in (1, 25, 250, 1000):
        det = Detector({"n_components": 2}, background_refit=False)
        s, _, _ = run(det, X, call)
        out[call] = (det.model_.means_.copy(), det.model_.n_steps_, roc_auc(y[2000:], -s[2000:]))
    ref = out[1000]
    for call, (m, steps, auc) in out.items():
        print(f"batch size {call:>5}: online steps {steps}, max |means - means(1000)| "
              f"{np.abs(m - ref[0]).max():.2e}, ROC-AUC {auc:.4f} (diff {auc - ref[2]:+.4f})")


def real(data_dir, n_after, quick):
    files = sorted(Path(data_dir).glob("*.npz"))
    for path in files:
        d = np.load(path, allow_pickle=False)
        X, y = d["X"].astype(float), d["y"].astype(bool)
        rng = np.random.default_rng(0)
        o = rng.permutation(len(X))
        X, y = X[o], y[o]
        warm = int(min(2000, 0.2 * len(X)))
        det = Detector({**EXTRA, "warmup_records": warm}, background_refit=False)
        s, f, _ = run(det, X, 250)
        f, yy = f[warm:], y[warm:]
        w = int(min(1000, len(f)))
        worst = windowed_rates(f, w).max() / P
        worst_clean = windowed_rates(f & ~yy, w).max() / P
        line = (f"{path.stem:22s} n={len(X):6d} d={X.shape[1]:3d}: max flagged/p per {w} "
                f"{worst:5.2f} (normals only {worst_clean:4.2f}), overall {f.mean() / P:.2f}, "
                f"AUC {roc_auc(yy, -s[warm:]):.3f}, drifts {det.counters['drift_events']}")
        # class switch: the anomaly class becomes the normal data
        print(line + "\n    " + switch_line(class_switch(X, y, 10_000, n_after, seed=1),
                                            n_after, quick, "class switch"))
        print("    " + switch_line(normal_split_switch(X, y, 10_000, n_after, seed=1), n_after,
                                   quick, "normal-split switch"))


def switch_line(stream, n_after, quick, name):
    """One switch stream: drift delay, back in band, post-change ROC-AUC beside HST."""
    Xs, ys, cp = stream
    det = Detector(dict(EXTRA), background_refit=True)
    s, f, ev = run(det, Xs, 250)
    det.close()
    dd = [e for e in ev if e.kind == "drift" and e.detail["record"] > cp]
    post = slice(cp + n_after // 4, None)
    auc = roc_auc(ys[post], -s[post])
    hst = None if quick else hst_scores(Xs, 0)
    hst_auc = roc_auc(ys[post], hst[post]) if hst is not None else float("nan")
    return (f"{name} at {cp}: drift delay {dd[0].detail['record'] - cp if dd else None}, "
            f"back in band {first_in_band(f, cp, P)} (normals only: "
            f"{first_in_band(f & (ys == 0), cp, P)}), post-change AUC {auc:.3f} "
            f"(HalfSpaceTrees {hst_auc:.3f}), false drifts before "
            f"{sum(e.kind == 'drift' and e.detail['record'] <= cp for e in ev)}")


SECTIONS = ("stationary", "invariance", "changes", "autocorrelated", "contaminated", "real")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--config", help="JSON dict of detector settings over the defaults, for "
                    "the default (auto) detectors (e.g. '{\"robust_dof\": 5}')")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                    help="run only these sections: " + ", ".join(SECTIONS))
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent
                                          / "shared" / "data" / "adbench"))
    a = ap.parse_args()
    q = a.quick
    want = set(a.only or SECTIONS)
    if a.config:
        import json
        EXTRA.update(json.loads(a.config))
    if "stationary" in want:
        stationary(100_000 if q else 400_000, [0] if q else [0, 1])
    if "invariance" in want:
        invariance()
    if "changes" in want:
        change_streams(range(2 if q else 5), 250)
        change_streams(range(2 if q else 3), 20_000)
        gradual_and_two_changes()
    if "autocorrelated" in want:
        autocorrelated(200_000 if q else 1_000_000, (0.3, 0.6, 0.9), [0] if q else [0, 1])
    if "contaminated" in want:
        contaminated(200_000 if q else 1_000_000, [0] if q else [0, 1, 2])
    if "real" in want and Path(a.data).exists():
        real(a.data, 10_000, q)


if __name__ == "__main__":
    main()
