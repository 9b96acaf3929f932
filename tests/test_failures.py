"""Failures (issue 10 §2): one line naming the thing, the right exit code, never a hang.

Start-up problems (files, Kafka), SIGTERM in every state, a broker outage and restart (the
client's fatal producer error), local sources without outputs, fit/score refusals, model files
identified by content, env-override errors, and over-long lines read with flat memory.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from kafka_helpers import (FAST_GROUP, DaemonProcess, DaemonThread, broker_binary,
                           committed_offsets, create_topics, daemon_config, free_port, http_get,
                           metric, mixture_rows, produce, read_topic, scrape, start_broker,
                           to_record, unique, wait_for, write_yaml)

FEATURES2 = ["a", "b"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMGMM__")}
    env.update(extra)
    return env


def streamgmm(*args, timeout=120, env=None, input=None):
    return subprocess.run([sys.executable, "-m", "streamgmm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env or _env(),
                          input=input)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if " ERROR " in ln or " CRITICAL " in ln]


def assert_one_line_failure(r, *names):
    """Exit 1, exactly one error line, naming every one of `names`, no traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    errs = error_lines(r.stderr)
    assert len(errs) == 1, errs
    for name in names:
        assert str(name) in errs[0], (name, errs[0])
    return errs[0]


def write_jsonl(path, n=100, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for x in rng.normal(size=(n, 2)):
            f.write(json.dumps({"a": float(x[0]), "b": float(x[1])}) + "\n")
    return path


def local_config(tmp_path, **sections):
    cfg = {"source": {"type": "file", "path": str(write_jsonl(tmp_path / "in.jsonl"))},
           "records": {"features": FEATURES2},
           "detector": {"n_components": 1, "max_components": 1, "warmup_records": 20},
           "metrics": {"enabled": False}, "logging": {"level": "INFO"}}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return write_yaml(tmp_path / "c.yaml", cfg)


# ------------------------------------------------------------------ start-up: files, outputs

def test_missing_source_file_is_one_line_exit_1(tmp_path):
    cfg = local_config(tmp_path, source={"path": str(tmp_path / "nope.jsonl")})
    r = streamgmm("run", "--config", cfg)
    assert_one_line_failure(r, "source.path", tmp_path / "nope.jsonl")


@pytest.mark.parametrize("key", ["sink", "dead_letter"])
def test_unwritable_sink_or_dead_letter_file_is_one_line_exit_1(tmp_path, key):
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "out.jsonl"  # a regular file where a directory should be
    cfg = local_config(tmp_path, **{key: {"type": "file", "path": str(bad)}})
    r = streamgmm("run", "--config", cfg)
    assert_one_line_failure(r, f"{key}.path", bad)


def test_unwritable_checkpoint_directory_is_found_before_any_record(tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "out.jsonl"
    cfg = local_config(tmp_path, checkpoint={"path": str(tmp_path / "a-file" / "ck.npz")},
                       sink={"type": "file", "path": str(out), "emit": "all"})
    r = streamgmm("run", "--config", cfg)
    assert_one_line_failure(r, "checkpoint.path", tmp_path / "a-file")
    assert not out.exists() or out.stat().st_size == 0  # nothing was processed


def test_check_config_runs_the_start_up_checks(tmp_path):
    cfg = local_config(tmp_path, source={"path": str(tmp_path / "nope.jsonl")})
    r = streamgmm("check-config", "-q", cfg)
    assert r.returncode == 1 and "source.path" in r.stderr and "nope.jsonl" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert streamgmm("check-config", "-q", "--offline", cfg).returncode == 0
    good = local_config(tmp_path)
    r = streamgmm("check-config", "-q", good)
    assert r.returncode == 0, r.stderr


def test_check_config_finds_a_taken_metrics_port_as_run_does(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = local_config(tmp_path, metrics={"enabled": True, "host": "127.0.0.1",
                                              "port": port})
        r = streamgmm("check-config", "-q", cfg)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"metrics.port: cannot serve metrics on 127.0.0.1:{port}" in r.stderr
        r = streamgmm("run", "--config", cfg)
        assert_one_line_failure(r, "metrics.port", f"127.0.0.1:{port}")
    cfg = local_config(tmp_path, metrics={"enabled": True, "host": "no.such.host.invalid",
                                          "port": port})
    r = streamgmm("check-config", "-q", cfg)
    assert r.returncode == 1 and "metrics.host" in r.stderr


def test_check_config_loads_the_model_the_daemon_would_start_from(tmp_path):
    """A model trained on other features and a damaged checkpoint fail check-config as they
    fail the daemon's start, one line naming the key."""
    from streamgmm import Detector

    X = np.random.default_rng(0).normal(size=(300, 2))
    model = tmp_path / "other.npz"
    det = Detector({"n_components": 1}, feature_names=["x", "y"], background_refit=False)
    det.fit(X)
    det.save(model)
    cfg = local_config(tmp_path, model={"path": str(model)})
    for cmd in (("check-config", "-q", cfg), ("run", "--config", cfg)):
        r = streamgmm(*cmd)
        assert r.returncode == 1 and str(model) in r.stderr, r.stderr
        assert "['x', 'y']" in r.stderr and "Traceback" not in r.stderr
    ck = tmp_path / "ck.npz"
    ck.write_bytes(model.read_bytes()[:-200])  # a checkpoint cut short
    cfg = local_config(tmp_path, checkpoint={"path": str(ck)})
    r = streamgmm("check-config", "-q", cfg)
    assert r.returncode == 1 and "checkpoint.path" in r.stderr and str(ck) in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    good = tmp_path / "good.npz"
    det = Detector({"n_components": 1}, feature_names=FEATURES2, background_refit=False)
    det.fit(X)
    det.save(good)
    r = streamgmm("check-config", "-q", local_config(tmp_path, model={"path": str(good)}))
    assert r.returncode == 0, r.stderr


def test_a_warm_up_too_small_for_the_features_is_warned_about(tmp_path):
    # 13 features and the auto ensemble: 100 records needed (100 / percentile; 4 d = 52)
    feats = [f"f{i}" for i in range(13)]
    base = {"records": {"features": feats}, "metrics": {"enabled": False},
            "source": {"type": "file", "path": str(write_jsonl(tmp_path / "in.jsonl"))}}
    small = write_yaml(tmp_path / "small.yaml", {**base, "detector": {"warmup_records": 30}})
    r = streamgmm("check-config", "-q", "--offline", small)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "detector.warmup_records: 30" in warn[0], r.stderr
    assert "the 100 a model of 13 features needs" in warn[0]
    enough = write_yaml(tmp_path / "ok.yaml", {**base, "detector": {"warmup_records": 100}})
    r = streamgmm("check-config", "-q", "--offline", enough)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    # the daemon logs the same line at start-up (the records here lack the features: all
    # go to the dead letter, which is beside the point)
    r = streamgmm("run", "--config", small)
    assert "detector.warmup_records: 30 records are fewer than the 100" in r.stderr


def test_check_config_checks_the_kafka_cluster(tmp_path):
    port = free_port()
    cfg = write_yaml(tmp_path / "k.yaml", {
        "records": {"features": FEATURES2},
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{port}"], "connect_timeout_seconds": 2}})
    t0 = time.monotonic()
    r = streamgmm("check-config", "-q", cfg)
    assert r.returncode == 1 and f"127.0.0.1:{port}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and time.monotonic() - t0 < 30


def test_check_config_reaches_a_live_cluster(tmp_path, bootstrap):
    cfg = write_yaml(tmp_path / "k.yaml", {
        "records": {"features": FEATURES2},
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [unique("in")]}})
    r = streamgmm("check-config", "-q", cfg)
    assert r.returncode == 0, r.stderr
    assert "reachable" in r.stderr and "does not exist" in r.stderr  # topics: warnings only


def test_file_source_without_output_sections_writes_to_stdout(tmp_path):
    cfg = local_config(tmp_path)
    raw = yaml.safe_load(Path(cfg).read_text())
    assert "sink" not in raw and "dead_letter" not in raw
    t0 = time.monotonic()
    r = streamgmm("run", "--config", cfg, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    assert "9092" not in r.stderr and "sink stdout, dead letters stdout" in r.stderr
    from streamgmm.service.config import load_config
    c = load_config(cfg, environ={})
    assert (c.sink.type, c.dead_letter.type) == ("stdout", "stdout")
    # a Kafka source keeps the Kafka defaults; an explicit type is kept
    c = load_config(write_yaml(tmp_path / "k.yaml", {"records": {"features": ["a"]}}), environ={})
    assert (c.sink.type, c.dead_letter.type) == ("kafka", "kafka")


# ----------------------------------------------------------------------- start-up: Kafka down

def _kafka_cfg(tmp_path, bootstrap, **kafka):
    return write_yaml(tmp_path / "kafka.yaml", {
        "records": {"features": FEATURES2},
        "kafka": {"bootstrap_servers": [bootstrap], "topics": ["in"], **kafka},
        "sink": {"type": "kafka"}, "dead_letter": {"type": "kafka"},
        "metrics": {"enabled": False}, "logging": {"level": "INFO"}})


def test_unreachable_bootstrap_is_one_line_naming_the_address_after_the_timeout(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    cfg = _kafka_cfg(tmp_path, addr, connect_timeout_seconds=4)
    t0 = time.monotonic()
    r = streamgmm("run", "--config", cfg, timeout=60)
    took = time.monotonic() - t0
    line = assert_one_line_failure(r, addr, "kafka.connect_timeout_seconds")
    assert "streamgmm" in line
    assert 3.5 < took < 20, took
    # the client's own lines are rate-limited, the daemon's state lines are few
    client = [ln for ln in r.stderr.splitlines() if " kafka." in ln]
    assert len(client) <= 10, client


def test_sigterm_while_connecting_exits_0_at_once_and_readyz_is_503(tmp_path):
    port = free_port()
    addr = f"127.0.0.1:{free_port()}"
    cfg = write_yaml(tmp_path / "kafka.yaml", {
        "records": {"features": FEATURES2},
        "kafka": {"bootstrap_servers": [addr], "topics": ["in"],
                  "connect_timeout_seconds": None},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": port},
        "logging": {"level": "INFO"}})
    d = DaemonProcess(cfg, str(tmp_path / "d.log"))
    try:
        wait_for(lambda: "not reachable" in d.log_text(), 30, what="a failed connect")
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and json.loads(body)["kafka"] == "connecting"
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(10) == 0, d.log_text()
        assert time.monotonic() - t0 < 3
        text = d.log_text()
        assert "Traceback" not in text and "finishing the batch" not in text
    finally:
        d.kill()


def test_sigterm_during_warm_up_exits_0_promptly(tmp_path):
    """A followed file with fewer records than warm-up needs: the daemon waits; SIGTERM."""
    port = free_port()
    cfg = local_config(tmp_path, source={"follow": True},
                       detector={"warmup_records": 1000},
                       metrics={"enabled": True, "host": "127.0.0.1", "port": port})
    d = DaemonProcess(cfg, str(tmp_path / "d.log"))
    try:
        wait_for(lambda: "daemon started" in d.log_text(), 30, what="the daemon up")
        time.sleep(1.0)
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503  # still warming up
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(10) == 0, d.log_text()
        assert time.monotonic() - t0 < 3
        assert "100 records still in warm-up" in d.log_text()
    finally:
        d.kill()


def test_sigterm_during_a_refit_exits_0_promptly_and_loses_nothing(tmp_path):
    """A followed file whose mean shifts after warm-up: drift, then a refit long enough (12
    full components in 16 features on 5,500 records, held-out folds: ~10-25 s here) to be
    running when the input has been read. SIGTERM then exits 0 within seconds (the shutdown
    waits at most 0.5 s for a refit), and every record read has its event, once."""
    d_feat, warm, ref, shifted = 16, 500, 2000, 7000  # ref: the drift tests' reference
    feats = [f"f{j}" for j in range(d_feat)]
    rng = np.random.default_rng(5)
    X = rng.normal(size=(warm + ref + shifted, d_feat))
    X[warm + ref:] += 3.0
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with open(src, "w") as f:
        for x in X:
            f.write(json.dumps(dict(zip(feats, map(float, x)))) + "\n")
    cfg = write_yaml(tmp_path / "c.yaml", {
        "source": {"type": "file", "path": str(src), "follow": True},
        "records": {"features": feats},
        "sink": {"type": "file", "path": str(out), "emit": "all"},
        "dead_letter": {"type": "file", "path": str(tmp_path / "dlq.jsonl")},
        "detector": {"n_components": 12, "max_components": 12, "warmup_records": warm,
                     "refit": {"min_records": 5000, "max_pending_records": 100_000}},
        "metrics": {"enabled": False}, "logging": {"level": "INFO"}})
    d = DaemonProcess(cfg, str(tmp_path / "d.log"))

    def events() -> int:
        return out.read_text().count("\n") if out.exists() else 0
    try:
        wait_for(lambda: "refit_started" in d.log_text(), 120, what="a refit started")
        wait_for(lambda: events() == len(X), 60, what="every record scored")
        assert "refit_done" not in d.log_text()  # still running (it takes many seconds)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(10) == 0, d.log_text()
        elapsed = time.monotonic() - t0
    finally:
        d.kill()
    text = d.log_text()
    assert elapsed < 3, (elapsed, text[-2000:])
    assert "Traceback" not in text and "refit_done" not in text
    assert "drift detected" in text
    offsets = sorted(json.loads(line)["offset"] for line in out.read_text().splitlines())
    assert offsets == list(range(len(X)))  # every record once: nothing lost


# --------------------------------------------------------- broker outage, restart, fatal producer

def test_broker_restart_outage_lines_readiness_producer_rebuilt_nothing_lost(tmp_path):
    """Our own broker: stop it (outage: one line, /readyz 503, client noise limited), start a
    new one on the same port (memory storage: topics, offsets and producer state are gone, so
    the daemon's idempotent producer fails fatally), then every record sent to the new broker
    gets its event, the offsets are committed after them, and SIGTERM during a second outage
    exits 0 promptly."""
    binary = broker_binary()
    port = free_port()
    broker = start_broker(binary, str(tmp_path / "broker.log"), port=port)
    bs = broker.bootstrap
    topic, out, dlq, group = "in-" + unique("t"), "out-" + unique("t"), "dlq-" + unique("t"), \
        unique("g")
    create_topics(bs, [topic, out, dlq])
    mport = free_port()
    cfg = daemon_config(bs, topic, out, dlq, group, warmup=200, metrics_port=mport,
                        emit="all", kafka={"consumer": {"fetch_max_wait_ms": 50}})
    cfg["logging"] = {"level": "INFO"}
    d = DaemonProcess(write_yaml(tmp_path / "c.yaml", cfg), str(tmp_path / "d.log"))
    ready = lambda: http_get(f"http://127.0.0.1:{mport}/readyz")[0]  # noqa: E731
    try:
        rows = mixture_rows(300, seed=3)
        produce(bs, topic, [to_record(i, x) for i, x in enumerate(rows)])
        assert len(read_topic(bs, out, min_records=300, timeout=90)) >= 300
        wait_for(lambda: ready() == 200, 30, what="ready")

        # --- outage
        broker.stop()
        t_down = time.monotonic()
        wait_for(lambda: "unreachable" in d.log_text(), 30, what="the outage line")
        assert ready() == 503
        assert http_get(f"http://127.0.0.1:{mport}/healthz")[0] == 200
        time.sleep(max(0.0, 20 - (time.monotonic() - t_down)))
        outage_log = d.log_text()
        client = [ln for ln in outage_log.splitlines() if " kafka." in ln]
        assert len(client) <= 25, f"{len(client)} client lines in 20s of outage"
        assert outage_log.count("unreachable: the client keeps reconnecting") == 1

        # --- a new broker on the same address, empty
        broker = start_broker(binary, str(tmp_path / "broker.log"), port=port)
        create_topics(bs, [topic, out, dlq])
        new = mixture_rows(100, seed=4)
        ids = {f"r{1000 + i}" for i in range(100)}
        produce(bs, topic, [to_record(1000 + i, x) for i, x in enumerate(new)])
        events = read_topic(bs, out, min_records=100, timeout=120, quiet=3)
        got = {json.loads(e.value)["key"] for e in events}
        assert ids <= got, f"lost {len(ids - got)} records"
        wait_for(lambda: ready() == 200, 60, what="ready again")
        text = d.log_text()
        assert "reachable again" in text
        assert "rebuilding the producer" in text and "acknowledged again" in text
        assert "Traceback" not in text
        wait_for(lambda: sum(committed_offsets(bs, group).values()) == 100, 60,
                 what="offsets committed after the outputs")
        assert d.proc.poll() is None

        # --- SIGTERM while the broker is down: exit 0, promptly
        broker.stop()
        wait_for(lambda: d.log_text().count("unreachable: the client") == 2, 30,
                 what="the second outage line")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(15) == 0, d.log_text()[-3000:]
        assert time.monotonic() - t0 < 8
        assert "Traceback" not in d.log_text()
    finally:
        d.kill()
        broker.stop()


# ------------------------------------------------------------------ producer link (no broker)

class _Future:
    def __init__(self, error=None):
        self.error = error

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)


class _FakeProducer:
    def __init__(self, fail: bool, log: list, **kw):
        self.fail, self.log, self.kw, self.config = fail, log, kw, {"api_version": (3, 9)}

    def send(self, topic, value=None, key=None, headers=None):
        if self.fail:
            from kafka.errors import OutOfOrderSequenceNumberError
            return _Future(OutOfOrderSequenceNumberError("fatal"))
        self.log.append((topic, value))
        return _Future()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_producer_link_rebuilds_a_fatal_producer_and_resends_every_unacked_output():
    from streamgmm.service.kafka_io import KafkaSink, ProducerFailed, ProducerLink

    delivered: list = []
    made = []

    def factory(**kw):
        p = _FakeProducer(fail=not made, log=delivered, **kw)  # the first one fails
        made.append(p)
        return p

    link = ProducerLink(None, factory=factory)
    events, dead = KafkaSink(None, "out", producer=link), KafkaSink(None, "dlq", producer=link)
    for i in range(5):
        events.send_event({"i": i})
    with pytest.raises(ProducerFailed, match="OutOfOrderSequenceNumber"):
        events.flush(1)
    assert link.unacked == 5 and delivered == []
    link.rebuild()
    assert made[1].kw == {"api_version": (3, 9)}  # no wait for the cluster to build it
    from streamgmm.service.messages import SourceRecord
    dead.send_dead_letter(SourceRecord(b"x", "in", 0, 7), "invalid_json", "bad", "X", "g")
    events.flush(1)
    assert [t for t, _ in delivered] == ["out"] * 5 + ["dlq"]
    assert [json.loads(v)["i"] for t, v in delivered if t == "out"] == [0, 1, 2, 3, 4]
    assert link.unacked == 0 and link.rebuilds == 1


@pytest.mark.parametrize("key, value, headers", [
    (b"k" * 40_000, b"not json", []),                          # a huge key
    (None, b"not json", [("h", b"v" * 40_000)]),                # huge headers
    (None, b"x" * 40_000, [(f"h{i % 10}", b"") for i in range(3000)]),  # many tiny headers
    (b"k" * 40_000, None, []),                                 # a tombstone with a huge key
    (b"k" * 40_000, b"y" * 40_000, [("a", b"b" * 40_000), ("n", None)]),
], ids=["key", "headers", "many-headers", "tombstone", "everything"])
def test_every_dead_letter_fits_the_producers_max_request_size(key, value, headers):
    """kafka-python refuses a record over max_request_size for good (and a null header value
    always): whatever the input record holds, its dead letter is cut to what it accepts,
    the streamgmm headers kept."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from streamgmm.service.kafka_io import KafkaSink, ProducerLink
    from streamgmm.service.messages import SourceRecord

    sent: list = []

    class Checking(_FakeProducer):
        def send(self, topic, value=None, key=None, headers=None):
            assert all(isinstance(v, bytes) for _, v in headers)  # kafka-python's own check
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            assert size <= self.config["max_request_size"]
            sent.append((key, value, dict(headers)))
            return _Future()

    p = Checking(False, [])
    p.config["max_request_size"] = 16_384
    dead = KafkaSink(None, "dlq", producer=ProducerLink(None, factory=lambda **kw: p))
    dead.send_dead_letter(SourceRecord(value, "in", 3, 7, key=key, headers=list(headers)),
                          "invalid_json", "bad", "X", "g")
    [(k, v, h)] = sent
    P = "__streamgmm.errors."
    assert (h[P + "topic"], h[P + "partition"], h[P + "offset"]) == (b"in", b"3", b"7")
    assert h[P + "reason"] == b"invalid_json"
    if value is None:
        assert v is None
    else:
        assert value.startswith(v) and len(v) > 0
        assert (P + "value.truncated" in h) == (len(v) < len(value))
    if key is not None:
        assert key.startswith(k) and (P + "key.truncated" in h) == (len(k) < len(key))


def test_a_dead_letter_the_broker_refuses_as_too_large_is_cut_until_it_is_taken():
    """A dead-letter topic whose max.message.bytes is below the producer's max_request_size
    (Apache Kafka answers MESSAGE_TOO_LARGE; the test broker does not enforce the limit, so
    a fake producer plays the broker): the refused dead letter is cut, not retried whole for
    ever holding up every output after it, and the topic's next big one is cut at once."""
    from kafka.errors import MessageSizeTooLargeError

    from streamgmm.service.kafka_io import KafkaSink, ProducerFailed, ProducerLink
    from streamgmm.service.kafka_io.producer import record_size
    from streamgmm.service.messages import SourceRecord

    delivered: list = []
    refused = [0]

    class Broker(_FakeProducer):  # the dlq topic takes at most 20,000 bytes
        def send(self, topic, value=None, key=None, headers=None):
            if topic == "dlq" and record_size(key, value, headers or ()) > 20_000:
                refused[0] += 1
                return _Future(MessageSizeTooLargeError("MESSAGE_TOO_LARGE"))
            delivered.append((topic, key, value, dict(headers or ())))
            return _Future()

    link = ProducerLink(None, factory=lambda **kw: Broker(False, []))
    events, dead = KafkaSink(None, "out", producer=link), KafkaSink(None, "dlq", producer=link)
    events.send_event({"i": 0})
    dead.send_dead_letter(SourceRecord(b"v" * 60_000, "in", 0, 7, key=b"k"), "too_large",
                          "big", "X", "g")
    events.send_event({"i": 1})
    rounds = 0
    while True:
        try:
            link.flush(1)
            break
        except ProducerFailed as exc:
            assert "MessageSizeTooLarge" in str(exc)
            rounds += 1
            assert rounds <= 3, "still refused after three rebuilds"
            link.rebuild()
    P = "__streamgmm.errors."
    [(_, key, value, hdrs)] = [d for d in delivered if d[0] == "dlq"]
    assert key == b"k" and b"v" * 5_000 in value and len(value) < 20_000
    assert hdrs[P + "value.truncated"] == b"60000" and hdrs[P + "offset"] == b"7"
    assert [json.loads(v)["i"] for t, _, v, _ in delivered if t == "out"][-2:] == [0, 1]
    assert 0 < link.topic_limits["dlq"] <= 20_000 and "out" not in link.topic_limits
    before = refused[0]
    dead.send_dead_letter(SourceRecord(b"w" * 50_000, "in", 0, 8), "too_large", "big", "X",
                          "g")
    link.flush(1)  # cut before it is sent: no refusal, no rebuild
    assert refused[0] == before and delivered[-1][3][P + "offset"] == b"8"


def test_a_replayed_dead_letter_gets_one_set_of_error_headers():
    """A dead letter replayed into the input (after fixing its producer) that fails again
    carries the new failure's `__streamgmm.errors.*` headers once each, not both sets; its
    own headers are kept, and when they must go for size only they are counted."""
    from streamgmm.service.kafka_io import KafkaSink, ProducerLink
    from streamgmm.service.messages import SourceRecord

    sent: list = []

    class Recording(_FakeProducer):
        def send(self, topic, value=None, key=None, headers=None):
            sent.append((key, value, list(headers)))
            return _Future()

    P = "__streamgmm.errors."
    earlier = [("trace", b"t-1"), (P + "topic", b"in"), (P + "offset", b"3"),
               (P + "reason", b"non_numeric"), (P + "message", b"old")]
    p = Recording(False, [])
    p.config["max_request_size"] = 16_384
    dead = KafkaSink(None, "dlq", producer=ProducerLink(None, factory=lambda **kw: p))
    dead.send_dead_letter(SourceRecord(b"not json", "replayed", 0, 41, headers=earlier),
                          "invalid_json", "bad", "X", "g")
    dead.send_dead_letter(SourceRecord(b"x" * 40_000, "replayed", 0, 42,
                                       headers=earlier + [("big", b"b" * 20_000)]),
                          "invalid_json", "bad", "X", "g")
    (_, _, h1), (_, v2, h2) = sent
    names = [k for k, _ in h1]
    assert len(names) == len(set(names)), names
    h1 = dict(h1)
    assert (h1[P + "topic"], h1[P + "offset"], h1[P + "reason"]) == (b"replayed", b"41",
                                                                       b"invalid_json")
    assert h1["trace"] == b"t-1"
    h2 = dict(h2)
    assert h2[P + "headers.dropped"] == b"2" and "trace" not in h2 and len(v2) < 40_000
    assert (h2[P + "offset"], h2[P + "reason"]) == (b"42", b"invalid_json")


# --------------------------------------------------------------------- client log rate limit

def test_client_log_limiter_passes_the_first_then_a_summary():
    from streamgmm.service.runtime.logs import ClientLogLimiter

    now = [0.0]
    lim = ClientLogLimiter(interval=60, budget=10, clock=lambda: now[0])

    def rec(name, msg, *args):
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)

    passed = []
    for i in range(600):  # ten minutes of a reconnect line every second, from two loggers
        now[0] = float(i)
        for r in (rec("kafka.net.manager", "Connection to node %d failed: %s", i, "refused"),
                  rec("kafka.cluster", f"Metadata refresh failed after {i} ms")):
            if lim.filter(r):
                passed.append(r.getMessage())
        if i % 100 == 0:
            assert lim.filter(rec("streamgmm.daemon", "state line"))  # never limited
    assert 10 <= len(passed) <= 22, len(passed)
    assert "similar Kafka client messages suppressed" in passed[2]
    assert passed[0].startswith("Connection to node 0 failed")
    # a client line with a traceback is cut to one line
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except OSError:
        r = logging.LogRecord("kafka.net.transport", logging.ERROR, __file__, 1,
                              "Error receiving network data", None, sys.exc_info())
    assert lim.filter(r) and r.exc_info is None
    assert r.getMessage() == ("Error receiving network data: ConnectionResetError: "
                              "[Errno 104] Connection reset by peer")


# ------------------------------------------------------------------------- fit / score / models

def test_fit_refuses_too_few_rows_and_says_how_many(tmp_path):
    from streamgmm.detection.sizing import min_training_records

    cfg = write_yaml(tmp_path / "c.yaml", {"records": {"features": FEATURES2}})
    data = write_jsonl(tmp_path / "three.jsonl", n=3)
    r = streamgmm("fit", "-c", cfg, "-i", data, "-o", tmp_path / "m.npz")
    auto = {"n_components": "auto", "max_components": 8, "covariance_type": "full",
            "threshold": {"percentile": 1.0}}
    need = min_training_records(auto, 2)
    assert need == 100  # 100 / percentile: more than 4 d
    # the auto ensemble: twice the free parameters of its simplest member, one diagonal
    # Gaussian (2 d), once that exceeds 100 / percentile
    assert min_training_records(auto, 5) == 100
    assert min_training_records(auto, 64) == 4 * 64
    # a fixed size: twice the mixture's free parameters (8 full components of 5 features:
    # 15 covariance entries, 5 means each, 7 free weights)
    assert min_training_records(dict(auto, n_components=8), 5) == 2 * (8 * 15 + 8 * 5 + 7)
    assert r.returncode == 1 and f"at least {need}" in r.stderr and "3 valid" in r.stderr
    assert not (tmp_path / "m.npz").exists()
    assert min_training_records({"n_components": 1, "covariance_type": "full",
                                 "threshold": {"percentile": 0.5}}, 2) == 200  # 100/percentile
    ok = write_jsonl(tmp_path / "ok.jsonl", n=need)
    r = streamgmm("fit", "-c", cfg, "-i", ok, "-o", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    cfg = write_yaml(d / "c.yaml", {"records": {"features": FEATURES2},
                                    "detector": {"n_components": 1}})
    r = streamgmm("fit", "-c", cfg, "-i", write_jsonl(d / "train.jsonl", n=500),
                  "-o", d / "m.npz")
    assert r.returncode == 0, r.stderr
    return d / "m.npz"


def test_score_exits_1_when_nothing_could_be_scored_and_hints_at_format(tmp_path, model):
    csv = tmp_path / "data.txt"  # a CSV file that the default format reads as JSON lines
    csv.write_text("a,b\n1,2\n3,4\n")
    r = streamgmm("score", "-m", model, "-i", csv, "-o", tmp_path / "o.jsonl")
    assert r.returncode == 1 and "--format csv" in r.stderr and "Traceback" not in r.stderr
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"x": 1}\n{"y": 2}\n')
    r = streamgmm("score", "-m", model, "-i", wrong, "-o", tmp_path / "o.jsonl")
    assert r.returncode == 1 and "none of the 2 records" in r.stderr
    assert "--format" not in r.stderr
    r = streamgmm("score", "-m", model, "-i", csv, "-o", tmp_path / "o.jsonl", "--format", "csv")
    assert r.returncode == 0, r.stderr


def test_model_files_are_identified_by_their_magic_bytes(tmp_path, model):
    import joblib

    from streamgmm.persistence import identify

    files = {
        "empty.npz": b"",
        "doc.joblib": b'{"weights": [1]}',
        "rows.npz": b'{"a": 1}\n{"a": 2}\n',
        "data.joblib": b"a,b\n1,2\n",
        "notes.npz": b"just some notes",
        "config.npz": b"records:\n  features: [a]\n",
        "bin.npz": bytes(range(256)) * 4,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "arr.npy", np.zeros(3))
    joblib.dump({"x": 1}, tmp_path / "plain.pkl")
    for comp in ("zlib", "gzip", "bz2", "xz", "lzma"):
        joblib.dump({"x": 1}, tmp_path / f"c-{comp}.bin", compress=(comp, 3))
    expect = {"empty.npz": "empty", "doc.joblib": "json", "rows.npz": "json",
              "data.joblib": "csv", "notes.npz": "text", "config.npz": "yaml",
              "bin.npz": "binary", "arr.npy": "npy", "plain.pkl": "pickle",
              "c-zlib.bin": "joblib", "c-gzip.bin": "joblib", "c-bz2.bin": "joblib",
              "c-xz.bin": "joblib", "c-lzma.bin": "joblib"}
    for name, kind in expect.items():
        assert identify(tmp_path / name)[0] == kind, name
    assert identify(model)[0] == "zip"
    assert identify(tmp_path / "absent")[0] == "missing"
    # the CLI says what a non-model is and does not push towards --trusted
    for name in ("empty.npz", "doc.joblib", "data.joblib", "arr.npy"):
        r = streamgmm("inspect", tmp_path / name)
        assert r.returncode == 1 and "--trusted" not in r.stderr, (name, r.stderr)
        assert identify(tmp_path / name)[1] in r.stderr
    for name in ("plain.pkl", "c-gzip.bin"):
        r = streamgmm("inspect", tmp_path / name)
        assert r.returncode == 2 and "--trusted" in r.stderr, (name, r.stderr)
    # the library and the daemon's model.path say the same
    from streamgmm import Detector
    from streamgmm.persistence import CheckpointError
    with pytest.raises(CheckpointError, match="JSON document"):
        Detector.load(tmp_path / "doc.joblib", trusted=True)
    cfg = local_config(tmp_path, model={"path": str(tmp_path / "data.joblib"), "trusted": True})
    r = streamgmm("run", "--config", cfg)
    assert_one_line_failure(r, "model.path", "CSV")
    # by content, not by name: an untrusted .joblib that is CSV is not sent towards trust,
    # a real pickle is refused without model.trusted, an .npz model named .joblib is fine
    cfg = local_config(tmp_path, model={"path": str(tmp_path / "data.joblib")})
    r = streamgmm("check-config", "--quiet", cfg)
    assert r.returncode == 1 and "CSV" in r.stderr and "trusted" not in r.stderr, r.stderr
    cfg = local_config(tmp_path, model={"path": str(tmp_path / "plain.pkl")})
    r = streamgmm("check-config", "--quiet", cfg)
    assert r.returncode == 1 and "model.trusted" in r.stderr, r.stderr
    (tmp_path / "real.joblib").write_bytes(model.read_bytes())
    cfg = local_config(tmp_path, model={"path": str(tmp_path / "real.joblib")})
    r = streamgmm("check-config", "--quiet", cfg)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------ env override errors

def test_a_bad_env_override_names_the_variable(tmp_path):
    from streamgmm.service.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="STREAMGMM__KAFKA__MAX_POLL_RECORDS"):
        config_from_dict({"records": {"features": ["a"]}},
                         environ={"STREAMGMM__KAFKA__MAX_POLL_RECORDS": "lots"})
    with pytest.raises(ConfigError, match=r"kafka.topics\[0\].*STREAMGMM__KAFKA__TOPICS"):
        config_from_dict({"records": {"features": ["a"]}},
                         environ={"STREAMGMM__KAFKA__TOPICS": "[1]"})
    # a bad value in the file does not mention any variable
    with pytest.raises(ConfigError) as err:
        config_from_dict({"records": {"features": ["a"]}, "kafka": {"max_poll_records": 0}},
                         environ={"STREAMGMM__KAFKA__GROUP_ID": "g"})
    assert "environment" not in str(err.value)
    cfg = write_yaml(tmp_path / "c.yaml", {"records": {"features": ["a"]}})
    r = streamgmm("check-config", cfg, env=_env(STREAMGMM__DETECTOR__THRESHOLD__PERCENTILE="90"))
    assert r.returncode == 2 and "STREAMGMM__DETECTOR__THRESHOLD__PERCENTILE" in r.stderr


# -------------------------------------------------------------------- over-long lines, memory

def test_bounded_line_reader_keeps_a_prefix_and_the_size():
    from streamgmm.service.local_io.files import BoundedLineReader

    data = b"short\n" + b"x" * 100_000 + b"\n" + b"y" * 10 + b"\n" + b"z" * 11 + b"\n" + b"end"
    r = BoundedLineReader(io.BytesIO(data), max_bytes=10)
    got = list(iter(r.read, None))
    assert got == [(b"short\n", 6), (b"x" * 11, 100_001), (b"y" * 10 + b"\n", 11),
                   (b"z" * 11 + b"\n", 12), (b"end", 3)]


def test_bounded_line_reader_hands_over_an_unfinished_line_once():
    """Following, a last line without its newline is held back (its writer may finish it);
    take_partial hands it over once, for a file given up on."""
    from streamgmm.service.local_io.files import BoundedLineReader

    r = BoundedLineReader(io.BytesIO(b"done\nhalf"), follow=True)
    assert r.read() == (b"done\n", 5) and r.read() is None
    assert r.take_partial() == b"half" and r.take_partial() == b""
    assert r.read() is None


def test_stdin_source_cuts_an_over_long_line():
    from streamgmm.service.local_io import StdinSource

    stream = io.BytesIO(b'{"a": 1, "b": 2}\n{"a": "' + b"x" * 5000 + b'"}\n{"a": 3, "b": 4}\n')
    src = StdinSource("jsonl", stream=stream, max_bytes=100)
    recs = []
    deadline = time.monotonic() + 10
    while not src.exhausted and time.monotonic() < deadline:
        recs.extend(src.poll(100, 100).records)
    assert len(recs) == 3
    assert recs[1].line_size == 5000 + 10 and len(recs[1].value) == 101
    assert recs[0].line_size is None and recs[2].value == b'{"a": 3, "b": 4}'


_HWM = """
import sys
from streamgmm.service.runtime.daemon import main
if __name__ == "__main__":
    code = main(["--config", sys.argv[1]])
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print("HWM_KB", hwm, file=sys.stderr)
    sys.exit(code)
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_50_mb_line_is_a_dead_letter_with_flat_memory(tmp_path, fmt):
    line_mb = 50
    big = tmp_path / f"big.{fmt}"
    small = tmp_path / f"small.{fmt}"
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(80, 2))

    def write(path, with_big):
        with open(path, "wb") as f:
            if fmt == "csv":
                f.write(b"a,b\n")
            for i, (a, b) in enumerate(rows):
                if with_big and i == 40:
                    if fmt == "csv":
                        f.write(b"1," + b"9" * (line_mb << 20) + b"\n")
                    else:
                        f.write(b'{"a": "' + b"x" * (line_mb << 20) + b'"}\n')
                f.write((f"{a},{b}\n" if fmt == "csv"
                         else json.dumps({"a": a, "b": b}) + "\n").encode())
    write(big, True)
    write(small, False)
    script = tmp_path / "hwm.py"
    script.write_text(_HWM)
    peaks = {}
    for name, path in (("big", big), ("small", small)):
        dlq = tmp_path / f"dlq-{name}.jsonl"
        cfg = write_yaml(tmp_path / f"{name}.yaml", {
            "source": {"type": "file", "path": str(path)},
            "records": {"features": FEATURES2},
            "sink": {"type": "file", "path": str(tmp_path / f"out-{name}.jsonl"), "emit": "all"},
            "dead_letter": {"type": "file", "path": str(dlq)},
            "detector": {"n_components": 1, "max_components": 1, "warmup_records": 20},
            "metrics": {"enabled": False}})
        r = subprocess.run([sys.executable, str(script), cfg], capture_output=True, text=True,
                           timeout=300, env=_env(STREAMGMM_DECODE_WORKER="0"))
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[name] = int(r.stderr.split("HWM_KB")[1].split()[0]) * 1024
    assert peaks["big"] - peaks["small"] < 15 << 20, peaks  # the line is 50 MB
    letters = [json.loads(ln) for ln in open(tmp_path / "dlq-big.jsonl")]
    assert len(letters) == 1 and letters[0]["reason"] == "too_large"
    assert len(letters[0]["value"]) == 1048577
    assert str((line_mb << 20) + (3 if fmt == "csv" else 10)) in letters[0]["message"]
    scored = sum(1 for _ in open(tmp_path / "out-big.jsonl"))
    assert scored == 80  # every other line scored


def test_lag_follows_the_brokers_while_outputs_are_held_up(bootstrap, make_topics):
    """Outputs that cannot be sent (here: every event is larger than the producer's
    max_request_size, so each send fails) hold the loop in its flush, so it polls nothing;
    the lag gauge still follows the brokers' end offsets, so that StreamgmmStalled (nothing
    scored while the lag grows) can fire."""
    src, out, dlq = make_topics("held-in", "held-out", "held-dlq")
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-held"), warmup=100,
                        metrics_port=port, emit="all",
                        kafka={"producer": {"max_request_size": 100}})
    d = DaemonThread(cfg).start()

    def lag():
        return sum(v for (name, _), v in scrape(port)[1].items()
                   if name == "streamgmm_consumer_lag_records")
    try:
        rows = mixture_rows(500, seed=8)
        produce(bootstrap, src, [to_record(i, x) for i, x in enumerate(rows[:200])],
                one_per_batch=True)
        wait_for(lambda: d.daemon._outputs_blocked, 60, what="outputs held up")
        scored = metric(scrape(port)[1], "streamgmm_records_processed_total")
        produce(bootstrap, src, [to_record(i, x) for i, x in enumerate(rows[200:], 200)],
                one_per_batch=True)  # (the test broker under-reports a batch's end offset)
        wait_for(lambda: lag() >= 300, 60, what="the lag of the 300 records sent since")
        assert metric(scrape(port)[1], "streamgmm_records_processed_total") == scored
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503
    finally:
        assert d.stop() == 0


class _AckedFuture(_Future):
    def add_callback(self, fn):
        if self.error is None:
            fn(None)


class _FleetFakeProducer(_FakeProducer):
    def send(self, topic, value=None, key=None, headers=None):
        fut = super().send(topic, value=value, key=key, headers=headers)
        return _AckedFuture(fut.error)


def test_fleet_sync_rebuilds_a_fatal_coordination_producer_and_counts_only_acked_syncs(
        caplog):
    """The fleet's coordination producer is a ProducerLink: after a fatal send error the next
    sync rebuilds it (nothing replayed: a newer sync supersedes the lost one), and
    `published` counts acknowledged syncs only."""
    from streamgmm import Detector
    from streamgmm.service.config import config_from_dict, detector_dict
    from streamgmm.service.fleet.fleet import Fleet
    from streamgmm.service.kafka_io import ProducerLink

    raw = daemon_config("127.0.0.1:9", "in", "out", "dlq", "g", warmup=50,
                        fleet={"enabled": True, "topic": "coord"})
    raw["checkpoint"] = {"store": "kafka", "topic": "state"}
    cfg = config_from_dict(raw)
    store = type("Store", (), {"topic": "state"})()  # not read: no tail is started here
    fl = Fleet(cfg, store, Detector, detector_dict(cfg))
    sent: list = []
    made: list = []

    def factory(**kw):
        made.append(_FleetFakeProducer(fail=not made, log=sent, **kw))  # the first fails
        return made[-1]

    fl._link = ProducerLink(None, factory=factory)
    X = mixture_rows(40, seed=1)
    with caplog.at_level(logging.INFO, logger="streamgmm.fleet"):
        fl.det.process(X[:20])
        fl._send_sync()              # fails on the fatal producer: not counted
        assert fl.status.published == 0 and fl._link.failed and sent == []
        fl.det.process(X[20:])
        fl._send_sync()              # rebuilt first, then sent and acknowledged
    assert len(made) == 2 and fl._link.rebuilds == 1 and not fl._link.failed
    assert [t for t, _ in sent] == ["coord"] and fl.status.published == 1
    text = caplog.text
    assert text.count("sending statistics to coord failed") == 1
    assert "statistics reach the coordination topic again" in text
