"""The rebalance callback runs on kafka-python's event loop: it must stay short (no warm-up fit,
no unbounded flush there), the main loop finishes the work, and no record is lost."""
from __future__ import annotations

import json
import threading
import time

import pytest

from kafka_helpers import (
    DaemonThread, committed_offsets, daemon_config, mixture_rows, produce, read_topic,
    to_record, unique, wait_for,
)

pytestmark = pytest.mark.timeout(180)

WARMUP, BATCH = 300, 100


def test_revocation_mid_warmup_fits_in_the_main_loop_and_loses_nothing(
        bootstrap, make_topics, monkeypatch):
    """A holds a full batch in its decode worker whose scoring completes the warm-up when B
    joins. The old callback decoded it and ran the warm-up fit on the client's thread; now the
    callback only commits what is handed on, and A's main loop fits after the poll (in the
    helper thread it watches for a stop, "warmup-fit")."""
    import streamgmm.detection.detector as detector_mod
    import streamgmm.service.runtime.daemon as daemon_mod

    fits = []                                  # (thread name, n records) of every fit
    real_fit = detector_mod.fit_window

    def recording_fit(X, *a, **kw):
        fits.append((threading.current_thread().name, len(X)))
        return real_fit(X, *a, **kw)

    monkeypatch.setattr(detector_mod, "fit_window", recording_fit)
    monkeypatch.setattr(daemon_mod, "decode_worker_wanted", lambda: True)  # full batches
    # a poll waits at most POLL_SLICE_MS (1 s, for prompt stops): here A's poll must really
    # last 15 s, so that B joins while the batch is still in A's decode worker
    monkeypatch.setattr(daemon_mod, "POLL_SLICE_MS", 15000)

    src, out, dlq = make_topics("rbw-in", "rbw-out", "rbw-dlq", partitions=2)
    group = unique("g-rbw")

    def cfg(poll_ms):
        return daemon_config(bootstrap, src, out, dlq, group, warmup=WARMUP, emit="all",
                             kafka={"max_poll_records": BATCH, "poll_timeout_ms": poll_ms,
                                    "consumer": {"fetch_max_wait_ms": 100}})

    X = mixture_rows(700, seed=61)
    first = [json.dumps(to_record(i, x)) for i, x in enumerate(X[:WARMUP])]
    for p in (0, 1):  # one record per producer batch: B restarts from A's commits
        produce(bootstrap, src, first[p::2], partition=p, one_per_batch=True)

    # A's long poll keeps the batch that completes the warm-up in the decode worker while B
    # joins (the poll returns at once when records arrive).
    a = DaemonThread(cfg(15000)).start()
    calls = []
    b = None
    try:
        wait_for(lambda: a.daemon.source is not None, 30, what="A's source")
        inner = a.daemon.source.on_revoked

        def timed(tps):
            d = a.daemon
            state = {"thread": threading.current_thread().name,
                     "mid_warmup": d._inflight is not None and not d.det.ready,
                     "unflushed": d._unflushed is not None}
            t0 = time.perf_counter()
            try:
                return inner(tps)
            finally:
                state["seconds"] = time.perf_counter() - t0
                calls.append(state)

        a.daemon.source.on_revoked = timed
        wait_for(lambda: a.daemon._inflight is not None and a.daemon.det.pending == 2 * BATCH,
                 60, interval=0.05, what="A mid warm-up with a batch in its decode worker")
        assert not a.daemon.det.ready and not fits
        b = DaemonThread(cfg(200)).start()
        wait_for(lambda: a.daemon.source.assignment() and b.daemon.source.assignment()
                 and len(a.daemon.source.assignment() | b.daemon.source.assignment()) == 2,
                 60, what="the partitions split between A and B")
        wait_for(lambda: a.daemon.det.ready, 30, what="A's warm-up fit")
        assert fits[:1] == [("warmup-fit", WARMUP)], fits  # not kafka-python's thread
        rest = [json.dumps(to_record(i, x)) for i, x in enumerate(X[WARMUP:], start=WARMUP)]
        for p in (0, 1):
            produce(bootstrap, src, rest[p::2], partition=p, one_per_batch=True)
        events = wait_for(lambda: (lambda ev: ev if {(e["partition"], e["offset"]) for e in ev}
                                   >= {(p, o) for p in (0, 1) for o in range(350)} else None)(
            [json.loads(r.value) for r in read_topic(bootstrap, out)]),
            90, interval=1.0, what="an outcome for every input offset")
    finally:
        codes = [a.stop(timeout=30)] + ([b.stop()] if b is not None else [])
    assert codes == [0, 0]

    # the scenario happened: the callback ran while a warm-up-completing batch was in hand
    assert any(c["mid_warmup"] for c in calls), calls
    # ... and it stayed short and never fitted: every fit ran in a daemon's main loop
    assert all(c["seconds"] < 1.0 for c in calls), calls
    assert {name for name, _ in fits} <= {"daemon-under-test", "warmup-fit",
                                          "streamgmm-refit"}, fits
    assert ("warmup-fit", WARMUP) in fits      # A's warm-up fit on all 300 records
    # nothing lost: every input offset has its outcome, and the final commits cover them all
    assert {(e["partition"], e["offset"]) for e in events} == \
        {(p, o) for p in (0, 1) for o in range(350)}
    committed = committed_offsets(bootstrap, group)
    assert sorted(committed.values()) == [350, 350], committed


