"""Offsets: records still buffered in the warm-up are not committed; a restart re-reads them;
pattern subscriptions work."""
from __future__ import annotations

import json

import numpy as np
import pytest
from kafka import TopicPartition

from kafka_helpers import (
    DaemonThread, committed_offsets, create_topics, daemon_config, mixture_rows, produce,
    read_topic, to_record, unique, wait_for,
)
from streamgmm.service.runtime.daemon import Chunk, PendingQueue
from streamgmm.service.messages import SourceRecord

pytestmark = pytest.mark.timeout(120)


def test_warmup_buffer_is_not_committed_and_is_reread_after_restart(bootstrap, make_topics):
    src, out, dlq = make_topics("wu-in", "wu-out", "wu-dlq", partitions=2)
    group = unique("g-wu")
    X = mixture_rows(700, seed=51)
    recs = [json.dumps(to_record(i, x)) for i, x in enumerate(X)]
    # one record per producer batch: the second daemon restarts from committed offsets
    produce(bootstrap, src, recs[:300], one_per_batch=True)
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=500, emit="all",
                        dead_letter={"type": "kafka", "topic": dlq})
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: d.daemon.det is not None and d.daemon.det.pending == 300, 30,
                 what="300 records buffered in the warm-up")
        produce(bootstrap, src, [b"not json"], partition=0)   # handed on at once: committable
        wait_for(lambda: read_topic(bootstrap, dlq), 30, what="the dead letter")
    finally:
        assert d.stop() == 0
    committed = committed_offsets(bootstrap, group)
    # nothing past a buffered record: at most the offsets of records before the first buffered
    assert all(off == 0 for off in committed.values()), committed
    assert read_topic(bootstrap, out) == []

    # a restarted daemon re-reads the buffered records and, after warm-up, scores them all
    produce(bootstrap, src, recs[300:], one_per_batch=True)
    d2 = DaemonThread(cfg).start()
    try:
        wait_for(lambda: len(read_topic(bootstrap, out)) >= 700, 60, what="all scored")
    finally:
        assert d2.stop() == 0
    keys = [json.loads(e.value)["key"] for e in read_topic(bootstrap, out)]
    assert sorted(keys) == sorted(f"r{i}" for i in range(700))
    ends = committed_offsets(bootstrap, group)
    assert sum(ends.values()) == 701
    assert ends[TopicPartition(src, 0)] + ends[TopicPartition(src, 1)] == 701


def test_topic_pattern_subscription(bootstrap, make_topics):
    prefix = unique("pat")
    names = [f"{prefix}.a", f"{prefix}.b"]
    create_topics(bootstrap, names)
    out, dlq = make_topics("pat-out", "pat-dlq")
    X = mixture_rows(200, seed=52)
    for k, name in enumerate(names):
        produce(bootstrap, name, [json.dumps(to_record(100 * k + i, x))
                                  for i, x in enumerate(X[100 * k:100 * (k + 1)])])
    cfg = daemon_config(bootstrap, "unused", out, dlq, unique("g-pat"), warmup=50, emit="all")
    cfg["kafka"] = {**cfg["kafka"], "topics": None, "topic_pattern": f"^{prefix}\\..*"}
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: len(read_topic(bootstrap, out)) >= 200, 40, what="both topics read")
    finally:
        assert d.stop() == 0
    topics = {json.loads(e.value)["topic"] for e in read_topic(bootstrap, out)}
    assert topics == set(names)


def test_pending_queue_pops_across_chunks_and_tracks_lowest_offsets():
    def recs(tp, start, n):
        return [SourceRecord(b"{}", tp[0], tp[1], start + i) for i in range(n)]

    q = PendingQueue()
    a, b = ("t", 0), ("t", 1)
    q.push(Chunk(recs(a, 10, 3) + recs(b, 5, 2), None, np.arange(5.0)))
    q.push(Chunk(recs(a, 13, 2), ["k1", "k2"], np.arange(2.0)))
    assert len(q) == 7 and q.min_offsets() == {a: 10, b: 5}
    first = q.pop(4)
    assert [r.offset for r in first.recs] == [10, 11, 12, 5]
    assert q.min_offsets() == {a: 13, b: 6}
    rest = q.pop(3)
    assert [r.offset for r in rest.recs] == [6, 13, 14] and rest.keys == [None, "k1", "k2"]
    assert len(q) == 0 and q.min_offsets() == {}
    with pytest.raises(RuntimeError):
        q.pop(1)
