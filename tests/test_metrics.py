"""Metrics and health endpoints: names/types/labels exactly as docs/architecture.md says,
promtool-clean exposition, batch histograms equal to prometheus-client's, probes over HTTP."""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from kafka_helpers import http_get, metric, parse_metrics, promtool_check
from streamgmm.service.fleet.status import FleetStatus
from streamgmm.service.runtime.health import Health, HealthServer, liveness_timeout
from streamgmm.service.runtime.metrics import BatchHistogram, DaemonMetrics, RatioWindow

ARCH = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _doc_table() -> dict:
    """{name: (type, {label names}, {label values listed})} from docs/architecture.md."""
    rows = {}
    for line in ARCH.read_text().splitlines():
        m = re.match(r"\|\s*`(streamgmm_[a-z_]+)`\s*\|\s*([a-z ()]+?)\s*\|\s*([^|]*)\|", line)
        if m:
            values = set(re.findall(r"`([a-z_]+)`", "".join(re.findall(r"\(.*?\)", m.group(3)))))
            labels = set(re.findall(r"`([a-z_]+)`", re.sub(r"\(.*?\)", "", m.group(3))))
            rows[m.group(1)] = (m.group(2).split()[0], labels, values)
    return rows


def _exposed(text: str) -> dict:
    """{name as exposed: (type, {label names})} from a text exposition."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    labels: dict = {n: set() for n in types}
    for name, lbls in re.findall(r"^([a-z_]+)\{([^}]*)\}", text, re.M):
        base = next((n for n in types if name == n or name in (n + "_bucket",)), None)
        if base:
            labels[base] |= {kv.split("=")[0] for kv in lbls.split(",") if kv} - {"le"}
    return {n: (t, labels[n]) for n, t in types.items()}


def _populated() -> DaemonMetrics:
    m = DaemonMetrics(ratio_window=100, target_ratio=0.01)
    m.observe_scored(np.array([-3.0, -80.0, 1.0]), [False, True, False], np.array([0.2, 1, 3]))
    m.observe_dead_letter("invalid_json")
    m.observe_event(SimpleNamespace(kind="drift", detector="score_cusum", detail={}))
    m.observe_event(SimpleNamespace(kind="refit_done", detector=None,
                                    detail={"duration_seconds": 1.5}))
    m.observe_event(SimpleNamespace(kind="refit_failed", detector=None, detail={}))
    m.observe_model(SimpleNamespace(threshold_=-12.5, ready=True, n_components=3,
                                    model_version=2))
    m.observe_checkpoint()
    m.set_lag({("events", 0): 5, ("events", 1): 0})
    m.batch_duration.observe(0.01)
    m.commit_failures.inc()
    m.rebalances.inc()
    m.ready.set(1)
    m.observe_fleet(FleetStatus(group="g", version=4, leader=True, sync_age=0.5, published=3,
                                merged=6, bytes={("coordination", "sent"): 900}, members=2))
    return m


def test_names_types_labels_match_the_architecture_doc():
    doc = _doc_table()
    assert len(doc) == 29  # 22 of every daemon + 7 of a fleet member
    exposed = _exposed(_populated().exposition().decode())
    assert set(exposed) == set(doc)
    for name, (typ, labels, _) in doc.items():
        assert exposed[name][0] == typ, name
        assert exposed[name][1] == labels, name


FLEET_FAMILIES = {"streamgmm_fleet_model_version", "streamgmm_fleet_leader",
                  "streamgmm_fleet_sync_age_seconds", "streamgmm_fleet_statistics_published_total",
                  "streamgmm_fleet_statistics_merged_total", "streamgmm_fleet_bytes_total",
                  "streamgmm_fleet_members"}


def test_fleet_metrics_are_the_documented_ones():
    assert {n for n in _doc_table() if n.startswith("streamgmm_fleet_")} == FLEET_FAMILIES


def test_documented_label_values_are_all_exported_from_the_start():
    m = parse_metrics(DaemonMetrics().exposition().decode())
    for name, (_, labels, values) in _doc_table().items():
        if not values:
            continue
        (label,) = labels
        got = {dict(lbl)[label] for (n, lbl) in m if n == name}
        assert got == values, (name, got, values)


def test_promtool_check_metrics_is_silent():
    text = _populated().exposition().decode()
    rc, out = promtool_check(text)
    assert rc == 0 and out.strip() == "", out
    # and on a fresh registry (nothing observed yet)
    rc, out = promtool_check(DaemonMetrics().exposition().decode())
    assert rc == 0 and out.strip() == "", out


def test_values_after_updates():
    m = parse_metrics(_populated().exposition().decode())
    assert metric(m, "streamgmm_records_processed_total") == 3
    assert metric(m, "streamgmm_anomalies_total") == 1
    assert metric(m, "streamgmm_anomaly_ratio") == pytest.approx(1 / 3)
    assert metric(m, "streamgmm_target_anomaly_ratio") == 0.01
    assert metric(m, "streamgmm_dead_letters_total", reason="invalid_json") == 1
    assert metric(m, "streamgmm_dead_letters_total", reason="too_large") == 0
    assert metric(m, "streamgmm_drift_events_total", detector="score_cusum") == 1
    assert metric(m, "streamgmm_drift_events_total", detector="feature_cusum") == 0
    assert metric(m, "streamgmm_refits_total", outcome="success") == 1
    assert metric(m, "streamgmm_refits_total", outcome="failure") == 1
    assert metric(m, "streamgmm_refit_duration_seconds_sum") == 1.5
    assert metric(m, "streamgmm_threshold") == -12.5
    assert metric(m, "streamgmm_model_components") == 3
    assert metric(m, "streamgmm_model_version") == 2
    assert metric(m, "streamgmm_consumer_lag_records", topic="events", partition=0) == 5
    assert metric(m, "streamgmm_log_density_count") == 3
    assert metric(m, "streamgmm_log_density_sum") == pytest.approx(-82.0)
    assert metric(m, "streamgmm_record_age_seconds_count") == 3
    assert 0 <= metric(m, "streamgmm_checkpoint_age_seconds") < 5
    assert metric(m, "streamgmm_last_checkpoint_timestamp_seconds") > 1e9
    assert not any(name.endswith("_created") for name, _ in m)


def _age(dm: DaemonMetrics) -> float:
    return metric(parse_metrics(dm.exposition().decode()), "streamgmm_checkpoint_age_seconds")


def test_checkpoint_age_counts_only_learning_that_could_be_lost():
    ready = SimpleNamespace(threshold_=-1.0, ready=True, n_components=2, model_version=1)
    warming = SimpleNamespace(threshold_=None, ready=False, n_components=0, model_version=0)
    dm = DaemonMetrics(checkpoints=True)
    dm.observe_model(warming)
    time.sleep(0.05)
    assert _age(dm) == 0  # warm-up: nothing to save yet
    dm.observe_model(ready)
    time.sleep(0.05)
    assert 0.04 < _age(dm) < 5  # since the model became ready
    dm.observe_checkpoint(when=time.time() - 1000)
    assert 999 < _age(dm) < 1005
    dm.observe_checkpoint()
    assert _age(dm) < 5
    off = DaemonMetrics(checkpoints=False)  # checkpoints disabled: the stale alert stays quiet
    off.observe_model(ready)
    time.sleep(0.05)
    assert _age(off) == 0
    assert metric(parse_metrics(off.exposition().decode()),
                  "streamgmm_last_checkpoint_timestamp_seconds") == 0


def test_lag_series_of_revoked_partitions_disappear():
    dm = DaemonMetrics()
    dm.set_lag({("a", 0): 1, ("a", 1): 2})
    dm.set_lag({("a", 1): 3})
    m = parse_metrics(dm.exposition().decode())
    assert metric(m, "streamgmm_consumer_lag_records", topic="a", partition=0) is None
    assert metric(m, "streamgmm_consumer_lag_records", topic="a", partition=1) == 3


def test_registries_are_independent():
    a, b = DaemonMetrics(), DaemonMetrics()
    a.records.inc(5)
    assert metric(parse_metrics(b.exposition().decode()),
                  "streamgmm_records_processed_total") == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-2000, 50, allow_nan=False), max_size=200))
def test_batch_histogram_equals_prometheus_histogram(values):
    bounds = (-1000.0, -100.0, -10.0, -2.0, 0.0, 2.0, 10.0)
    values = values + list(bounds)  # boundary values fall in their own (le) bucket
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("x_seconds", "x", bounds, r1)
    ours.observe_many(np.array(values[: len(values) // 2]))
    ours.observe_many(values[len(values) // 2:])
    ref = Histogram("x_seconds", "x", buckets=bounds, registry=r2)
    for v in values:
        ref.observe(v)
    m1 = parse_metrics(generate_latest(r1).decode())
    m2 = parse_metrics(generate_latest(r2).decode())
    buckets2 = {k: v for k, v in m2.items() if k[0] == "x_seconds_bucket"}
    assert {k: v for k, v in m1.items() if k[0] == "x_seconds_bucket"} == buckets2
    assert m1[("x_seconds_count", frozenset())] == len(values)
    assert m1[("x_seconds_sum", frozenset())] == pytest.approx(sum(values), abs=1e-6)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.lists(st.lists(st.booleans(), max_size=90), max_size=12))
def test_ratio_window_is_the_mean_of_the_last_n(size, batches):
    w = RatioWindow(size)
    seen: list = []
    for b in batches:
        w.add(b)
        seen.extend(b)
        expected = float(np.mean(seen[-size:])) if seen else 0.0
        assert w.ratio == pytest.approx(expected)


def _fleet(**kw) -> FleetStatus:
    return FleetStatus(group=kw.pop("group", "orders"), **kw)


def test_a_daemon_without_fleet_exports_no_fleet_series():
    dm = DaemonMetrics()
    dm.observe_scored(np.array([-1.0]), [False])
    dm.observe_model(SimpleNamespace(threshold_=-5.0, ready=True, n_components=2,
                                     model_version=1))
    text = dm.exposition().decode()
    assert "streamgmm_fleet" not in text  # no samples, and no HELP/TYPE lines either


def test_fleet_metrics_over_http_pass_promtool():
    """A real scrape of a fleet member's /metrics: values as reported, promtool-clean."""
    metrics = DaemonMetrics()
    srv = HealthServer("127.0.0.1", 0, Health(), metrics).start()
    url = f"http://127.0.0.1:{srv.port}/metrics"
    try:
        status, text = http_get(url)
        assert status == 200 and "streamgmm_fleet" not in text
        metrics.observe_fleet(_fleet(version=7, leader=True, sync_age=1.25, published=10,
                                     merged=25, members=3,
                                     bytes={("coordination", "sent"): 4000,
                                            ("coordination", "received"): 12000,
                                            ("state", "sent"): 800}))
        status, text = http_get(url)
    finally:
        srv.stop()
    assert status == 200
    rc, out = promtool_check(text)
    assert rc == 0 and out.strip() == "", out
    m = parse_metrics(text)
    g = {"group": "orders"}
    assert metric(m, "streamgmm_fleet_model_version", **g) == 7
    assert metric(m, "streamgmm_fleet_leader", **g) == 1
    assert metric(m, "streamgmm_fleet_members", **g) == 3
    assert 1.25 <= metric(m, "streamgmm_fleet_sync_age_seconds", **g) < 5
    assert metric(m, "streamgmm_fleet_statistics_published_total", **g) == 10
    assert metric(m, "streamgmm_fleet_statistics_merged_total", **g) == 25
    b = "streamgmm_fleet_bytes_total"
    assert metric(m, b, topic="coordination", direction="sent", **g) == 4000
    assert metric(m, b, topic="coordination", direction="received", **g) == 12000
    assert metric(m, b, topic="state", direction="sent", **g) == 800
    assert metric(m, b, topic="state", direction="received", **g) == 0  # present from the start
    assert {n for n, _ in m if n.startswith("streamgmm_fleet_")} == FLEET_FAMILIES
    assert not any(n.endswith("_created") for n, _ in m)


