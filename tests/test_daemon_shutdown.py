"""The daemon as a real process (`python -m streamgmm run`): SIGTERM mid-stream is clean and
resumable; `kill -9` mid-stream loses nothing (at-least-once)."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from kafka import TopicPartition

from kafka_helpers import (
    BackgroundProducer, DaemonProcess, committed_offsets, daemon_config, free_port, http_get,
    metric, mixture_rows, produce, read_topic, scrape, to_record, unique, wait_for,
    write_yaml,
)

pytestmark = pytest.mark.timeout(180)


def _processed(port: int) -> float:
    """records_processed_total, or -1 while the metrics server is not up yet."""
    try:
        return metric(scrape(port)[1], "streamgmm_records_processed_total") or 0
    except OSError:
        return -1


def _assigned(port: int) -> bool:
    """The daemon's consumer has joined the group and got partitions."""
    try:
        return (metric(scrape(port)[1], "streamgmm_rebalances_total") or 0) >= 1
    except OSError:
        return False


def _start(cfg: dict, tmp_path, name: str) -> DaemonProcess:
    path = write_yaml(tmp_path / f"{name}.yaml", cfg)
    return DaemonProcess(path, str(tmp_path / f"{name}.log"), module="streamgmm", args=("run",))


def test_sigterm_mid_stream_exits_0_commits_checkpoints_and_restart_resumes(
        bootstrap, make_topics, tmp_path):
    src, out, dlq = make_topics("term-in", "term-out", "term-dlq")
    group, ck = unique("g-term"), tmp_path / "state" / "ck.npz"
    ck.parent.mkdir()
    port = free_port()
    warmup = 300
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=warmup, emit="all",
                        checkpoint=str(ck), metrics_port=port)
    X = mixture_rows(3000, seed=21)
    records = [to_record(i, x) for i, x in enumerate(X)]
    d = _start(cfg, tmp_path, "first")
    prod = BackgroundProducer(bootstrap, src, records[:2500], rate=500)
    try:
        wait_for(lambda: _assigned(port), 60, what="partitions assigned")
        prod.start()
        wait_for(lambda: _processed(port) >= 600, 60, what="daemon scoring")
        assert prod.sent < 2500, "stream already over: not mid-stream"
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        prod._stop.set()
        code = d.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        prod._stop.set()
        d.kill()
    prod.join()
    log1 = d.log_text()
    assert code == 0, log1
    assert elapsed < 10, elapsed
    assert ck.exists() and ck.stat().st_size > 0
    committed = committed_offsets(bootstrap, group)[TopicPartition(src, 0)]
    outs = [json.loads(e.value) for e in read_topic(bootstrap, out, min_records=committed)]
    # committed exactly what was handed on: every record below the commit once, none above
    assert sorted(o["offset"] for o in outs) == list(range(committed)), (committed, len(outs))
    last_version = max(o["model_version"] for o in outs)

    # restart: resumes from the checkpoint (no re-warm-up) and from the committed offset
    backlog = prod.sent - committed
    extra = records[2500:2550]
    assert backlog + len(extra) < warmup  # if it re-warmed up, nothing would be scored
    port2 = free_port()
    cfg2 = {**cfg, "metrics": {**cfg["metrics"], "port": port2}}
    d2 = _start(cfg2, tmp_path, "second")
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port2}/readyz")[0] == 200
                 if _processed(port2) >= 0 else False, 60, what="restored daemon ready")
        produce(bootstrap, src, [json.dumps(r) for r in extra], one_per_batch=True)
        end = prod.sent + len(extra)
        wait_for(lambda: _processed(port2) == end - committed, 60, what="resumed scoring")
        _, m = scrape(port2)
        d2.proc.send_signal(signal.SIGTERM)
        assert d2.wait(15) == 0, d2.log_text()
    finally:
        d2.kill()
    assert "checkpoint" in d2.log_text() and "warming up" not in d2.log_text()
    assert metric(m, "streamgmm_model_version") >= last_version
    outs2 = [json.loads(e.value) for e in read_topic(bootstrap, out, min_records=end)]
    assert sorted(o["offset"] for o in outs2) == list(range(end))  # nothing re-read, nothing lost
    assert committed_offsets(bootstrap, group)[TopicPartition(src, 0)] == end


