"""The fleet's pieces without a broker: pooled online-EM statistics (models/pooled.py), the
Detector's follower link (follow/adopt), the thinned sample and the sync message."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from streamgmm import Detector
from streamgmm import math as gm
from streamgmm.math import sufficient_stats as ss
from streamgmm.math.sufficient_stats import posteriors
from streamgmm.models import pooled
from streamgmm.models.online import OnlineGaussianMixture
from streamgmm.persistence import CheckpointError
from streamgmm.service.fleet.member import MemberLink
from streamgmm.service.fleet.messages import (decode_sync, encode_sync, version_header,
                                              version_of)
from streamgmm.service.fleet.sampling import Thinned


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[: n // 2] += 4.0
    return X


@pytest.mark.parametrize("ct", ["full", "diag", "tied", "spherical"])
def test_statistics_pooled_from_parts_step_like_the_whole_batch(ct):
    X = _data()
    a = OnlineGaussianMixture(2, covariance_type=ct, random_state=0).fit(X[:2000])
    b = copy.deepcopy(a)
    B = X[2000:]
    wlp = gm.weighted_log_prob(B, a.weights_, a.means_, a.precisions_cholesky_, ct)
    R, S = posteriors(wlp)
    a.partial_fit_posteriors(B, R, S)
    parts = [pooled.statistics_of(b, B[i:i + 700], R[i:i + 700], S[i:i + 700])
             for i in range(0, len(B), 700)]
    stats, n = parts[0]
    for st, m in parts[1:]:
        stats, n = pooled.merge(b, stats, n, st, m)
    pooled.apply(b, stats, n, 1)
    np.testing.assert_allclose(b.means_, a.means_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.weights_, a.weights_, rtol=0, atol=1e-12)
    assert b.n_seen_ == a.n_seen_ and b.n_steps_ == a.n_steps_


def test_several_steps_at_once_leave_the_single_models_weight_on_the_past():
    X = _data()
    m = OnlineGaussianMixture(2, random_state=0).fit(X[:2000])
    t0 = m.n_steps_
    etas = [ss.stepwise_step_size(t0 + j, m.alpha, m.t0) for j in (1, 2, 3)]
    stats, n = pooled.statistics_of(m, X[2000:], *posteriors(gm.weighted_log_prob(
        X[2000:], m.weights_, m.means_, m.precisions_cholesky_, "full")))
    pooled.apply(m, stats, n, 3)
    assert m.n_steps_ == t0 + 3
    assert m.last_eta_ == pytest.approx(1 - np.prod([1 - e for e in etas]))


def test_statistics_of_another_shape_are_not_compatible():
    X = _data()
    m2 = OnlineGaussianMixture(2, random_state=0).fit(X)
    m3 = OnlineGaussianMixture(3, random_state=0).fit(X)
    assert pooled.compatible(m2, pooled.empty(m2))
    assert not pooled.compatible(m2, pooled.empty(m3))
    arrays = pooled.to_arrays(pooled.empty(m3))
    back = pooled.from_arrays(arrays, 1)
    assert pooled.compatible(m3, back)


class _Link:
    def __init__(self):
        self.learned, self.scored, self.alarms = 0, 0, []

    def learn(self, model, X, resp, logd):
        self.learned += len(X)

    def scores(self, X, scores, flags):
        self.scored += len(scores)

    def drift(self, alarm):
        self.alarms.append(alarm)


def test_a_follower_never_fits_or_steps_and_scores_its_buffer_on_adoption():
    X = _data(6000)
    leader = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    leader.process(X[:500])
    follower = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    link = _Link()
    follower.follow(link)
    assert len(follower.process(X[500:1700])) == 0           # waits, however many records
    assert not follower.ready and len(follower.buffered()) == 1200
    res = follower.adopt(Detector.loads(leader.dumps()))
    assert len(res) == 1200 and follower.ready
    np.testing.assert_array_equal(res.scores, leader.score(X[500:1700]).scores)
    before = copy.deepcopy(follower.model_.get_state())
    follower.process(X[1700:4000])
    assert link.learned > 0 and link.scored == 1200 + 2300
    after = follower.model_.get_state()
    for k, v in before.items():                              # the shared model is untouched
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, after[k])
    assert follower.threshold_ == leader.threshold_


def test_member_link_sends_statistics_scores_and_warm_rows():
    X = _data(3000)
    det = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    link = MemberLink("m1", sample_records=100, warmup_records=500)
    link.det = det
    det.follow(link)
    det.process(X[:800])
    meta, arrays = link.take(0)
    assert not meta["ready"] and arrays["rows"].shape == (500, 3)   # at most warmup_records
    leader = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    leader.process(X[:500])
    det.adopt(Detector.loads(leader.dumps()))
    det.process(X[800:3000])
    meta, arrays = link.take(1)
    assert meta["ready"] and meta["n"] > 0 and meta["steps"] >= 1
    assert 0 < len(arrays["rows"]) <= 100 and len(arrays["scores"]) > 0
    assert meta["scored"] == 800 + 2200       # the buffered records, scored on adoption
    data = encode_sync(meta, arrays)
    m2, a2 = decode_sync(data, "test")
    assert m2["n"] == meta["n"] and set(a2) == set(arrays)
    with pytest.raises(CheckpointError):
        decode_sync(data[:-10], "torn")


def test_scores_of_a_replaced_generation_are_not_sent():
    """A member that adopts a refit's version and syncs before scoring a record with it
    must not send the old model's scores as the new generation's: the leader would rank
    the new threshold on them (the group then under-flagged after a refit, 0.07-0.5p)."""
    X = _data(3000)
    leader = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    leader.process(X[:500])
    det = Detector({"warmup_records": 500, "n_components": 2, "random_state": 0})
    link = MemberLink("m1", sample_records=100, warmup_records=500)
    link.det = det
    det.follow(link)
    det.process(X[500:1000])                               # buffered until a version
    det.adopt(Detector.loads(leader.dumps()))
    det.process(X[1000:1500])
    refit = Detector({"warmup_records": 500, "n_components": 2, "random_state": 1})
    refit.process(X[1000:1500])
    refit.model_version = det.model_version + 1          # the group's next generation
    det.adopt(Detector.loads(refit.dumps()))
    meta, arrays = link.take(2)
    assert meta["generation"] == det.model_version and "scores" not in arrays
    det.process(X[1500:1600])
    meta, arrays = link.take(3)
    assert len(arrays["scores"]) == 100                     # the new generation's own


def test_thinned_sample_is_bounded_and_spread_over_the_interval():
    t = Thinned(100)
    for i in range(100):
        t.add(np.arange(i * 1000, (i + 1) * 1000), when=float(i))
        assert len(t) <= 200
    vals, times = t.take()
    assert len(vals) == 100
    assert vals.min() < 5000 and vals.max() > 95000          # early and late both kept
    assert np.all(np.diff(vals) > 0) and times[0] < times[-1]
    assert t.take() == (None, None)


def test_version_headers_round_trip():
    assert version_of(version_header(17)) == 17
    assert version_of([("other", b"1")]) is None
    assert version_of([(version_header(1)[0][0], b"x")]) is None


def test_an_ensembles_members_pool_like_its_own_online_step():
    """The default detector's model is an ensemble of mixtures: pooled statistics step each
    member as the ensemble's own online step does."""
    X = _data(8000)
    det = Detector({"warmup_records": 2000, "random_state": 0})
    det.process(X[:2000])
    a = det.model_
    assert hasattr(a, "members") and len(a.members) > 1
    b = copy.deepcopy(a)
    Xs = det.scaler_.transform(X[2000:3000], det.dtype)
    _, _, resp, logd = a.decide(Xs)
    a.partial_fit_posteriors(Xs, resp, logd)
    s1, n1 = pooled.statistics_of(b, Xs[:400], resp[:400], logd[:400])
    s2, n2 = pooled.statistics_of(b, Xs[400:], resp[400:], logd[400:])
    pooled.apply(b, *pooled.merge(b, s1, n1, s2, n2), 1)
    for ma, mb in zip(a.members, b.members):
        np.testing.assert_allclose(mb.means_, ma.means_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(mb.covariances_, ma.covariances_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.score_samples(Xs), a.score_samples(Xs), rtol=1e-10)