def test_fleet_counter_totals_become_increments_and_a_reset_never_goes_negative():
    dm = DaemonMetrics()

    def counters():
        m = parse_metrics(dm.exposition().decode())
        return (metric(m, "streamgmm_fleet_statistics_published_total", group="orders"),
                metric(m, "streamgmm_fleet_statistics_merged_total", group="orders"),
                metric(m, "streamgmm_fleet_bytes_total", group="orders", topic="state",
                       direction="received"))

    dm.observe_fleet(_fleet(published=5, merged=0, bytes={("state", "received"): 100}))
    assert counters() == (5, 0, 100)
    dm.observe_fleet(_fleet(published=8, merged=4, bytes={("state", "received"): 250}))
    assert counters() == (8, 4, 250)
    dm.observe_fleet(_fleet(published=8, merged=4, bytes={("state", "received"): 250}))
    assert counters() == (8, 4, 250)                 # same totals: no increment
    # the member's internal counters started again from 0 (e.g. the fleet part restarted)
    dm.observe_fleet(_fleet(published=2, merged=0, bytes={("state", "received"): 40}))
    assert counters() == (10, 4, 290)                # the new totals count from 0: never down
    dm.observe_fleet(_fleet(published=3, merged=1, bytes={("state", "received"): 50}))
    assert counters() == (11, 5, 300)
    dm.observe_fleet(_fleet(published=0, merged=0, bytes={}))  # reset to nothing at all
    assert counters() == (11, 5, 300)
    dm.observe_fleet(_fleet(published=0, merged=0, bytes={("state", "received"): -1}))
    assert counters() == (11, 5, 300)                # nonsense negative totals are ignored


