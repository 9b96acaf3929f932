"""Ceiling of a two-process daemon: kafka-python's consumer in a forked child, the rest in the parent.

Issue 10 asks the daemon for >= 0.8 of a bare kafka-python consumer's records/s. In one
process the daemon pays the bare loop's whole work plus its own, so this measures the idealised
split instead, on the same topic as the bare loop, in the same run:

- the child is a consumer in a group (as the daemon's is) that newline-joins each polled
  batch's values and sends them, with the partition and offsets, through a pipe, and commits
  what the parent reports done, every 0.5 s (as the daemon does in a backlog);
- the parent only counts (``--work none``: the transport alone), or also decodes and scores
  each batch with the daemon's own ``decode_batch`` and ``Detector.process`` (``--work score``;
  no outputs, metrics or dead letters, so still an upper bound).

    python3 bench/bench_split_consumer.py --records 300000 --work none
    python3 bench/bench_split_consumer.py --records 300000 --work score
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import struct
import sys
import time
from operator import attrgetter
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
import bench_daemon as bd  # noqa: E402
import kafka_helpers as kh  # noqa: E402

HEAD = struct.Struct("<iiqq")  # partition, records, first offset, last offset


def child(bootstrap: str, topic: str, conn, n: int, max_poll_records: int) -> None:
    """Consume n records in a group; ship each batch's joined values; commit what is done."""
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=kh.unique("split"),
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      max_poll_records=max_poll_records, fetch_max_wait_ms=50, **kh.FAST_GROUP)
    value = attrgetter("value")
    got, cpu0, got0 = 0, None, 0
    next_commit, done = 0.0, {}
    while got < n:
        for tp, recs in c.poll(timeout_ms=500, max_records=max_poll_records).items():
            if cpu0 is None:
                cpu0, got0 = time.process_time(), got
            conn.send_bytes(HEAD.pack(tp.partition, len(recs), recs[0].offset, recs[-1].offset)
                            + b"\n".join(map(value, recs)))
            got += len(recs)
        while conn.poll():
            part, offset = conn.recv()
            done[part] = offset
        if done and time.monotonic() >= next_commit:  # as the daemon: every 0.5 s in a backlog
            c.commit_async({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                            for p, o in done.items()})
            next_commit, done = time.monotonic() + 0.5, {}
    cpu = (time.process_time() - cpu0) / (got - got0) * 1e6
    conn.send_bytes(b"END" + struct.pack("<d", cpu))
    c.close()


def scorer():
    """The daemon's decoding and scoring of one joined batch (bench_daemon's records)."""
    from streamgmm.service.config import config_from_dict
    from streamgmm.service.records import decode_batch
    from streamgmm.service.runtime import daemon as D

    cfg = config_from_dict(kh.daemon_config("127.0.0.1:1", "t", "o", "d", "g", warmup=2000,
                                            percentile=1.0), environ={})
    det = D.load_detector(cfg)

    def work(blob: bytes) -> None:
        det.process(decode_batch(blob.split(b"\n"), cfg.records).X)
    return work


def split_run(bootstrap: str, topic: str, n: int, max_poll_records: int, work) -> tuple:
    """records/s of the split pipeline, parent and child CPU microseconds per record."""
    parent, there = mp.Pipe()
    p = mp.get_context("fork").Process(target=child,
                                       args=(bootstrap, topic, there, n, max_poll_records))
    p.start()
    got, t0 = 0, None
    while True:
        msg = parent.recv_bytes()
        if msg.startswith(b"END"):
            child_cpu = struct.unpack("<d", msg[3:])[0]
            break
        part, k, _first, last = HEAD.unpack_from(msg)
        if t0 is None:
            t0, cpu0, got0 = time.perf_counter(), time.process_time(), got
        if work is not None:
            work(msg[HEAD.size:])
        got += k
        parent.send((part, last + 1))
    dt = time.perf_counter() - t0
    p.join()
    return (got - got0) / dt, (time.process_time() - cpu0) / (got - got0) * 1e6, child_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", choices=("none", "score"), default="score")
    ap.add_argument("--max-poll-records", type=int, default=1000)
    args = ap.parse_args()
    work_dir, broker, bootstrap = bd.bench_setup("bench-split-", None)
    try:
        kh.create_topics(bootstrap, "t")
        bd.produce_all(bootstrap, "t", bd.payloads(args.records))
        n = args.records
        broker_cpu = (lambda: bd.cpu_seconds(broker.proc.pid)) if broker else (lambda: 0.0)
        for r in range(args.rounds):
            b0 = broker_cpu()
            bare, bare_cpu = bd.bare_consume(bootstrap, "t", n, args.max_poll_records, 50)
            b1 = broker_cpu()
            work = scorer() if args.work == "score" else None
            rate, parent_cpu, child_cpu = split_run(bootstrap, "t", n, args.max_poll_records,
                                                    work)
            b2 = broker_cpu()
            print(f"round {r + 1}: bare {bare:,.0f} records/s ({bare_cpu:.2f} CPU us/record, "
                  f"broker {(b1 - b0) / n * 1e6:.2f}); split, parent work={args.work}: "
                  f"{rate:,.0f} records/s, ratio {rate / bare:.2f} (child {child_cpu:.2f}, "
                  f"parent {parent_cpu:.2f}, broker {(b2 - b1) / n * 1e6:.2f} CPU us/record); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
