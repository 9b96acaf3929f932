"""Integration with the real Prometheus server (Debian's /usr/bin/prometheus) on loopback.

A real daemon (`python -m streamgmm run --config`, file source in follow mode, so no Kafka)
processes a generated stream with a scheduled shift and a few malformed lines; Prometheus scrapes
it every second with the project's alert rules loaded. Queries through Prometheus's HTTP API must
give the record count, anomaly counts and ratio, dead letters, drift and refit that the daemon
really produced (checked against its sink files), every dashboard query must evaluate, and every
alert rule must evaluate without error. A second, shorter run consumes a 3-partition topic on the
test broker, so the per-partition lag query has data too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from kafka_helpers import free_port, http_get, metric, scrape, wait_for

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = pytest.mark.usefixtures("prometheus_server")  # fails, never skips, without it

N_RECORDS = 28_000
SHIFT_AT = 8_000
SHIFTED = 8_000  # records after the shift written before waiting for the refit's swap
BAD_AFTER = 5_000
FEATURES = ["amount", "latency_ms", "sensor.temp"]
BAD_LINES = [
    ("invalid_json", "this is not json"),
    ("not_object", "[1, 2, 3]"),
    ("missing_field", '{"id": -1, "amount": 1.0, "latency_ms": 2.0}'),
    ("non_numeric", '{"id": -2, "amount": "lots", "latency_ms": 2.0, "sensor": {"temp": 1}}'),
    ("non_numeric", '{"id": -3, "amount": 1.0, "latency_ms": 2.0, "sensor": {"temp": "hot"}}'),
]


def query(base: str, expr: str) -> list:
    """Instant query through Prometheus's HTTP API; the result vector (raises on API errors)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(base: str, expr: str) -> float | None:
    res = query(base, expr)
    if not res:
        return None
    assert len(res) == 1, res
    return float(res[0]["value"][1])


def live(expr: str) -> str:
    """A dashboard expression with its template variables set for this test's Prometheus."""
    from test_grafana import substitute

    return substitute(expr).replace('instance=~"streamgmm:9108"', 'instance=~".+"')


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_prometheus(tmp: Path, metrics_port: int) -> tuple[subprocess.Popen, str]:
    """Prometheus scraping 127.0.0.1:metrics_port as job streamgmm every 1 s, with the project's
    alert rules; returns (process, base URL) once it answers /-/ready."""
    prom_port = free_port()
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "streamgmm",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    with open(tmp / "prometheus.log", "wb") as log:
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
    base = f"http://127.0.0.1:{prom_port}"

    def ready():
        assert prom.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
        try:
            return http_get(f"{base}/-/ready")[0] == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_for(ready, 60, what="Prometheus ready")
    except BaseException:
        _stop(prom)
        raise
    return prom, base


def start_daemon(tmp: Path, cfg: dict) -> subprocess.Popen:
    """`python -m streamgmm run --config` on cfg (written to tmp), output to tmp/daemon.log."""
    cfg_path = tmp / "streamgmm.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    with open(tmp / "daemon.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config",
                                 str(cfg_path)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp)