def test_fleet_gauges_follow_the_latest_status_and_the_age_keeps_growing():
    dm = DaemonMetrics()
    dm.observe_fleet(_fleet(version=0, leader=False, sync_age=0.0, members=0))
    dm.observe_fleet(_fleet(version=12, leader=True, sync_age=3.0, members=4))
    m = parse_metrics(dm.exposition().decode())
    assert metric(m, "streamgmm_fleet_model_version", group="orders") == 12
    assert metric(m, "streamgmm_fleet_leader", group="orders") == 1
    assert metric(m, "streamgmm_fleet_members", group="orders") == 4
    dm.observe_fleet(_fleet(version=13, leader=False, sync_age=0.0, members=0))  # lost it
    time.sleep(0.1)
    m = parse_metrics(dm.exposition().decode())
    assert metric(m, "streamgmm_fleet_model_version", group="orders") == 13
    assert metric(m, "streamgmm_fleet_leader", group="orders") == 0
    assert metric(m, "streamgmm_fleet_members", group="orders") == 0
    # no report since: the member has not confirmed it is in sync, so the age grows
    assert 0.09 <= metric(m, "streamgmm_fleet_sync_age_seconds", group="orders") < 5


def test_health_and_ready_endpoints_over_http():
    now = [100.0]
    health = Health(stale_after=2.0, clock=lambda: now[0])
    metrics = DaemonMetrics()
    srv = HealthServer("127.0.0.1", 0, health, metrics).start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/readyz")[0] == 503
        health.set_ready(True, model_ready=True, partitions_assigned=True)
        assert http_get(base + "/readyz")[0] == 200
        now[0] += 2.5                                   # the loop stopped making progress
        status, body = http_get(base + "/healthz")
        assert status == 503 and "stalled" in body
        health.beat()
        assert http_get(base + "/healthz")[0] == 200
        status, text = http_get(base + "/metrics")
        assert status == 200 and "streamgmm_build_info" in text
        assert http_get(base + "/nope")[0] == 404
    finally:
        srv.stop()


