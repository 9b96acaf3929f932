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


def _member(name, warmup, features=3):
    """A member's Detector following a MemberLink, with nothing adopted yet (buffering)."""
    det = Detector({"warmup_records": warmup, "n_components": 2, "random_state": 0})
    link = MemberLink(name, sample_records=500, warmup_records=warmup)
    link.det = det
    det.follow(link)
    return det, link


def _leader(warmup, features):
    from streamgmm.service.config import config_from_dict, detector_dict
    from streamgmm.service.fleet.leader import Leader

    cfg = config_from_dict({"records": {"features": features},
                            "detector": {"warmup_records": warmup, "n_components": 2,
                                         "random_state": 0}}, environ={})
    return Leader(Detector, cfg, detector_dict(cfg), features)


def _deliver(leader, link, version=0):
    """Each of the member's messages of this interval, as the coordination consumer hands
    them to the leader (encoded and decoded, as on the topic)."""
    from types import SimpleNamespace

    for i, (meta, arrays) in enumerate(link.take_all(version)):
        leader.receive(SimpleNamespace(value=encode_sync(meta, arrays), offset=i))


def test_version_1_is_fitted_on_every_members_rows_in_proportion():
    """Member A's partitions sync 200 warm-up rows, then member B, at another place, sends a
    whole warmup_records (600) in one sync. Version 1 must be fitted on both (A's share
    200/800 of the 600 rows), not on B's newest 600 only: that model flagged all of A's
    normal records."""
    rng = np.random.default_rng(5)
    feats = ["a", "b", "c"]
    A, B = rng.normal(size=(2200, 3)), rng.normal(size=(600, 3)) + 8.0
    leader = _leader(600, feats)
    det_a, link_a = _member("A", 600)
    det_b, link_b = _member("B", 600)
    det_a.process(A[:200])
    _deliver(leader, link_a)
    leader.sync()
    assert not leader.fitting                               # 200 of 600: waits
    det_b.process(B)
    _deliver(leader, link_b)
    leader.sync()
    [started] = leader.take_events()
    assert started.kind == "refit_started" and started.detail["n_records"] == 600
    leader.wait(60)
    leader.sync()
    assert leader.det is not None and leader.det.ready
    flagged_a = leader.det.score(A[200:]).is_anomaly.mean()
    flagged_b = leader.det.score(rng.normal(size=(2000, 3)) + 8.0).is_anomaly.mean()
    assert flagged_a < 0.05 and flagged_b < 0.05, (flagged_a, flagged_b)


def test_version_1_counts_a_members_resent_rows_once():
    """A member resends its warm-up buffer from its start (a solo leader turned shared, or
    one that lost leadership): the leader replaces that member's rows, not weighing them
    double."""
    feats = ["a", "b", "c"]
    rng = np.random.default_rng(6)
    leader = _leader(600, feats)
    det, link = _member("A", 600)
    det.process(rng.normal(size=(300, 3)))
    _deliver(leader, link)
    link.restart_warm_rows()
    _deliver(leader, link)
    assert len(leader.warm["A"]) == 300
    det.process(rng.normal(size=(100, 3)))
    _deliver(leader, link)
    np.testing.assert_array_equal(leader.warm["A"], det.buffered()[:400])


def test_proportional_pooling_keeps_every_part_and_is_deterministic():
    from streamgmm.service.fleet.sampling import proportional

    parts = [np.arange(200), np.arange(1000, 1600), np.arange(5000, 5001), np.arange(0)]
    out = proportional(parts, 600)
    assert len(out) == 600 and len(np.unique(out)) == 600
    counts = [np.sum(out < 1000), np.sum((out >= 1000) & (out < 5000)), np.sum(out >= 5000)]
    assert counts == [150, 449, 1]                         # 600 x 200/801, 600/801, 1/801
    assert out[0] == 0 and 199 in out and 1599 in out      # each part spread end to end
    np.testing.assert_array_equal(out, proportional(parts, 600))
    np.testing.assert_array_equal(proportional(parts[:1], 600), parts[0])   # fewer: all


def test_wide_warm_up_rows_go_out_in_messages_under_the_bound():
    """150 features: warmup_records (2,000) rows are 2.4 MB, over Apache Kafka's default
    max.message.bytes (1 MB). The member sends them in several messages, each (as a record
    batch, with its key and header) under the bound, together every row once; the leader
    gets them all for version 1."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from streamgmm.service.fleet.member import SYNC_BYTES
    from streamgmm.service.fleet.messages import member_header

    feats = [f"f{j}" for j in range(150)]
    det, link = _member("member0@host:1", 2000, 150)
    X = np.random.default_rng(7).normal(size=(2500, 150))
    det.process(X)
    messages = link.take_all(0)
    sizes = []
    for meta, arrays in messages:
        data = encode_sync(meta, arrays)
        sizes.append(DefaultRecordBatchBuilder.estimate_size_in_bytes(
            b"group", data, member_header(meta["member"])))
    assert len(messages) == 3 and max(sizes) < SYNC_BYTES < 1_000_000, sizes
    rows = np.concatenate([a["rows"] for _, a in messages])
    np.testing.assert_array_equal(rows, X[:2000])
    assert [m["warm_from"] for m, _ in messages] == [0, len(messages[0][1]["rows"]),
                                                     2 * len(messages[0][1]["rows"])]
    assert link.take_all(0)[0][1] == {}                    # sent: not again
    leader = _leader(2000, feats)
    link.restart_warm_rows()
    _deliver(leader, link)
    np.testing.assert_array_equal(leader.warm["member0@host:1"],
                                  X[:2000])


def test_statistics_too_wide_for_a_default_coordination_topic_are_warned_about():
    """The statistics of a sync are one message: from 150 features the default model's
    (full covariances) pass Apache Kafka's default max.message.bytes, and the start-up
    warns naming the coordination topic and the size (an upper bound of what a member
    really sends); 3 full components fit."""
    from streamgmm.detection.sizing import statistics_bytes
    from streamgmm.service.config import config_from_dict
    from streamgmm.service.runtime.preflight import check_sync_size

    feats = [f"f{j}" for j in range(150)]
    raw = {"records": {"features": feats}, "kafka": {"group_id": "g"},
           "fleet": {"enabled": True, "topic": "coord"},
           "checkpoint": {"store": "kafka", "topic": "state", "max_bytes": 8_000_000}}
    [warning] = check_sync_size(config_from_dict(raw, environ={}))
    need = int(warning.split("up to ")[1].split(" bytes")[0].replace(",", ""))
    assert warning.startswith("fleet.topic: with 150 features") and "'coord'" in warning
    assert 1_048_588 < need < 1_500_000, warning
    small = config_from_dict({**raw, "detector": {"n_components": 3}}, environ={})
    assert check_sync_size(small) == []
    # the bound holds for what a member sends: 3 full components, measured
    det, link = _member("m", 400, 150)
    X = np.random.default_rng(8).normal(size=(1400, 150))
    lead = Detector({"warmup_records": 400, "n_components": 3, "random_state": 0})
    lead.process(X[:400])
    det.process(X[400:800])
    link.take_all(0)
    det.adopt(Detector.loads(lead.dumps()))
    det.process(X[800:1400])
    meta, arrays = link.take(1)
    stats = {k: v for k, v in arrays.items() if k.startswith("s0.")}
    assert meta["n_mixtures"] == 1
    measured = len(encode_sync(meta, stats))
    assert 0.97 * statistics_bytes(small.detector, feats) < measured \
        <= statistics_bytes(small.detector, feats)
