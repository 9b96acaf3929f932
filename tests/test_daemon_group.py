"""Two daemons in one consumer group split the partitions and, together, process everything."""
from __future__ import annotations

import json

import pytest

from kafka_helpers import (
    DaemonThread, daemon_config, free_port, metric, mixture_rows, produce, read_topic, scrape,
    to_record, unique, wait_for,
)

pytestmark = pytest.mark.timeout(120)


def _lag_partitions(port: int) -> set:
    _, m = scrape(port)
    return {int(dict(lbl)["partition"]) for (name, lbl) in m
            if name == "streamgmm_consumer_lag_records"}


def test_two_daemons_share_partitions_and_process_all(bootstrap, make_topics, tmp_path):
    src, out, dlq = make_topics("grp-in", "grp-out", "grp-dlq", partitions=4)
    group = unique("g-two")
    ports = [free_port(), free_port()]
    daemons = []
    for k, port in enumerate(ports):
        cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=100, emit="all",
                            metrics_port=port, checkpoint=str(tmp_path / f"ck{k}.npz"))
        daemons.append(DaemonThread(cfg).start())
    try:
        def split():
            parts = [d.daemon.source.assignment() for d in daemons]
            return all(parts) and not (parts[0] & parts[1]) and \
                len(parts[0] | parts[1]) == 4 and parts
        parts = wait_for(split, 60, what="partitions split between the two daemons")
        n = 2000
        X = mixture_rows(n, seed=41)
        produce(bootstrap, src, [json.dumps(to_record(i, x)) for i, x in enumerate(X)],
                keys=[f"k{i}" for i in range(n)])
        wait_for(lambda: sum(metric(scrape(p)[1], "streamgmm_records_processed_total")
                             for p in ports) >= n, 60, what="all records processed")
        counts = [metric(scrape(p)[1], "streamgmm_records_processed_total") for p in ports]
        # each daemon reports lag for its own partitions only
        want = [{p for _, p in parts[0]}, {p for _, p in parts[1]}]
        wait_for(lambda: [_lag_partitions(p) for p in ports] == want, 10, what="lag series")
    finally:
        codes = [d.stop() for d in daemons]
    assert codes == [0, 0]
    assert all(c > 0 for c in counts), counts          # both did work
    assert sum(counts) == n                            # no partition read twice
    events = read_topic(bootstrap, out, min_records=n)
    assert {json.loads(e.value)["key"] for e in events} == {f"r{i}" for i in range(n)}
    # each kept its own checkpoint
    assert (tmp_path / "ck0.npz").exists() and (tmp_path / "ck1.npz").exists()


def test_daemons_joining_and_leaving_mid_stream_lose_nothing(bootstrap, make_topics, tmp_path):
    """A joins; B joins mid-stream (rebalance); A leaves (rebalance); every record has an
    outcome, and A committed what it handed on when its partitions were revoked."""
    from kafka_helpers import BackgroundProducer, committed_offsets

    src, out, dlq = make_topics("reb-in", "reb-out", "reb-dlq", partitions=2)
    group = unique("g-reb")
    n = 40000   # at most: the producer runs until B owns both partitions (any machine speed)
    X = mixture_rows(n, seed=43)
    records = [to_record(i, x) for i, x in enumerate(X)]
    ports = [free_port(), free_port()]

    def cfg(k):
        return daemon_config(bootstrap, src, out, dlq, group, warmup=100, emit="all",
                             metrics_port=ports[k], checkpoint=str(tmp_path / f"ck{k}.npz"))

    a = DaemonThread(cfg(0)).start()
    b = None
    try:
        wait_for(lambda: len(a.daemon.source.assignment()) == 2, 30, what="A owns both")
        # one record per producer batch: consumers restart from committed offsets here
        prod = BackgroundProducer(bootstrap, src, records, rate=350).start()
        wait_for(lambda: metric(scrape(ports[0])[1], "streamgmm_records_processed_total")
                 >= 300, 30, what="A scoring")
        b = DaemonThread(cfg(1)).start()
        wait_for(lambda: len(b.daemon.source.assignment()) == 1, 30, what="B gets one")
        assert prod.sent < n, "not mid-stream"
        a_rebalances = metric(scrape(ports[0])[1], "streamgmm_rebalances_total")
        assert a.stop() == 0                      # A leaves mid-stream
        wait_for(lambda: len(b.daemon.source.assignment()) == 2, 30, what="B owns both")
        assert prod.sent < n, "not mid-stream"
        b_rebalances = metric(scrape(ports[1])[1], "streamgmm_rebalances_total")
        sent = prod.sent
        wait_for(lambda: prod.sent >= sent + 300, 30, what="records after B took over")
        n = prod.stop()
        wait_for(lambda: {json.loads(e.value)["key"] for e in read_topic(bootstrap, out)}
                 >= {f"r{i}" for i in range(n)}, 60, interval=1.0, what="every outcome")
    finally:
        if a.alive:
            a.stop()
        if b is not None:
            assert b.stop() == 0
    # Each saw at least its own join (if B joins while A's first join is still in progress,
    # both join one generation and A sees a single rebalance); B also saw A leave or its join.
    assert a_rebalances >= 1 and b_rebalances >= 1 and a_rebalances + b_rebalances >= 3
    committed = committed_offsets(bootstrap, group)
    assert sum(committed.values()) == n
    # revocations committed exactly what had been handed on: no record was scored twice
    keys = [json.loads(e.value)["key"] for e in read_topic(bootstrap, out)]
    assert len(keys) == len(set(keys)) == n