def test_liveness_timeout_is_a_few_polls_but_never_tiny():
    assert liveness_timeout(500) == 30.0
    assert liveness_timeout(20_000) == 100.0


def _run_file_daemon(tmp_path, events, warmup: int):
    """`python -m streamgmm run` on a followed JSON-lines file; (process, metrics port)."""
    import subprocess
    import sys

    import yaml

    from kafka_helpers import free_port

    port = free_port()
    cfg = {
        "source": {"type": "file", "path": str(events), "format": "jsonl", "follow": True},
        "records": {"features": ["a", "b"]},
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "emit": "anomalies"},
        "dead_letter": {"type": "file", "path": str(tmp_path / "dead.jsonl")},
        "detector": {"n_components": 2, "warmup_records": warmup,
                     "threshold": {"percentile": 1.0}},
        "checkpoint": {"path": None},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": port},
        "logging": {"level": "INFO", "format": "plain"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config",
                             str(tmp_path / "cfg.yaml")], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    return proc, port


def test_warm_up_exports_no_threshold_and_no_anomaly_ratio_over_http(tmp_path):
    """Before a model exists there is no threshold and before a record is scored no flagged
    fraction: the real /metrics page must not show 0 for them (a log-density threshold of 0
    sits above most scores on the dashboard's threshold panel, and 0% flagged reads as a
    healthy ratio). Once the warm-up fit is done both appear with their real values."""
    import json

    from kafka_helpers import scrape, wait_for

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(700, 2))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"a": a, "b": b}) + "\n" for a, b in rows[:100]))
    proc, port = _run_file_daemon(tmp_path, events, warmup=500)
    try:
        def page():
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
            try:
                return scrape(port)
            except OSError:
                return None
        text, m = wait_for(page, 60, what="the daemon's /metrics page")
        time.sleep(1.0)  # the 100 records are read into the warm-up buffer
        text, m = scrape(port)
        assert metric(m, "streamgmm_ready") == 0
        assert metric(m, "streamgmm_model_version") == 0
        assert metric(m, "streamgmm_records_processed_total") == 0
        assert metric(m, "streamgmm_threshold") is None, text
        assert metric(m, "streamgmm_anomaly_ratio") is None, text
        assert "# TYPE streamgmm_threshold gauge" in text      # the family is still declared
        assert "# TYPE streamgmm_anomaly_ratio gauge" in text
        rc, out = promtool_check(text)
        assert rc == 0 and out.strip() == "", out
        with open(events, "a") as fh:
            fh.write("".join(json.dumps({"a": a, "b": b}) + "\n" for a, b in rows[100:]))
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total") == 700,
                 60, what="every record scored")
        _, m = scrape(port)
        assert metric(m, "streamgmm_ready") == 1
        assert metric(m, "streamgmm_threshold") < 0
        flagged = metric(m, "streamgmm_anomalies_total")
        assert metric(m, "streamgmm_anomaly_ratio") == pytest.approx(flagged / 700)
    finally:
        proc.terminate()
        proc.wait(20)