def records_seen(base: str, daemon: subprocess.Popen, tmp: Path, n: int):
    """Predicate: Prometheus's last scrape of the (still running) daemon shows n records."""
    def check():
        assert daemon.poll() is None, (tmp / "daemon.log").read_text()[-3000:]
        return scalar(base, 'streamgmm_records_processed_total{job="streamgmm"}') == n
    return check


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Generated stream -> running daemon -> Prometheus scraping it every second."""
    from streamgmm.tools.generator import generate

    tmp = tmp_path_factory.mktemp("promstack")
    events, labels = tmp / "events.jsonl", tmp / "labels.jsonl"
    stream = generate(N_RECORDS, seed=21, feature_names=tuple(FEATURES), anomaly_rate=0.005,
                      drifts=[f"shift@{SHIFT_AT}:feature=all,size=4"])
    lab = open(labels, "w")

    def write(n: int) -> None:
        """Append the next n generated records (and the bad lines after record BAD_AFTER)."""
        with open(events, "a") as out:
            for _ in range(n):
                ev = next(stream)
                out.write(json.dumps(ev.record) + "\n")
                lab.write(json.dumps(ev.label) + "\n")
                if ev.index == BAD_AFTER - 1:
                    out.writelines(line + "\n" for _, line in BAD_LINES)

    # Phase 1 (stationary) is there from the start; phase 2 (with the shift) is appended once
    # Prometheus has watched phase 1, so the drift and refit happen between its scrapes; phase 3
    # follows once the refitted model is in (the daemon reads a file far faster than a refit
    # takes, so without the wait how many shifted records the old model scores is up to timing).
    write(SHIFT_AT)

    metrics_port = free_port()
    cfg = {
        "source": {"type": "file", "path": str(events), "format": "jsonl", "follow": True},
        "records": {"features": FEATURES, "key_field": "id", "timestamp_field": "ts"},
        "sink": {"type": "file", "path": str(tmp / "anomalies.jsonl"), "emit": "anomalies"},
        "dead_letter": {"type": "file", "path": str(tmp / "dead.jsonl")},
        "detector": {"n_components": 3, "warmup_records": 2000,
                     "threshold": {"percentile": 1.0},
                     "refit": {"window": 5000, "cooldown_records": 5000}},
        "checkpoint": {"path": str(tmp / "checkpoint.npz"), "interval_seconds": 1},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port,
                    "ratio_window": 10000},
        "logging": {"level": "INFO", "format": "plain"},
    }
    prom, base = start_prometheus(tmp, metrics_port)
    daemon = None
    try:
        daemon = start_daemon(tmp, cfg)
        wait_for(records_seen(base, daemon, tmp, SHIFT_AT), 120, interval=0.5,
                 what="Prometheus to see phase 1 scored")
        time.sleep(3)  # Prometheus sees the drift counters at zero before the shift arrives
        write(SHIFTED)  # the drift alarm and the background refit happen in here
        written = SHIFT_AT + SHIFTED
        wait_for(records_seen(base, daemon, tmp, written), 120, interval=0.5,
                 what="Prometheus to see the shifted records scored")

        def swapped() -> bool:
            # the refit runs in the background and is swapped in at the next batch: feed
            # one record at a time until the daemon reports it, so that the last
            # ratio_window records are all scored by the refitted model
            nonlocal written
            if metric(scrape(metrics_port)[1], "streamgmm_refits_total", outcome="success"):
                return True
            write(1)
            written += 1
            return False
        wait_for(swapped, 60, interval=0.3, what="the refitted model to be swapped in")
        assert N_RECORDS - written > 10_000
        write(N_RECORDS - written)
        lab.close()
        wait_for(records_seen(base, daemon, tmp, N_RECORDS), 180, interval=0.5,
                 what="Prometheus to see every record")
        time.sleep(4)  # a few more scrapes so that rate()/increase() windows hold >= 2 samples
        yield {"base": base, "tmp": tmp, "daemon": daemon, "metrics_port": metrics_port}
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop(prom)
        lab.close()


def read_jsonl(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_up_and_ready(stack):
    base = stack["base"]
    assert scalar(base, 'up{job="streamgmm"}') == 1
    assert scalar(base, 'streamgmm_ready{job="streamgmm"}') == 1
    status, _ = http_get(f"http://127.0.0.1:{stack['metrics_port']}/readyz")
    assert status == 200


def test_record_count_and_anomaly_ratio(stack):
    base, tmp = stack["base"], stack["tmp"]
    anomalies = read_jsonl(tmp / "anomalies.jsonl")
    assert scalar(base, "sum(streamgmm_records_processed_total)") == N_RECORDS
    assert scalar(base, "sum(streamgmm_anomalies_total)") == len(anomalies)
    overall = scalar(base, "sum(streamgmm_anomalies_total) / sum(streamgmm_records_processed_total)")
    assert overall == pytest.approx(len(anomalies) / N_RECORDS)
    # the windowed ratio covers the last ratio_window scored records
    last = [a for a in anomalies if int(a["key"]) >= N_RECORDS - 10000]
    ratio = scalar(base, 'streamgmm_anomaly_ratio{job="streamgmm"}')
    assert ratio == pytest.approx(len(last) / 10000)
    assert scalar(base, "streamgmm_target_anomaly_ratio") == pytest.approx(0.01)
    # after the refit the flagged fraction is back near the configured percentile plus the
    # 0.5% planted anomalies
    assert 0.005 <= ratio <= 0.04, ratio


def test_dead_letters_by_reason(stack):
    base, tmp = stack["base"], stack["tmp"]
    dead = read_jsonl(tmp / "dead.jsonl")
    assert len(dead) == len(BAD_LINES)
    got = {r["metric"]["reason"]: float(r["value"][1])
           for r in query(base, "sum by (reason) (streamgmm_dead_letters_total)")}
    expected: dict[str, float] = {}
    for reason, _ in BAD_LINES:
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in got.items() if v} == expected


def test_drift_and_refit_seen_by_prometheus(stack):
    base = stack["base"]
    assert scalar(base, "sum(streamgmm_drift_events_total)") >= 1
    assert scalar(base, 'sum(streamgmm_refits_total{outcome="success"})') >= 1
    assert scalar(base, "max(streamgmm_model_version)") >= 2
    assert scalar(base, "sum(streamgmm_refit_duration_seconds_count)") >= 1
    assert scalar(base, "max(streamgmm_last_checkpoint_timestamp_seconds)") > 0


def test_every_dashboard_query_evaluates_with_data(stack):
    """Prometheus itself parses and evaluates each dashboard query against the live daemon;
    all return data except per-partition lag (a file source has no partitions) and the Fleet
    row, which must be empty: a daemon without fleet.enabled exports no fleet series."""
    from test_grafana import dashboard_expressions

    base = stack["base"]
    empty = []
    for where, expr, _ in dashboard_expressions():
        if where.startswith("variable"):
            continue
        res = query(base, live(expr))
        if not res:
            empty.append(where)
    fleet = {w for w, e, _ in dashboard_expressions() if "streamgmm_fleet_" in e}
    allowed = {w for w, e, _ in dashboard_expressions() if "consumer_lag_records" in e} | fleet
    assert set(empty) <= allowed, f"no data for: {sorted(set(empty) - allowed)}"
    assert fleet and fleet <= set(empty), f"fleet data from a single daemon: {fleet - set(empty)}"
    assert query(base, '{__name__=~"streamgmm_fleet_.+"}') == []


def test_alert_rules_load_and_evaluate(stack):
    base = stack["base"]
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
        body = json.loads(r.read())
    groups = body["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    names = {rule["name"] for rule in rules}
    expected = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
                for r in g["rules"]}
    assert names == expected
    wait_for(lambda: all(rule.get("health") == "ok" for rule in _rules(base)), 30,
             what="every alert rule evaluated without error")
    firing = {rule["name"] for rule in _rules(base) if rule.get("state") == "firing"}
    assert not firing & {"StreamgmmTargetDown", "StreamgmmTargetMissing", "StreamgmmStalled",
                         "StreamgmmDeadLetterRateHigh", "StreamgmmRefitFailing"}


def _rules(base):
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
        return [rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]]


# ---------------------------------------------------------------------------------------------
# Kafka source: per-partition lag and rebalances reach Prometheus too
# ---------------------------------------------------------------------------------------------

def test_kafka_source_lag_per_partition(bootstrap, make_topics, tmp_path):
    """Generator -> topic (3 partitions) -> daemon consuming it -> Prometheus: the lag panel's
    query returns one series per partition, drained to 0, and the counts match the topics."""
    from kafka_helpers import FAST_GROUP, read_topic, unique

    from test_grafana import dashboard_expressions
    from streamgmm.tools import generator

    n = 3000
    src, out, dlq = make_topics("prom-in", "prom-out", "prom-dlq", partitions=3)
    parser = argparse.ArgumentParser()
    generator.add_arguments(parser)
    assert generator.main(parser.parse_args([
        "--count", str(n), "--seed", "4", "--feature-names", ",".join(FEATURES),
        "--anomaly-rate", "0.01", "--bootstrap-servers", bootstrap, "--topic", src,
        "--key-field", "id"])) == 0
    metrics_port = free_port()
    cfg = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [src], "group_id": unique("g"),
                  "auto_offset_reset": "earliest", "poll_timeout_ms": 200, **FAST_GROUP},
        "records": {"features": FEATURES, "key_field": "id"},
        "sink": {"type": "kafka", "topic": out, "emit": "anomalies"},
        "dead_letter": {"type": "kafka", "topic": dlq},
        "detector": {"n_components": 3, "warmup_records": 1000,
                     "threshold": {"percentile": 1.0}},
        "checkpoint": {"path": None},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port},
        "logging": {"level": "INFO", "format": "plain"},
    }
    prom, base = start_prometheus(tmp_path, metrics_port)
    daemon = None
    try:
        daemon = start_daemon(tmp_path, cfg)
        wait_for(records_seen(base, daemon, tmp_path, n), 120, interval=0.5,
                 what="Prometheus to see every record scored")

        lag_expr = live(next(e for w, e, _ in dashboard_expressions()
                             if "consumer_lag_records" in e))
        seen = {}

        def lag_drained():
            res = query(base, lag_expr)
            seen["lag"] = {(r["metric"]["topic"], r["metric"]["partition"]): float(r["value"][1])
                           for r in res}
            return seen["lag"] == {(src, str(p)): 0.0 for p in range(3)}

        try:
            wait_for(lag_drained, 30, interval=0.5, what="lag of all 3 partitions at 0")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen.get('lag')}") from None
        assert scalar(base, "sum(streamgmm_rebalances_total)") >= 1
        assert scalar(base, "streamgmm_ready") == 1
        anomalies = read_topic(bootstrap, out)
        assert scalar(base, "sum(streamgmm_anomalies_total)") == len(anomalies) > 0
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop(prom)