def test_kill_9_mid_stream_then_restart_loses_nothing(bootstrap, make_topics, tmp_path):
    src, out, dlq = make_topics("kill-in", "kill-out", "kill-dlq")
    group, ck = unique("g-kill"), tmp_path / "ck.npz"
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=200, emit="all",
                        checkpoint=str(ck), metrics_port=port,
                        kafka={"max_poll_records": 100})
    cfg["checkpoint"]["interval_seconds"] = 0.5
    n = 2000
    X = mixture_rows(n, seed=31)
    values = [to_record(i, x) if i % 97 != 50 else "not json" for i, x in enumerate(X)]
    d = _start(cfg, tmp_path, "first")
    prod = BackgroundProducer(bootstrap, src, values, rate=450)
    try:
        wait_for(lambda: _assigned(port), 60, what="partitions assigned")
        prod.start()
        wait_for(lambda: _processed(port) >= 500 and ck.exists(), 60,
                 what="scoring and a checkpoint")
        assert prod.sent < n, "stream already over: not mid-stream"
        os.kill(d.proc.pid, signal.SIGKILL)
        assert d.wait(10) == -signal.SIGKILL
    finally:
        d.kill()
    port2 = free_port()
    cfg2 = {**cfg, "metrics": {**cfg["metrics"], "port": port2}}
    d2 = _start(cfg2, tmp_path, "second")
    try:
        prod.join()

        def outcomes():
            scored = {json.loads(e.value)["offset"] for e in read_topic(bootstrap, out)}
            dead = {int(dict(e.headers)["__streamgmm.errors.offset"])
                    for e in read_topic(bootstrap, dlq)}
            return scored | dead

        wait_for(lambda: outcomes() >= set(range(n)), 90, interval=1.0,
                 what="an outcome for every input record")
        d2.proc.send_signal(signal.SIGTERM)
        assert d2.wait(15) == 0, d2.log_text()
    finally:
        d2.kill()
    assert "restored checkpoint" in d2.log_text()
    assert committed_offsets(bootstrap, group)[TopicPartition(src, 0)] == n


def test_kill_9_right_after_the_warm_up_restores_the_fitted_model(bootstrap, make_topics,
                                                                     tmp_path):
    """The warm-up fit is checkpointed at once, not at the next checkpoint period: its records
    are committed right after it, so a crash before the period would otherwise leave no model
    for them and the restart would warm up again on other records, with another model."""
    src, out, dlq = make_topics("kwarm-in", "kwarm-out", "kwarm-dlq")
    group, ck = unique("g-kwarm"), tmp_path / "ck.npz"
    port = free_port()
    warmup = 200
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=warmup, emit="all",
                        checkpoint=str(ck), metrics_port=port)
    assert cfg["checkpoint"]["interval_seconds"] == 3600  # no periodic checkpoint in this test
    X = mixture_rows(700, seed=41)
    records = [json.dumps(to_record(i, x)) for i, x in enumerate(X)]
    produce(bootstrap, src, records[:400], one_per_batch=True)
    d = _start(cfg, tmp_path, "first")
    try:
        wait_for(lambda: committed_offsets(bootstrap, group).get(TopicPartition(src, 0), 0)
                 >= 400, 90, what="the warm-up records scored and committed")
        os.kill(d.proc.pid, signal.SIGKILL)
        assert d.wait(10) == -signal.SIGKILL
    finally:
        d.kill()
    assert ck.exists(), "offsets committed past the warm-up, but its model was not saved"
    outs = [json.loads(e.value) for e in read_topic(bootstrap, out, min_records=400)]
    first_threshold = {o["threshold"] for o in outs if o["offset"] < warmup}

    produce(bootstrap, src, records[400:], one_per_batch=True)
    port2 = free_port()
    d2 = _start({**cfg, "metrics": {**cfg["metrics"], "port": port2}}, tmp_path, "second")
    try:
        wait_for(lambda: _processed(port2) >= 300, 90, what="the restarted daemon scoring")
        d2.proc.send_signal(signal.SIGTERM)
        assert d2.wait(15) == 0, d2.log_text()
    finally:
        d2.kill()
    log2 = d2.log_text()
    assert "restored checkpoint" in log2 and "warming up" not in log2, log2
    outs = [json.loads(e.value) for e in read_topic(bootstrap, out, min_records=700)]
    assert {o["offset"] for o in outs} == set(range(700))  # nothing lost
    later = [o for o in outs if o["offset"] >= 400]
    assert {o["model_version"] for o in later} == {1}  # the same model, not a second warm-up
    assert len(first_threshold) == 1
