"""The detection engine: warm-up, threshold, contaminated training, drift, refit, explanation."""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from streamgmm import Detector, DetectorConfig, NotFittedError
from streamgmm.detection.drift import DriftMonitor
from streamgmm.detection.explain import feature_shares, precision_matrices
from streamgmm.detection.scaler import StandardScaler
from streamgmm.detection.threshold import PercentileThreshold


class Mixture:
    """A known d-dimensional Gaussian mixture to draw stationary or changed streams from."""

    def __init__(self, d=8, k=4, seed=0, spread=3.0):
        self.rng = np.random.default_rng(seed)
        self.d, self.k = d, k
        self.means = self.rng.normal(0, spread, (k, d))
        self.A = self.rng.normal(0, 1, (k, d, d)) * 0.3 + np.eye(d)
        self.weights = np.full(k, 1.0 / k)

    def draw(self, n, var_factor=1.0, shift=None):
        c = self.rng.choice(self.k, size=n, p=self.weights)
        Z = self.rng.normal(size=(n, self.d)) * np.sqrt(var_factor)
        X = self.means[c] + np.einsum("nij,nj->ni", self.A[c], Z)
        if shift is not None:
            X += shift
        return X


def sync(cfg=None, **kw):
    return Detector(cfg or {}, background_refit=False, **kw)


# ----------------------------------------------------------------------------- warm-up
def test_warmup_buffers_then_scores_every_record_in_order():
    mix = Mixture(d=4, k=3)
    det = sync({"n_components": 3, "warmup_records": 500})
    batches = [mix.draw(120) for _ in range(5)]  # 600 records: warm-up completes in batch 5
    got = []
    for i, X in enumerate(batches):
        res = det.process(X)
        got.append(len(res))
        if i < 4:
            assert len(res) == 0 and det.pending == 120 * (i + 1) and not det.ready
    assert got == [0, 0, 0, 0, 600]
    assert det.ready and det.pending == 0 and det.model_version == 1
    assert [e.kind for e in res.events] == ["warmup_done"]
    # The warm-up records' results are the same as scoring them now, in input order.
    allX = np.vstack(batches)
    np.testing.assert_allclose(res.scores, det.score(allX).scores)
    assert det.counters["records"] == 600


def test_score_before_any_model_raises_not_fitted():
    with pytest.raises(NotFittedError):
        Detector({}).score(np.zeros((3, 2)))


def test_wrong_feature_count_is_rejected():
    det = sync({"n_components": 2, "warmup_records": 100}).fit(Mixture(d=3, k=2).draw(300))
    with pytest.raises(ValueError, match="3 features"):
        det.process(np.zeros((5, 4)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", [{}, {"n_components": 3, "covariance_type": "full"},
                                 {"n_components": 3, "covariance_type": "tied"},
                                 {"n_components": 3, "covariance_type": "diag"},
                                 {"n_components": 3, "covariance_type": "spherical"}])
def test_a_record_scores_the_same_alone_or_in_a_batch(cfg, dtype):
    """To the last bit: fleet members that score a record with the same model version must
    agree whatever else their poll held (one row took BLAS's matrix-vector path: 1 ulp off
    on diagonal members)."""
    mix = Mixture(d=5, k=3, seed=2)
    det = sync(dict(cfg, warmup_records=1500), dtype=dtype).fit(mix.draw(1500))
    X = mix.draw(300)
    for i in (0, 7):
        got = {det.score(X[i:i + n]).scores[0] for n in (1, 2, 3, 17, 300 - i)}
        assert len(got) == 1, got
        one = det.model_.score_samples(det.scaler_.transform(X[i:i + 1], dtype))[0]
        many = det.model_.score_samples(det.scaler_.transform(X, dtype))[i]
        assert one == many


def test_scaler_handles_zero_variance_features():
    X = np.column_stack([np.random.default_rng(0).normal(size=500), np.full(500, 7.0)])
    sc = StandardScaler().fit(X)
    assert sc.scale_[1] == 1.0
    Z = sc.transform(X)
    assert np.all(np.isfinite(Z)) and np.allclose(Z[:, 1], 0.0)
    det = sync({"n_components": 1, "warmup_records": 100}).fit(X)
    assert np.all(np.isfinite(det.score(X).scores))