def test_an_error_in_the_revocation_callback_is_logged_and_stops_the_main_loop(caplog):
    """The callback cannot raise into kafka-python's event loop usefully, but the error must
    not vanish: it is logged with the partitions, and the main loop fails on it (exit 1)."""
    from streamgmm.service.config import config_from_dict
    from streamgmm.service.runtime.daemon import Daemon, DaemonError

    cfg = config_from_dict(daemon_config("127.0.0.1:1", "t", "o", "d", "g"), environ={})
    d = Daemon(cfg)

    class Source:
        ready = True

        def assignment(self):
            return {("t", 0), ("t", 1)}

    d.source = Source()
    d._seen = {("t", 0): 10, ("t", 1): 20}
    assert d._on_revoked([("t", 0)]) == {("t", 0): 10}    # the normal case: flushed offsets
    d._settle_revoked()
    assert ("t", 0) not in d._seen and d._seen == {("t", 1): 20}

    def broken(*a, **kw):
        raise RuntimeError("bookkeeping bug")

    d._offsets_to_commit = broken
    with caplog.at_level("ERROR", logger="streamgmm.daemon"):
        assert d._on_revoked([("t", 1)]) is None            # nothing committed
    assert any("revocation of t[1] failed: RuntimeError: bookkeeping bug" in r.getMessage()
               for r in caplog.records), caplog.text  # one line naming the partitions
    with pytest.raises(DaemonError, match="rebalance callback failed: RuntimeError: "
                                          "bookkeeping bug"):
        d._settle_revoked()
    d._settle_revoked()                                      # raised once, then cleared


def test_a_warm_up_fit_longer_than_max_poll_interval_keeps_the_partitions(
        bootstrap, make_topics, monkeypatch):
    """The loop waits for the warm-up fit (a helper thread) without polling; kafka-python
    evicts a member that has not polled for max_poll_interval_ms (default 300 s, which a
    wide warm-up reaches: 2,000 x 150 features took 30-65 s on two cores). The evicted
    daemon lost its partitions, rejoined, and scored the warm-up records twice. The loop
    now polls with its partitions paused while it waits: no rebalance, each record once."""
    import streamgmm.detection.detector as detector_mod

    real_fit = detector_mod.fit_window
    slow = {"n": 0}

    def slow_fit(X, *a, **kw):
        slow["n"] += 1
        if slow["n"] == 1:   # the warm-up fit: well past max_poll_interval_ms below
            time.sleep(9)
        return real_fit(X, *a, **kw)

    monkeypatch.setattr(detector_mod, "fit_window", slow_fit)
    src, out, dlq = make_topics("kal-in", "kal-out", "kal-dlq", partitions=2)
    group = unique("g-kal")
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=WARMUP, emit="all",
                        kafka={"max_poll_records": BATCH, "poll_timeout_ms": 200,
                               "consumer": {"fetch_max_wait_ms": 100,
                                            "max_poll_interval_ms": 3000}})
    n = 400
    rows = [json.dumps(to_record(i, x)) for i, x in enumerate(mixture_rows(n, seed=67))]
    for p in (0, 1):  # one record per producer batch: a re-read restarts at the commit
        produce(bootstrap, src, rows[p::2], partition=p, one_per_batch=True)

    d = DaemonThread(cfg).start()
    try:
        events = wait_for(lambda: (lambda ev: ev if len(ev) >= n else None)(
            [json.loads(r.value) for r in read_topic(bootstrap, out)]),
            90, interval=1.0, what="an outcome for every record")
        time.sleep(3)   # an eviction's re-read would add duplicates by now
        events = [json.loads(r.value) for r in read_topic(bootstrap, out)]
        rebalances = d.daemon.metrics.rebalances._value.get()
    finally:
        code = d.stop(timeout=30)
    assert code == 0
    assert slow["n"] >= 1
    keys = [(e["partition"], e["offset"]) for e in events]
    assert sorted(keys) == sorted({(p, o) for p in (0, 1) for o in range(n // 2)}), \
        f"{len(keys)} outcomes for {n} records"          # each record scored once
    assert rebalances == 1                                # the first assignment only
    assert sorted(committed_offsets(bootstrap, group).values()) == [n // 2, n // 2]