def test_checkpoint_age_stands_still_while_learning_is_paused_over_http():
    """While the loop waits for Kafka to acknowledge its outputs nothing is scored, so the
    seconds of unsaved learning do not grow; they go on from the same value afterwards."""
    health = Health(stale_after=30.0)
    dm = DaemonMetrics(checkpoints=True)
    dm.observe_model(SimpleNamespace(threshold_=-1.0, ready=True, n_components=2,
                                     model_version=1))
    dm.observe_checkpoint(time.time() - 100)
    srv = HealthServer("127.0.0.1", 0, health, dm).start()

    def age() -> float:
        return metric(parse_metrics(http_get(f"http://127.0.0.1:{srv.port}/metrics")[1]),
                      "streamgmm_checkpoint_age_seconds")
    try:
        dm.learning_paused(True)
        a = age()
        time.sleep(0.6)
        assert age() == pytest.approx(a, abs=0.01)
        assert 100 <= a < 105
        dm.learning_paused(False)
        time.sleep(0.3)
        assert a + 0.25 <= age() < a + 5
        dm.learning_paused(True)
        dm.observe_checkpoint()          # a checkpoint during the wait (e.g. at shutdown)
        assert age() == 0.0
        dm.learning_paused(False)
        assert age() < 0.5
    finally:
        srv.stop()


