"""Issue 9 point 1: the default detector ranks anomalies on real data, streamed prequentially.

The real-data test streams ``tests/data/41_Waveform.npz`` with bench/bench_quality.py's
protocol (fixed shuffle, warm-up min(2,000, 20%), batches of 250 scored before they are learned
from). The old default (one BIC-selected full mixture) reached ROC-AUC 0.58 there, scikit-learn's
IsolationForest 0.73; the ensemble default reaches 0.75.
"""
import os

import numpy as np
import pytest

from streamgmm import Detector
from streamgmm.models import MixtureEnsemble

DATA = os.path.join(os.path.dirname(__file__), "data", "41_Waveform.npz")


def stream(path):
    with np.load(path, allow_pickle=False) as z:
        X, y = np.asarray(z["X"], dtype=np.float64), np.asarray(z["y"]).astype(int)
    idx = np.random.default_rng(0).permutation(len(X))
    X, y = X[idx], y[idx]
    return X, y, int(min(2000, round(0.2 * len(X))))


def prequential_scores(X, n_warm, config=None):
    det = Detector(dict(config or {}, warmup_records=n_warm), background_refit=False)
    det.process(X[:n_warm])
    out = [det.process(X[i:i + 250]).scores for i in range(n_warm, len(X), 250)]
    return -np.concatenate(out), det


def test_default_ranks_waveform_as_well_as_isolation_forest():
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    X, y, w = stream(DATA)
    s, det = prequential_scores(X, w)
    ours = roc_auc_score(y[w:], s)
    iforest = IsolationForest(random_state=0).fit(X[:w])
    peer = roc_auc_score(y[w:], -iforest.score_samples(X[w:]))
    assert ours >= 0.70, ours          # the old default: 0.581
    assert peer - 0.05 <= ours, (peer, ours)
    assert isinstance(det.model_, MixtureEnsemble)


def test_single_mixture_on_waveform_is_the_old_weak_ranking():
    """The bound above can fail: one full Gaussian (what the old default's BIC picked here,
    0.581) stays below it."""
    from sklearn.metrics import roc_auc_score
    X, y, w = stream(DATA)
    s, _ = prequential_scores(X, w, {"n_components": 1})
    assert roc_auc_score(y[w:], s) < 0.70


VOWELS = os.path.join(os.path.dirname(__file__), "data", "40_vowels.npz")


def test_robust_full_members_lift_average_precision_on_real_data(monkeypatch):
    """``robust_dof`` (off by default): the full members' Student-t weights keep the window's
    own anomalies (3-4% of vowels' and Waveform's warm-ups) from widening them: vowels' average
    precision 0.37 -> 0.45 streamed, Waveform's 0.19 -> 0.21, against plain full members at
    the same weight in the combination (1: robust members count in full; plain ones at
    ``training.FULL_MEMBER_WEIGHT`` by default, see the next test)."""
    from sklearn.metrics import average_precision_score
    from streamgmm.detection import training
    monkeypatch.setattr(training, "FULL_MEMBER_WEIGHT", 1.0)
    got = {}
    for dof in (5.0, None):
        for name, path in (("vowels", VOWELS), ("waveform", DATA)):
            X, y, w = stream(path)
            s, det = prequential_scores(X, w, {"robust_dof": dof})
            got[name, dof] = average_precision_score(y[w:], s)
            members = det.model_.members
            assert [m.robust_dof for m in members] == [
                dof if m.covariance_type == "full" else None for m in members]
    assert got["vowels", 5.0] >= 0.42 and got["vowels", None] < 0.40, got
    assert got["waveform", 5.0] > got["waveform", None] + 0.015, got


def test_robust_members_step_in_the_stack_as_each_alone():
    """The ensemble's stacked online step (posteriors times Student-t weights from ``decide``)
    moves every member as the member's own ``partial_fit`` does."""
    import copy
    X, y, w = stream(DATA)
    det = Detector({"warmup_records": w, "robust_dof": 5.0}, background_refit=False)
    det.process(X[:w])
    a = det.model_
    assert any(m.robust_dof for m in a.members) and not all(m.robust_dof for m in a.members)
    b = copy.deepcopy(a)
    Xs = det.scaler_.transform(X[w:w + 1000], det.dtype)
    _, comp, resp, logd = a.decide(Xs)
    np.testing.assert_array_equal(comp, b.members[0].predict(Xs))  # unweighted posteriors
    a.partial_fit_posteriors(Xs, resp, logd)
    for ma, mb in zip(a.members, b.members):
        mb.partial_fit(Xs)
        np.testing.assert_allclose(ma.means_, mb.means_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ma.covariances_, mb.covariances_, rtol=0, atol=1e-10)


def mixture_stream(n, seed=0, d=4):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [5.0] * d])
    return centres[rng.integers(0, 2, n)] + rng.normal(size=(n, d))


