"""CPU per record of the daemon's own work (`Daemon.step()` without the broker).

kafka-python's fetch and parsing are most of a daemon's time and the same for every version
of it; this measures the rest: decoding, `Detector.process`, outputs, metrics. A fake source
hands out pre-parsed `ConsumerRecord`s of bench_daemon.py's records (1,000 per poll), and the
sinks are files; CPU seconds per record are counted after the first 20,000 (warm-up and
start-up). Steadier than the broker benchmark on a busy machine; alternate the checkouts to
compare:

    python3 bench/bench_step.py                        # this checkout, 300,000 records
    python3 bench/bench_step.py --root DIR --records 1000000
    python3 bench/bench_step.py --no-drift             # detector.drift.enabled: false
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=HERE.parent,
                    help="the streamgmm checkout to measure (default: this one)")
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--max-poll-records", type=int, default=1000)
    ap.add_argument("--no-drift", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    sys.path.insert(1, str(HERE))
    sys.path.insert(1, str(HERE.parent / "tests"))
    os.environ["STREAMGMM_DECODE_WORKER"] = "0"
    import bench_daemon
    import kafka_helpers as kh
    from kafka.consumer.fetcher import ConsumerRecord

    from streamgmm.service.config import config_from_dict
    from streamgmm.service.messages import EMPTY, Batch
    from streamgmm.service.runtime import daemon as D
    from streamgmm.service.runtime.endpoints import make_sink

    n = args.records
    now = int(time.time() * 1000)
    recs = [ConsumerRecord("t", 0, 0, i, now, 0, None, v, [], None, -1, len(v), -1)
            for i, v in enumerate(bench_daemon.payloads(n))]

    class Source:
        group, exhausted, ready = "g", False, True

        def __init__(self):
            self.i = 0

        def poll(self, timeout_ms, max_records):
            if self.i >= n:
                return EMPTY
            b = recs[self.i:self.i + max_records]
            self.i += len(b)
            return Batch(b, {("t", 0): b[-1].offset + 1})

        def assignment(self):
            return {("t", 0)}

        def lag(self):
            return {("t", 0): n - self.i}

        def commit(self, offsets, timeout_ms=None):
            return True

        def commit_async(self, offsets, callback=None):
            return True

        def close(self, timeout_ms=None):
            pass

    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    cfgd = kh.daemon_config("127.0.0.1:1", "t", "o", "d", "g", warmup=2000, percentile=1.0,
                            kafka={"max_poll_records": args.max_poll_records},
                            logging={"level": "WARNING"})
    cfgd["sink"] = {"type": "file", "path": str(work / "events.jsonl"), "emit": "anomalies"}
    cfgd["dead_letter"] = {"type": "file", "path": str(work / "dead.jsonl")}
    if args.no_drift:
        cfgd["detector"]["drift"] = {"enabled": False}
    cfg = config_from_dict(cfgd, environ={})
    d = D.Daemon(cfg)
    d.det = D.load_detector(cfg)
    d.sink = make_sink(cfg.sink, cfg.kafka, producer=None)
    d.dlq = make_sink(cfg.dead_letter, cfg.kafka, producer=None)
    d.source = Source()
    d.phase = "running"
    gc.freeze()  # as `streamgmm run` does once started
    while d.source.i < min(20_000, n // 10):
        d.step()
    cpu0, wall0, i0 = time.process_time(), time.perf_counter(), d.source.i
    while d.source.i < n:
        d.step()
    done = d.source.i - i0
    print(f"{args.root}: step CPU {(time.process_time() - cpu0) / done * 1e6:.3f} us/record "
          f"(wall {(time.perf_counter() - wall0) / done * 1e6:.3f}; {n:,} records, "
          f"drift alarms {d.det.counters.get('drift_events')}, "
          f"load {os.getloadavg()[0]:.1f})")
    d.det.close(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
