"""`checkpoint.store: kafka`: the detector's checkpoint as records of a compacted topic keyed by
the group id (streamgmm/service/kafka_io/state_store.py), restored by a daemon with no local
state, with the file checkpoint's integrity guarantees (a torn or corrupt record is refused and
the previous one used)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from kafka_helpers import (DaemonProcess, FEATURES, daemon_config, mixture_rows, produce,
                           read_topic, to_record, unique, wait_for, write_yaml)
from streamgmm import Detector
from streamgmm.service.config import ConfigError, config_from_dict
from streamgmm.service.kafka_io.state_store import (KafkaStateStore, StateStoreError,
                                                    StateTooLarge)

pytestmark = pytest.mark.timeout(120)


BASE = {"records": {"features": list(FEATURES)}}


def _kcfg(bootstrap):
    return config_from_dict({**BASE, "kafka": {"bootstrap_servers": [bootstrap]}},
                            environ={}).kafka


def _fitted(seed: int) -> Detector:
    det = Detector.from_dict({"n_components": 3, "max_components": 3, "warmup_records": 200},
                             feature_names=list(FEATURES))
    det.fit(mixture_rows(600, seed=seed))
    return det


def _daemon(cfg: dict, tmp_path, name: str) -> DaemonProcess:
    path = write_yaml(tmp_path / f"{name}.yaml", cfg)
    return DaemonProcess(path, str(tmp_path / f"{name}.log"), module="streamgmm", args=("run",))


def test_round_trip_second_daemon_restores_from_the_topic_and_skips_warmup(
        bootstrap, make_topics, tmp_path):
    src, out, dlq = make_topics("st-in", "st-out", "st-dlq")
    state, group = unique("st-state"), unique("g-st")   # the daemon creates the state topic
    warmup = 300
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=warmup, emit="all")
    cfg["checkpoint"] = {"store": "kafka", "topic": state, "interval_seconds": 0.5}
    X = mixture_rows(700, seed=31)
    produce(bootstrap, src, [to_record(i, x) for i, x in enumerate(X[:600])],
            one_per_batch=True)

    d1 = _daemon(cfg, tmp_path, "first")
    try:
        wait_for(lambda: "checkpoint written to state topic" in d1.log_text(), 60,
                 what="a checkpoint in the state topic")
        wait_for(lambda: len(read_topic(bootstrap, out, quiet=0.2)) >= 600, 30,
                 what="600 scored")
        d1.proc.terminate()
        assert d1.wait(30) == 0, d1.log_text()
    finally:
        d1.kill()
    log1 = d1.log_text()
    assert "warming up" in log1 and f"created the state topic {state}" in log1
    states = read_topic(bootstrap, state)
    assert states and all(r.key == group.encode() for r in states)

    # same group, empty disk: restores from the topic; the first record it reads is scored
    d2 = _daemon(cfg, tmp_path, "second")
    try:
        wait_for(lambda: "restored state topic" in d2.log_text() or d2.proc.poll() is not None,
                 60, what="restore")
        produce(bootstrap, src, [to_record(600 + i, x) for i, x in enumerate(X[600:605])],
                one_per_batch=True)
        wait_for(lambda: {600, 601, 602, 603, 604} <= {
            json.loads(r.value)["offset"] for r in read_topic(bootstrap, out, quiet=0.2)},
            30, what="the new records scored without a warm-up")
        d2.proc.terminate()
        assert d2.wait(30) == 0, d2.log_text()
    finally:
        d2.kill()
    log2 = d2.log_text()
    assert "restored state topic" in log2 and "warming up" not in log2, log2
    assert len(read_topic(bootstrap, state)) > len(states)  # it checkpoints there too


def test_corrupt_or_torn_newest_record_is_refused_and_the_previous_one_used(
        bootstrap, make_topics, caplog):
    state = make_topics("st-corrupt")
    group = unique("g-corrupt")
    store = KafkaStateStore(_kcfg(bootstrap), state, group)
    assert store.ensure_topic() is False           # exists: not created again
    good, newer = _fitted(1), _fitted(2)
    try:
        data = good.dumps()
        store.save(data)
        # another group's record (ignored), a torn copy and garbage, each its own batch
        produce(bootstrap, state, [newer.dumps(), data[: len(data) // 2], b"garbage"],
                keys=[unique("other"), group, group], one_per_batch=True)
        torn = bytearray(data)
        torn[len(torn) // 2] ^= 0xFF                    # a flipped byte inside an array
        produce(bootstrap, state, [bytes(torn)], keys=[group], one_per_batch=True)
        with caplog.at_level(logging.WARNING, logger="streamgmm.state_store"):
            det, offset = store.load(lambda b: Detector.loads(b, origin="state record"))
        assert offset == 0
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 3, refused
        assert any("checksum mismatch" in m or "corrupted" in m for m in refused)
        X = mixture_rows(50, seed=9)
        assert np.array_equal(det.score(X).scores, good.score(X).scores)
        det.close()

        # the daemon's restore path: same record, a warning for each refused one
        from streamgmm.service.runtime.daemon import load_detector
        cfg = config_from_dict({**BASE, "detector": {"n_components": 3, "max_components": 3},
                                "kafka": {"bootstrap_servers": [bootstrap], "group_id": group},
                                "checkpoint": {"store": "kafka", "topic": state}}, environ={})
        caplog.clear()
        with caplog.at_level(logging.INFO):
            det = load_detector(cfg, store)
        assert det.ready and np.array_equal(det.score(X).scores, good.score(X).scores)
        det.close()
        text = caplog.text
        assert f"restored state topic {state} (offset 0)" in text and "warming up" not in text
        assert text.count("refused") == 3

        # nothing valid at all: refused, never a half-read state
        bad_only = KafkaStateStore(_kcfg(bootstrap), state, unique("g-bad"))
        produce(bootstrap, state, [b"garbage"], keys=[bad_only.key], one_per_batch=True)
        with pytest.raises(StateStoreError, match="no valid state.*tombstone"):
            bad_only.load(Detector.loads)
        assert KafkaStateStore(_kcfg(bootstrap), state, unique("g-none")).load(
            Detector.loads) is None
    finally:
        store.close()
        good.close()
        newer.close()


def test_state_size_of_a_default_detector_fits_and_a_too_big_state_fails_clearly(
        bootstrap, make_topics):
    det = Detector.from_dict({}, feature_names=list(FEATURES))   # every default
    X = mixture_rows(25000, seed=3)
    for i in range(0, len(X), 1000):
        det.process(X[i:i + 1000])
    det.wait_for_refit(30)
    try:
        data = det.dumps()
        assert len(data) < 300_000          # ~174 KB: the 20,000-score threshold window
        state = make_topics("st-size")
        store = KafkaStateStore(_kcfg(bootstrap), state, "g")
        try:
            store.save(data)
            small = KafkaStateStore(_kcfg(bootstrap), state, "g", max_bytes=100_000)
            with pytest.raises(StateTooLarge, match="over checkpoint.max_bytes") as err:
                small.save(data)
            # no raw rows in this state: the hint must not blame include_recent_records
            assert "Turn off checkpoint.include_recent_records" not in str(err.value)
            assert "number of features" in str(err.value)
            recent = KafkaStateStore(_kcfg(bootstrap), state, "g", max_bytes=100_000,
                                     recent_records=True)
            with pytest.raises(StateTooLarge, match="include_recent_records"):
                recent.save(data)
        finally:
            store.close()
    finally:
        det.close()


def _full_state(config: dict, d: int, recent: bool, dtype=np.float64) -> tuple:
    """(state bytes, names) of a detector whose buffers are full: the threshold's window of
    scores; with `recent`, also the refit window's rows, a drift reference being collected
    again (as after a refit: its rows, not yet its summary) and the learning queue."""
    names = [f"sensor.feature_{j}" for j in range(d)]
    rng = np.random.default_rng(d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    det = Detector(config, feature_names=names, dtype=dtype, background_refit=False)
    n = det.config.warmup_records + det.config.threshold.window + det.config.refit.window
    for _ in range(0, n, 2000):
        det.process(rng.normal(size=(2000, d)) @ mix + rng.integers(0, 3, (2000, 1)))
    if recent:
        det.monitor_.reset(d, det.monitor_.record_)
        det.process(rng.normal(size=(det.config.drift.reference_records - 10, d)) @ mix)
        assert not det.monitor_.ref_ready_ and det._learn
    assert det.threshold_model_.n_filled_ == det.config.threshold.window
    try:
        return det.dumps(include_recent_records=recent), names
    finally:
        det.close()


@pytest.mark.parametrize("config, d, recent, dtype", [
    ({}, 4, False, np.float64),                                        # every default
    ({}, 60, False, np.float64),                                       # wide: ~0.85 MB
    ({"n_components": 3}, 20, False, np.float64),
    ({"n_components": 2, "covariance_type": "tied"}, 20, False, np.float64),
    ({"covariance_type": "diag"}, 20, False, np.float64),
    ({"n_components": 2, "covariance_type": "spherical"}, 20, False, np.float64),
    ({"drift": {"feature_tests": False}}, 20, False, np.float64),
    ({"threshold": {"window": 5000}, "refit": {"window": 3000}}, 8, True, np.float64),
    ({"threshold": {"window": 5000}, "refit": {"window": 3000}}, 8, True, np.float32),
], ids=["default", "wide", "k3-full", "tied", "diag-auto", "spherical", "no-feature-tests",
        "recent", "recent-float32"])
def test_the_state_size_estimate_is_an_upper_bound_within_a_few_percent(config, d, recent,
                                                                         dtype):
    """`state_bytes` (what the start-up check compares with checkpoint.max_bytes) against the
    bytes of a real state whose buffers are full: never below, at most 3% above."""
    from streamgmm.detection.config import DetectorConfig
    from streamgmm.detection.sizing import state_bytes

    data, names = _full_state(config, d, recent, dtype)
    estimate = state_bytes(DetectorConfig.from_dict(config), names,
                           include_recent_records=recent, dtype=dtype)
    assert len(data) <= estimate <= 1.03 * len(data), (len(data), estimate)


@pytest.mark.parametrize("section, key, needle", [
    ({"store": "kafka", "path": "/tmp/ck.npz"}, "checkpoint.path", "must be null"),
    ({"store": "s3"}, "checkpoint.store", "one of file, kafka"),
    ({"store": "kafka", "topic": "events"}, "checkpoint.topic", "must differ"),
    ({"store": "kafka", "topic": ""}, "checkpoint.topic", ""),
    ({"store": "kafka", "max_bytes": 10}, "checkpoint.max_bytes", ""),
])
def test_config_validation(section, key, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "checkpoint": section}, environ={})
    assert str(err.value).startswith(key + ":") and needle in str(err.value)


def test_config_defaults_and_kafka_store_without_path():
    cfg = config_from_dict(BASE, environ={})
    assert (cfg.checkpoint.store, cfg.checkpoint.topic) == ("file", "streamgmm.state")
    cfg = config_from_dict({**BASE, "checkpoint": {"store": "kafka"}}, environ={})
    assert cfg.checkpoint.path is None and cfg.checkpoint.store == "kafka"
    from streamgmm.service.runtime.preflight import kafka_needed
    assert "checkpoint" in kafka_needed(cfg)