def test_ensemble_members_learn_online_and_scores_are_what_the_threshold_sees():
    det = Detector({"warmup_records": 1000}, background_refit=False)
    det.process(mixture_stream(1000))
    ens = det.model_
    assert isinstance(ens, MixtureEnsemble) and ens.n_members >= 3
    assert {m.covariance_type for m in ens.members} == {"full", "diag"}
    steps = [m.n_steps_ for m in ens.members]
    X = mixture_stream(3000, seed=1)
    res = det.process(X)
    assert all(m.n_steps_ > s for m, s in zip(ens.members, steps))
    np.testing.assert_array_equal(res.is_anomaly, res.scores < res.threshold)
    # the ensemble's score is the lowest robust z-score of its members' log-densities, mapped
    # onto the primary member's log-density scale (nats) by its fit-window median and IQR
    Xs = det.scaler_.transform(X[:50])
    z = [(m.score_samples(Xs) - lo) / sc for m, lo, sc in zip(ens.members, ens.loc_, ens.scale_)]
    assert ens.combination == "min"
    np.testing.assert_allclose(det.model_.score_samples(Xs),
                               ens.loc_[0] + ens.scale_[0] * np.min(z, axis=0), rtol=1e-10)
    ens.combination = "mean"
    np.testing.assert_allclose(det.model_.score_samples(Xs),
                               ens.loc_[0] + ens.scale_[0] * np.mean(z, axis=0), rtol=1e-10)
    ens.combination = "min"
    np.testing.assert_allclose(det.score(X[:50]).scores, det.model_.score_samples(Xs),
                               rtol=1e-10)


def test_ensemble_scores_read_as_log_densities():
    """In nats on the primary member's scale: the median clean-window score is the primary
    member's median log-density there, and the threshold sits in the same units."""
    det = Detector({"warmup_records": 2000}, background_refit=False)
    X = mixture_stream(2000)
    det.process(X)
    ens = det.model_
    Xs = det.scaler_.transform(X)
    primary = ens.members[0].score_samples(Xs)
    combined = ens.score_samples(Xs)
    # the lowest of the members' z-scores sits below the primary's median, within an IQR
    assert 0 < np.median(primary) - np.median(combined) < 1.5 * ens.scale_[0]
    # same order of magnitude as the primary member's log-density (not z units around 0)
    assert np.percentile(primary, 1) - 5 * ens.scale_[0] < det.threshold_ < np.median(primary)
    # ranking is that of the lowest z-score
    z = np.min([(m.score_samples(Xs) - lo) / sc
                for m, lo, sc in zip(ens.members, ens.loc_, ens.scale_)], axis=0)
    np.testing.assert_array_equal(np.argsort(combined, kind="stable"),
                                  np.argsort(z, kind="stable"))


def test_version_2_ensemble_state_keeps_the_mean_combination():
    det = Detector({"warmup_records": 1000}, background_refit=False)
    det.process(mixture_stream(1000))
    ens = det.model_
    state = ens.get_state()
    assert state["combination"] == "min"
    state["format_version"] = 2
    del state["combination"]
    old = MixtureEnsemble.from_state(state)
    assert old.combination == "mean"
    Xs = det.scaler_.transform(mixture_stream(100, seed=3))
    z = np.mean([(m.score_samples(Xs) - lo) / sc
                 for m, lo, sc in zip(ens.members, ens.loc_, ens.scale_)], axis=0)
    np.testing.assert_allclose(old.score_samples(Xs), ens.loc_[0] + ens.scale_[0] * z,
                               rtol=1e-10)
    with pytest.raises(ValueError):
        MixtureEnsemble(ens.members, combination="max")


def test_version_1_ensemble_state_keeps_z_units():
    det = Detector({"warmup_records": 1000}, background_refit=False)
    det.process(mixture_stream(1000))
    ens = det.model_
    state = ens.get_state()
    state["format_version"] = 1
    del state["log_density_units"]
    old = MixtureEnsemble.from_state(state)
    Xs = det.scaler_.transform(mixture_stream(100, seed=3))
    z = np.mean([(m.score_samples(Xs) - lo) / sc
                 for m, lo, sc in zip(ens.members, ens.loc_, ens.scale_)], axis=0)
    np.testing.assert_allclose(old.score_samples(Xs), z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(MixtureEnsemble.from_state(ens.get_state()).score_samples(Xs),
                               ens.score_samples(Xs), rtol=1e-12)


def test_planted_anomalies_rank_first():
    det = Detector({"warmup_records": 1000}, background_refit=False)
    det.process(mixture_stream(1000))
    X = mixture_stream(1000, seed=2)
    X[:10] += 8.0 * np.array([1, -1, 1, -1])
    res = det.process(X)
    assert set(np.argsort(res.scores)[:10]) == set(range(10))
    assert res.is_anomaly[:10].all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ensemble_state_round_trip(dtype):
    det = Detector({"warmup_records": 800, "online": {"batch_size": 500}}, dtype=dtype,
                   background_refit=False)
    det.process(mixture_stream(800))
    det.process(mixture_stream(300, seed=3))  # leaves rows in the learn queue
    assert det._learn_n > 0
    meta, arrays = det.get_state(include_recent_records=True)  # the whole state
    det2 = Detector.from_state(meta, arrays)
    assert isinstance(det2.model_, MixtureEnsemble)
    X = mixture_stream(2000, seed=4)
    a, b = det.process(X), det2.process(X)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.is_anomaly, b.is_anomaly)