def test_a_daemon_without_partitions_is_a_ready_standby(bootstrap, make_topics, tmp_path):
    """More daemons than partitions: the one the group gives none is a ready standby (a
    model, in the group), so readiness alerts do not fire for it; /readyz says it holds no
    partition, and it takes the partition over when the owner leaves."""
    from kafka_helpers import FEATURES, http_get

    from streamgmm import Detector

    src, out, dlq = make_topics("sb-in", "sb-out", "sb-dlq")  # one partition
    model = tmp_path / "model.npz"
    det = Detector({"n_components": 3}, feature_names=list(FEATURES), background_refit=False)
    det.fit(mixture_rows(600, seed=2))
    det.save(model)
    det.close()
    group = unique("g-standby")
    ports = [free_port(), free_port()]
    daemons = [DaemonThread(daemon_config(bootstrap, src, out, dlq, group, metrics_port=p,
                                          model={"path": str(model)})).start() for p in ports]

    def readyz(port):
        code, body = http_get(f"http://127.0.0.1:{port}/readyz")
        return code, json.loads(body)

    try:
        wait_for(lambda: sum(len(d.daemon.source.assignment()) for d in daemons) == 1
                 and all(readyz(p)[0] == 200 for p in ports), 60,
                 what="one owner, both ready")
        owner = next(k for k, d in enumerate(daemons) if d.daemon.source.assignment())
        standby = 1 - owner
        code, body = readyz(ports[standby])
        assert code == 200 and body["partitions_assigned"] == 0 and body["in_group"] is True
        assert metric(scrape(ports[standby])[1], "streamgmm_ready") == 1
        assert daemons[owner].stop() == 0
        wait_for(lambda: daemons[standby].daemon.source.assignment(), 60,
                 what="the standby takes the partition over")
        wait_for(lambda: readyz(ports[standby])[1].get("partitions_assigned") == 1, 30,
                 what="the standby ready with the partition")
    finally:
        codes = [d.stop() for d in daemons]
    assert codes[standby] == 0


def test_a_standby_without_a_model_is_ready_and_its_loop_age_is_exported(bootstrap, make_topics):
    """A fresh standby (no checkpoint, no model file) has nothing to warm up on: it is ready
    all the same (so StreamgmmNotReady stays quiet); the owner waits for warm-up records."""
    from kafka_helpers import http_get

    src, out, dlq = make_topics("sb0-in", "sb0-out", "sb0-dlq")  # one partition, no records
    group = unique("g-standby0")
    ports = [free_port(), free_port()]
    daemons = [DaemonThread(daemon_config(bootstrap, src, out, dlq, group,
                                          metrics_port=p)).start() for p in ports]

    def readyz(port):
        code, body = http_get(f"http://127.0.0.1:{port}/readyz")
        return code, json.loads(body)

    try:
        wait_for(lambda: sum(len(d.daemon.source.assignment()) for d in daemons) == 1
                 and all(d.daemon.source.ready for d in daemons), 60,
                 what="one owner, both in the group")
        owner = next(k for k, d in enumerate(daemons) if d.daemon.source.assignment())
        standby = 1 - owner
        wait_for(lambda: readyz(ports[standby])[0] == 200, 10, what="the standby ready")
        code, body = readyz(ports[standby])
        assert body["model_ready"] is False and body["partitions_assigned"] == 0
        code, body = readyz(ports[owner])
        assert code == 503 and body["model_ready"] is False  # warming up
        m = scrape(ports[standby])[1]
        assert metric(m, "streamgmm_ready") == 1
        assert 0 <= metric(m, "streamgmm_loop_age_seconds") < 30
    finally:
        codes = [d.stop() for d in daemons]
    assert codes == [0, 0]


def test_a_deleted_input_topic_makes_the_daemon_not_ready_with_the_reason(
        bootstrap, make_topics, monkeypatch, caplog):
    """A consumer whose topic was deleted scores nothing and, on the test broker, keeps its
    stale assignment: the topic watch makes /readyz say which topic is missing (one warning
    line), and ready again once the topic exists."""
    import logging

    from kafka.admin import KafkaAdminClient

    from kafka_helpers import create_topics, http_get
    from streamgmm.service.runtime import topic_watch

    monkeypatch.setattr(topic_watch, "TOPIC_CHECK_SECONDS", 0.5)
    src, out, dlq = make_topics("del-in", "del-out", "del-dlq")
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-del"), warmup=100,
                        metrics_port=port, emit="all")
    d = DaemonThread(cfg).start()
    ready = lambda: http_get(f"http://127.0.0.1:{port}/readyz")  # noqa: E731
    try:
        X = mixture_rows(150, seed=5)
        produce(bootstrap, src, [json.dumps(to_record(i, x)) for i, x in enumerate(X)])
        wait_for(lambda: ready()[0] == 200, 60, what="ready")
        with caplog.at_level(logging.INFO, logger="streamgmm.daemon"):
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                admin.delete_topics([src])
            finally:
                admin.close()
            code, body = wait_for(lambda: (r := ready())[0] == 503 and r, 30,
                                  what="not ready")
            assert json.loads(body)["missing_topics"] == [src]
            assert metric(scrape(port)[1], "streamgmm_ready") == 0
            create_topics(bootstrap, [src])
            wait_for(lambda: ready()[0] == 200, 30, what="ready again")
        text = caplog.text
        assert text.count(f"kafka.topics: '{src}' do(es) not exist") == 1
        assert "every input topic exists" in text
    finally:
        assert d.stop() == 0