def test_scaler_leaves_gross_values_out_of_mean_and_scale():
    """One 1e9 (or 1e160, whose square overflows) in a window of values near 100 does not set
    the feature's scale; counts and flags (mostly one value) keep their plain moments."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(100, 10, 3000), (rng.random(3000) < 0.02).astype(float),
                         rng.poisson(0.3, 3000).astype(float)])
    plain = StandardScaler().fit(X)
    assert_allclose(plain.scale_, X.std(axis=0), rtol=0)  # nothing gross: plain moments
    for bad in (1e9, 1e160, 1e308):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow warning either
            sc = StandardScaler().fit(np.vstack([X, [bad, 0.0, 0.0]]))
        assert_allclose(sc.scale_, plain.scale_, rtol=1e-3)
        assert_allclose(sc.mean_, plain.mean_, rtol=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_gross_value_in_the_fit_window_does_not_blind_its_feature(dtype):
    """Before: the window's 1e9 set the feature's scale, and a later 5000 (or 160: 6 sds)
    scored like the bulk. Absurd but finite inputs (1e308) get a finite, very low score."""
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(100, 10, 3000), rng.normal(50, 5, 3000),
                         rng.normal(20, 2, 3000)])
    probes = np.array([[160.0, 50, 20], [5000, 50, 20], [1e308, 50, 20], [100, 50, 20]])
    for bad in (1e9, 1e160, 1e308):
        det = sync({"warmup_records": 3001}, dtype=dtype)
        det.fit(np.vstack([X, [bad, 50.0, 20.0]]))
        r = det.score(probes)
        assert r.is_anomaly.tolist() == [True, True, True, False], (bad, r.scores)
        assert np.all(np.isfinite(r.scores)) and r.scores[2] < r.scores[1] < r.scores[0]
        assert r.contributions[2][0][0] == "x0"


# --------------------------------------------------------------------------- threshold
@pytest.mark.parametrize("p", [0.5, 1.0, 5.0])
def test_flagged_fraction_matches_percentile_on_clean_stationary_data(p):
    mix = Mixture(d=8, k=4, seed=int(p * 10))
    det = sync({"n_components": 4, "threshold": {"percentile": p}})
    det.process(mix.draw(2000))
    flagged = total = 0
    for _ in range(200):
        res = det.process(mix.draw(1000))
        flagged += res.is_anomaly.sum()
        total += len(res)
    rate = 100.0 * flagged / total
    assert abs(rate - p) <= 0.2 * p, f"flagged {rate:.3f}% for p={p}"
    assert det.counters["drift_events"] == 0


def test_threshold_ignores_a_burst_of_gross_anomalies():
    th = PercentileThreshold(percentile=1.0, window=5000)
    rng = np.random.default_rng(0)
    th.fit(rng.normal(size=5000))
    for _ in range(6):  # the stream's own scores: the baseline a burst is told from
        th.update(rng.normal(size=1000))
    before = th.value_
    burst = np.concatenate([rng.normal(size=950), np.full(50, -1e3)])  # 5% gross
    for _ in range(10):
        th.update(rng.permutation(burst))
    # not dragged down to the gross values (-1000): held at the window's own far-out fence
    assert before - 4.0 < th.value_ < before
    flagged = (burst < th.value_).mean()
    assert 0.05 <= flagged <= 0.055        # all gross ones flagged, hardly any others


# ----------------------------------------------------------------- contaminated training
def test_contaminated_warmup_anomalies_and_tight_cluster_stay_flagged():
    rng = np.random.default_rng(3)
    mix = Mixture(d=4, k=2, seed=3, spread=2.0)
    normal = mix.draw(1900)
    isolated = rng.normal(0, 1, (70, 4)) * 2 + rng.choice([-1, 1], (70, 4)) * 14
    cluster = rng.normal(0, 0.05, (30, 4)) + np.array([9.0, -9.0, 9.0, -9.0])
    X = np.vstack([normal, isolated, cluster])
    order = rng.permutation(len(X))
    labels = np.r_[np.zeros(1900), np.ones(100)][order]
    det = sync({"n_components": "auto", "max_components": 5, "warmup_records": 2000,
                "threshold": {"percentile": 1.0}})
    res = det.process(X[order])
    assert len(res) == 2000
    assert res.is_anomaly[labels == 1].all(), "a planted anomaly was not flagged"
    assert res.is_anomaly[labels == 0].mean() < 0.03
    assert det.train_info_["n_dropped"] >= 100
    # Afterwards too: fresh anomalies from the same places are flagged.
    later = det.process(np.vstack([cluster[:10] + 0.01, isolated[:10]]))
    assert later.is_anomaly.all()


# ------------------------------------------------------------------- drift and refit
def _stationary_then(det, mix, n_before=30, **change):
    det.process(mix.draw(2000))
    for _ in range(n_before):
        det.process(mix.draw(1000))
    start = det.counters["records"]
    for _ in range(40):
        res = det.process(mix.draw(50, **change))
        drift = [e for e in res.events if e.kind == "drift"]
        if drift:
            return drift[0], det.counters["records"] - start
    return None, None


@pytest.mark.parametrize("change", ["shift", "variance", "new_component"])
def test_abrupt_change_detected_within_1000_records(change):
    mix = Mixture(d=8, k=4, seed=11)
    det = sync({"n_components": 4})
    if change == "shift":
        sd0 = mix.draw(50000)[:, 0].std()
        shift = np.zeros(8)
        shift[0] = sd0
        event, delay = _stationary_then(det, mix, shift=shift)
    elif change == "variance":
        event, delay = _stationary_then(det, mix, var_factor=2.0)
    else:
        det.process(mix.draw(2000))
        for _ in range(30):
            det.process(mix.draw(1000))
        start = det.counters["records"]
        new_mean = mix.means.mean(axis=0) + 5.0
        event = None
        for _ in range(40):
            X = mix.draw(50)
            m = mix.rng.random(50) < 0.2
            X[m] = mix.rng.normal(size=(m.sum(), 8)) + new_mean
            res = det.process(X)
            drift = [e for e in res.events if e.kind == "drift"]
            if drift:
                event, delay = drift[0], det.counters["records"] - start
                break
    assert event is not None, f"{change} not detected"
    assert delay <= 1000
    assert det.counters["drift_events"] == 1


def test_no_false_drift_on_200k_stationary_records():
    mix = Mixture(d=8, k=4, seed=5)
    det = sync({"n_components": 4})
    for _ in range(202):
        det.process(mix.draw(1000))
    assert det.counters["drift_events"] == 0
    assert det.model_version == 1


def _false_alarms(expected_run_length, n=400_000, seed=0):
    """Records at which a monitor raises alarms on a stationary stream (it resets after each)."""
    rng = np.random.default_rng(seed)
    mon = DriftMonitor.from_config(DetectorConfig.from_dict(
        {"threshold": {"percentile": 1.0},
         "drift": {"expected_run_length": expected_run_length, "reference_records": 2000}})
    ).reset(3, 0)
    at = []
    for _ in range(n // 1000):
        alarms = mon.update(rng.normal(size=1000), rng.normal(size=(1000, 3)),
                            rng.random(1000) < 0.01)
        at += [a.record for a in alarms]
    return at


def test_expected_run_length_sets_the_false_alarm_rate():
    """Exercised on a stationary stream, not re-derived from the formula: the mean run
    length between false alarms is at least the configured one (Wald), not wildly more,
    and a longer setting gives fewer alarms."""
    runs = {}
    for erl in (1e3, 1e4):
        at = _false_alarms(erl)
        assert len(at) >= 3, (erl, at)                     # it does fire on a short setting
        runs[erl] = np.diff([2000] + at)                   # after the 2,000-record reference
        assert erl <= runs[erl].mean() <= 30 * erl, (erl, runs[erl].mean())
    assert len(runs[1e3]) > 3 * len(runs[1e4])
    assert _false_alarms(1e7) == []


def test_not_learning_from_anomalies_does_not_lock_out_after_a_shift():
    """After an abrupt shift every record is flagged at first; drift + refit must end that."""
    mix = Mixture(d=4, k=2, seed=2)
    cfg = {"n_components": 2, "threshold": {"percentile": 1.0},
           "online": {"learn_from_anomalies": False},
           "refit": {"window": 8000, "min_records": 3000, "cooldown_records": 8000}}
    det = sync(cfg)
    det.process(mix.draw(2000))
    for _ in range(20):
        det.process(mix.draw(1000))
    shift = np.full(4, 6.0)
    rates = []
    for _ in range(16):  # 16,000 records after the change: two refit windows
        rates.append(det.process(mix.draw(1000, shift=shift)).is_anomaly.mean())
    assert rates[0] > 0.5                       # the change is first seen as anomalous
    assert det.counters["refits"] >= 1 and det.model_version >= 2
    assert np.mean(rates[-4:]) < 0.02           # back to about p within the window length
    # and the refit model explains the new regime, not the old one: its components sit on
    # the shifted clusters, and records of the old regime are now anomalies
    means = det.scaler_.inverse_transform(det.model_.means_)
    for mu in mix.means + shift:
        assert np.min(np.linalg.norm(means - mu, axis=1)) < 0.5, (mu, means)
    assert det.score(mix.draw(2000, shift=shift)).is_anomaly.mean() < 0.03
    assert det.score(mix.draw(2000)).is_anomaly.mean() > 0.9


def test_refit_runs_in_background_while_scoring_continues():
    mix = Mixture(d=8, k=4, seed=4)
    det = Detector({"n_components": "auto", "max_components": 6,
                    "refit": {"window": 20000, "min_records": 5000, "cooldown_records": 0}})
    det.process(mix.draw(2000))
    det.process(mix.draw(10000))
    det.scheduler_.request(det.counters["records"] - 10000, "test")
    res = det.process(mix.draw(1000))  # up to the next policy boundary (every 1,000 records)
    assert any(e.kind == "refit_started" for e in res.events)
    # The old model keeps scoring while the worker fits; the swap happens at the start of a
    # later process() call (reported there as refit_done), never in the middle of a batch.
    scored_while_running, events = 0, []
    while det.model_version == 1 and scored_while_running < 10**6:
        res = det.process(mix.draw(200))
        assert len(res) == 200
        events += res.events
        if det.model_version == 1:
            assert (res.threshold == res.threshold[0]).all()
            scored_while_running += len(res)
        if det.scheduler_.job is not None and det.scheduler_.job.done:
            events += det.wait_for_refit(timeout=60)
    assert det.model_version == 2
    assert any(e.kind == "refit_done" for e in events)
    assert scored_while_running > 0


def _refit_starts(cooldown):
    """Records seen when each refit started, on a stream that keeps drift firing."""
    mix = Mixture(d=4, k=2, seed=9)
    det = sync({"n_components": 2, "drift": {"expected_run_length": 200},
                "refit": {"window": 2000, "min_records": 500, "cooldown_records": cooldown}})
    det.process(mix.draw(2000))
    starts = []
    for _ in range(30):
        res = det.process(mix.draw(1000, var_factor=3.0))
        starts += [det.counters["records"] for e in res.events if e.kind == "refit_started"]
    assert det.counters["refits"] == len(starts) and det.counters["refit_failures"] == 0
    return starts, det.counters["drift_events"]


def test_cooldown_prevents_refit_storms():
    # A silly run length makes drift fire often, but refits are at most one per cool-down:
    # several happen (else this proves nothing), each at least 10,000 records after the last.
    starts, drifts = _refit_starts(10000)
    assert len(starts) >= 2, starts
    assert np.all(np.diff(starts) >= 10000), starts
    assert drifts >= len(starts)
    # without a cool-down the same stream refits more often
    assert len(_refit_starts(0)[0]) > len(starts)


def test_refit_failure_is_reported_and_scoring_goes_on(monkeypatch):
    mix = Mixture(d=4, k=2, seed=1)
    det = sync({"n_components": 2, "refit": {"window": 3000, "min_records": 1000,
                                             "cooldown_records": 0}})
    det.process(mix.draw(2000))

    def boom(X):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(det.scheduler_, "fit_fn", boom)
    det.scheduler_.request(det.counters["records"], "test")
    res = det.process(mix.draw(1500))
    kinds = [e.kind for e in res.events]
    assert "refit_failed" in kinds and det.counters["refit_failures"] == 1
    assert len(det.process(mix.draw(100))) == 100 and det.model_version == 1


# --------------------------------------------------------------------------- explanation
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_shares_add_up_and_point_at_the_shifted_feature(covariance_type):
    mix = Mixture(d=6, k=2, seed=6)
    det = sync({"n_components": 2, "covariance_type": covariance_type},
               feature_names=[f"f{i}" for i in range(6)]).fit(mix.draw(3000))
    X = mix.draw(20)
    X[:, 4] += 40.0
    res = det.score(X)
    assert res.is_anomaly.all()
    for contrib in res.contributions:
        assert len(contrib) == 3 and contrib[0][0] == "f4"
    Xs = det.scaler_.transform(X)
    m = det.model_
    P = precision_matrices(m.precisions_cholesky_, m.covariance_type, 2, 6)
    shares = feature_shares(Xs, res.component, m.means_, P)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    normal = det.score(mix.draw(200))
    assert all(c == () or c == [] for c, a in zip(normal.contributions, normal.is_anomaly)
               if not a)


def test_shares_of_wide_records_without_gathering_precisions(monkeypatch):
    """Past GATHER_VALUES the shares come component by component, the same numbers."""
    import tracemalloc

    from streamgmm.detection import explain
    rng = np.random.default_rng(7)
    n, d, k = 60, 400, 3
    X, comp = rng.normal(size=(n, d)), rng.integers(0, k, n)
    A = rng.normal(size=(k, d, d)) / np.sqrt(d)
    P, mu = A @ A.transpose(0, 2, 1) + np.eye(d), rng.normal(size=(k, d))
    tracemalloc.start()
    try:
        wide = feature_shares(X, comp, mu, P)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4e6, peak              # the gather would be 60 x 400 x 400 x 8 = 77 MB
    monkeypatch.setattr(explain, "GATHER_VALUES", n * d * d)
    np.testing.assert_allclose(wide, feature_shares(X, comp, mu, P), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(wide.sum(axis=1), 1.0)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("bad,key", [
    ({"threshold": {"percentile": 60}}, "detector.threshold.percentile"),
    ({"online": {"alpha": 0.4}}, "detector.online.alpha"),
    ({"online": {"step": "exponential"}}, "detector.online.half_life"),
    ({"n_components": 0}, "detector.n_components"),
    ({"covariance_type": "round"}, "detector.covariance_type"),
    ({"refit": {"min_records": 3}}, "detector.refit.min_records"),
    ({"bogus": 1}, "detector.bogus"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DetectorConfig.from_dict(bad)


def test_float32_detector_scores_close_to_float64():
    mix = Mixture(d=8, k=4, seed=8)
    X = mix.draw(4000)
    d64 = sync({"n_components": 4}).fit(X)
    d32 = sync({"n_components": 4}, dtype=np.float32).fit(X)
    assert d32.model_.means_.shape == (4, 8)
    Y = mix.draw(1000)
    s64, s32 = d64.score(Y).scores, d32.score(Y).scores
    assert s32.dtype == np.float64
    assert np.median(np.abs(s64 - s32)) < 1e-2


def test_finish_warmup_scores_a_short_buffer_at_end_of_input():
    mix = Mixture(d=4, k=2, seed=12)
    det = sync({"n_components": 2, "warmup_records": 2000})
    assert len(det.process(mix.draw(300))) == 0
    res = det.finish_warmup()
    assert len(res) == 300 and det.ready and det.pending == 0
    assert [e.kind for e in res.events] == ["warmup_done"]
    tiny = sync({"n_components": 2, "warmup_records": 2000})
    tiny.process(mix.draw(5))
    assert len(tiny.finish_warmup()) == 0 and tiny.pending == 5 and not tiny.ready


def test_a_stream_with_a_heavier_tail_than_its_calibration_is_not_a_burst():
    """Held-out calibration scores have a thinner tail than many real streams (Wilt: 4% of
    normal records below Q1 - 3 IQR). That is not a burst of gross anomalies: the fence must
    not bind, so the flagged fraction comes back to p once the stream's own scores rule."""
    th = PercentileThreshold(percentile=1.0, window=20000)
    rng = np.random.default_rng(1)
    th.fit(rng.normal(size=2000))
    flagged = []
    for _ in range(20):
        s = rng.standard_t(1.5, size=1000)
        flagged.append((s < th.value_).mean())
        th.update(s)
    assert (s < th.fence_).mean() > 0.015         # more than p lies beyond the fence
    assert np.mean(flagged[5:]) < 0.015, flagged  # yet about p is flagged