def test_save_load_npz_keeps_the_ensemble(tmp_path):
    det = Detector({"warmup_records": 800}, background_refit=False)
    det.process(mixture_stream(800))
    path = str(tmp_path / "det.npz")
    det.save(path)
    det2 = Detector.load(path)
    X = mixture_stream(500, seed=5)
    np.testing.assert_array_equal(det.score(X).scores, det2.score(X).scores)


def test_malformed_ensemble_state_is_refused():
    det = Detector({"warmup_records": 800}, background_refit=False)
    det.process(mixture_stream(800))
    state = det.model_.get_state()
    bad = dict(state, scale=np.zeros_like(state["scale"]))
    with pytest.raises(ValueError):
        MixtureEnsemble.from_state(bad)
    with pytest.raises(ValueError):
        MixtureEnsemble.from_state(dict(state, n_members=0))


def test_calibrate_weights_divide_each_members_iqr():
    """``MixtureEnsemble.calibrate(X, weights)``: loc is each member's median log-density on X,
    scale its IQR divided by the member's weight, so a member of weight 0.5 sets the lowest z
    only where its own z is twice as low as every other member's."""
    from streamgmm.models import OnlineGaussianMixture
    X = mixture_stream(2000)
    members = [OnlineGaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
               for ct in ("full", "diag")]
    plain = MixtureEnsemble(members).calibrate(X)
    half = MixtureEnsemble(members).calibrate(X, [0.5, 1.0])
    for i, m in enumerate(members):
        q1, q2, q3 = np.percentile(m.score_samples(X), [25, 50, 75])
        assert plain.loc_[i] == half.loc_[i] == q2
        assert plain.scale_[i] == pytest.approx(q3 - q1, rel=1e-12)
    assert half.scale_[0] == pytest.approx(2 * plain.scale_[0], rel=1e-12)
    assert half.scale_[1] == plain.scale_[1]
    # a record far out for both members: the full member alone set its score at weight 1
    x = np.array([[2.5, -2.5, 2.5, -2.5]])
    z = [(m.score_samples(x)[0] - e.loc_[i]) / e.scale_[i]
         for e in (plain, half) for i, m in enumerate(members)]
    assert z[0] < z[1] and z[2] > z[3]      # at weight 0.5 the diagonal member's z is lower
    for bad in ([0.5], [0.0, 1.0], [-1.0, 1.0]):
        with pytest.raises(ValueError, match="weights"):
            MixtureEnsemble(members).calibrate(X, bad)


def test_full_members_at_half_weight_lift_average_precision_on_real_data(monkeypatch):
    """The detector's full-covariance members count at half weight in the lowest-z combination
    (``training.FULL_MEMBER_WEIGHT``): their false lows on out-of-sample normal records took the
    top of the ranking. Waveform streamed: average precision 0.19 at weight 1, 0.24 now."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    from streamgmm.detection import training
    assert training.FULL_MEMBER_WEIGHT == 0.5
    X, y, w = stream(DATA)
    got = {}
    for weight in (0.5, 1.0):
        monkeypatch.setattr(training, "FULL_MEMBER_WEIGHT", weight)
        s, det = prequential_scores(X, w)
        got[weight] = (average_precision_score(y[w:], s), roc_auc_score(y[w:], s))
    assert got[0.5][0] > got[1.0][0] + 0.03, got
    assert got[0.5][1] >= got[1.0][1] - 0.005, got
    # the weights as fitted: plain full members 0.5, diagonal and robust full members 1
    monkeypatch.undo()
    from streamgmm.detection.config import DetectorConfig
    for dof in (None, 5.0):
        _, ens, Xs, _ = training.fit_ensemble(X[:w], DetectorConfig(warmup_records=w,
                                                                     robust_dof=dof))
        for m, scale in zip(ens.members, ens.scale_):
            q1, q3 = np.percentile(m.score_samples(Xs), [25, 75])
            weight = 0.5 if m.covariance_type == "full" and dof is None else 1.0
            assert scale == pytest.approx((q3 - q1) / weight, rel=1e-9), (m.covariance_type, dof)