def test_a_hung_broker_does_not_age_the_checkpoint(tmp_path):
    """A real daemon on its own broker; the broker hangs (SIGSTOP) while records arrive, so
    the outputs are not acknowledged: /readyz says so, nothing is scored, and the checkpoint
    age scraped from /metrics stands still (it grew without bound before, and
    StreamgmmCheckpointStale fired after 20 minutes of any broker outage)."""
    import signal as _signal

    from kafka_helpers import (BackgroundProducer, DaemonProcess, broker_binary, create_topics,
                               daemon_config, free_port, mixture_rows, scrape, start_broker,
                               to_record, unique, wait_for, write_yaml)

    broker = start_broker(broker_binary(), str(tmp_path / "broker.log"))
    bs = broker.bootstrap
    topic, out, dlq, group = unique("in"), unique("out"), unique("dlq"), unique("g")
    create_topics(bs, [topic, out, dlq])
    mport = free_port()
    cfg = daemon_config(bs, topic, out, dlq, group, warmup=200, metrics_port=mport,
                        emit="all", checkpoint=str(tmp_path / "ck.npz"),
                        kafka={"consumer": {"fetch_max_wait_ms": 50}})
    d = DaemonProcess(write_yaml(tmp_path / "c.yaml", cfg), str(tmp_path / "d.log"),
                      module="streamgmm", args=("run",))
    rows = mixture_rows(20_000, seed=5)
    prod = BackgroundProducer(bs, topic, [to_record(i, x) for i, x in enumerate(rows)],
                              rate=200).start()
    stopped = False

    def readyz() -> tuple[int, str]:
        try:
            return http_get(f"http://127.0.0.1:{mport}/readyz")
        except OSError:  # not listening yet
            return 0, ""
    try:
        wait_for(lambda: readyz()[0] == 200, 90, what="ready")
        wait_for(lambda: (metric(scrape(mport)[1], "streamgmm_records_processed_total") or 0)
                 > 300, 60, what="records scored")
        broker.proc.send_signal(_signal.SIGSTOP)
        stopped = True
        wait_for(lambda: "outputs not acknowledged" in readyz()[1], 90,
                 what="/readyz: outputs not acknowledged")
        a = metric(scrape(mport)[1], "streamgmm_checkpoint_age_seconds")
        n = metric(scrape(mport)[1], "streamgmm_records_processed_total")
        time.sleep(4)
        _, m = scrape(mport)
        assert metric(m, "streamgmm_records_processed_total") == n   # nothing scored
        assert metric(m, "streamgmm_checkpoint_age_seconds") == pytest.approx(a, abs=0.5)
    finally:
        if stopped:
            broker.proc.send_signal(_signal.SIGCONT)
        prod._stop.set()
        d.kill()
        broker.stop()


def test_healthz_stays_200_through_a_producer_rebuild_backoff():
    """The loop waits up to 30 s between producer rebuilds while Kafka refuses its outputs:
    waiting on purpose, not stuck. /healthz (liveness 2 s here) and the loop-age gauge must
    stay low through a 3 s backoff (one wait without a beat made /healthz flap 503 and the
    dashboard's loop line climb to 35 s in every cycle of a broker outage); a stop request
    still ends the wait at once."""
    import threading

    from streamgmm.service.runtime.daemon import Daemon, StopRequested

    health = Health(stale_after=2.0)
    dm = DaemonMetrics()
    dm.loop_age.set_function(lambda: health.since_beat)
    d = Daemon.__new__(Daemon)
    d.health, d.stop_event = health, threading.Event()
    srv = HealthServer("127.0.0.1", 0, health, dm).start()
    base = f"http://127.0.0.1:{srv.port}"
    seen = []
    done = threading.Event()

    def probe():
        while not done.is_set():
            status = http_get(base + "/healthz")[0]
            age = metric(parse_metrics(http_get(base + "/metrics")[1]),
                         "streamgmm_loop_age_seconds")
            seen.append((status, age))
            time.sleep(0.2)
    t = threading.Thread(target=probe, daemon=True)
    try:
        health.beat()
        t.start()
        d._backoff_alive(3.0)
        done.set()
        t.join(5)
        assert len(seen) >= 5
        assert all(status == 200 for status, _ in seen), seen
        assert max(age for _, age in seen) < 1.5, seen
        t0 = time.monotonic()
        threading.Timer(0.3, d.stop_event.set).start()
        with pytest.raises(StopRequested):
            d._backoff_alive(30.0)
        assert time.monotonic() - t0 < 2
    finally:
        done.set()
        srv.stop()
