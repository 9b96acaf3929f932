"""Fleet mode (issue 11): throughput of 1, 2 and 3 members, the cost of syncing and merging,
and the time for a new member to become ready, against the Tansu test broker.

    python3 bench/bench_fleet.py                  # 300,000 records, 2 rounds (~5-6 minutes)
    python3 bench/bench_fleet.py --quick          # a small smoke run (~2 minutes)
    python3 bench/bench_fleet.py --records 600000 --rounds 3

Every daemon is `streamgmm run` as a subprocess (this checkout's code, as bench_daemon.py
runs it); helpers (payloads, producers, the bare consumer, /proc CPU) come from
bench/bench_daemon.py. All processes, the broker included, share this machine's cores.

1. Throughput. A one-member fleet (the seed) warms up on `--warmup-records` records, as any
   fleet does (its leader fits version 1 on the pooled rows), and publishes versions to a
   state topic. For each fleet size (1, 2, 3) and round: a fresh consumer group starts from a
   copy of the seed's newest version under its own key on that state topic (a group whose
   state is in Kafka: every member restores it before it joins, no warm-up), on a fresh, empty
   six-partition topic. Once every member is ready and the group has stopped rebalancing, the
   members are SIGSTOPped, `--records` records are produced, and they are SIGCONTinued
   together: the backlog is read by a settled group (no join, rebalance, warm-up or producer
   inside the measured interval; `--session-timeout-ms` outlasts the stop). Aggregate rate =
   records / (time from SIGCONT to the last scored batch, from the members'
   records_processed counters). Per member: its records over SIGCONT .. its own last scored
   batch, and its CPU (utime+stime of the process and its children, /proc) per record over
   that interval. Each round also runs the bare kafka-python consumer
   (bench_daemon.bare_consume: poll and count, no group) over the last run's topic (the same
   records). Medians over rounds.
   Projection to one core per member: a member's capacity is 1e6 / (its CPU us per record);
   with the partitions spread evenly the slowest member sets the pace, so projected rate = members x 1e6 / max over members of CPU us/record, capped by
   members x 1e6 / (the bare loop's CPU us per record): a member cannot read faster than the
   bare consumer loop on the same core. It ignores the broker (which here shares the same
   cores) and any contention a real deployment would have.
2. Sync and merge cost: three fleet members and three plain daemons (fleet off, checkpoint
   off), two consumer groups on the same six-partition topic, both warmed up, then a paced
   producer (`--live-rate` records/s for `--live-seconds`): CPU seconds per second of each
   member over the paced interval, and bytes per second on the coordination and state
   topics (streamgmm_fleet_bytes_total deltas).
3. Join time: while the paced stream goes on, a fourth member joins each group: a fleet
   member (state in Kafka: restores the newest version) and a plain daemon (no state: warms
   up on `detector.warmup_records` of its partitions at the live rate), one after the other,
   `--join-rounds` times. Seconds from the process start to its metrics endpoint, to
   streamgmm_ready == 1, and to its first scored record.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_daemon as bd  # noqa: E402  (payloads, producers, bare consumer, /proc CPU)

kh = bd.kh
ROOT = bd.ROOT
WARMUP = 2000            # detector.warmup_records
SYNC = 2.0               # model.sync_seconds (the default)
PARTITIONS = 6


# ----------------------------------------------------------------------------- daemons
class Daemon:
    """One `streamgmm run` subprocess with its metrics port and log."""

    def __init__(self, cfg: dict, work: Path, tag: str):
        self.tag, self.port = tag, cfg["metrics"]["port"]
        self.group = cfg["kafka"]["group_id"]
        self.log_path = work / f"{tag}.log"
        path = kh.write_yaml(work / f"{tag}.yaml", cfg)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.t_start, self.t_wall = time.perf_counter(), time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config",
                                      path], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "w"), env=env, cwd=str(ROOT))
        self.pid = self.proc.pid
        self.terminated = False

    def metrics(self) -> dict | None:
        try:
            return kh.scrape(self.port)[1]
        except (OSError, AssertionError):
            return None

    def value(self, m: dict | None, name: str, **labels) -> float:
        if m is None:
            return float("nan")
        if name.startswith("streamgmm_fleet_"):
            labels = {"group": self.group, **labels}
        v = kh.metric(m, name, **labels)
        return float("nan") if v is None else v

    def cpu(self) -> float:
        """CPU seconds of the process and its children (a decode worker, if any)."""
        return bd.cpu_seconds(self.pid) + sum(map(bd.cpu_seconds, bd.children(self.pid)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
            self.terminated = self.terminated or sig == signal.SIGTERM

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (once: a second one makes the daemon exit at once, code 1) and wait."""
        if self.proc.poll() is None and not self.terminated:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def config(bootstrap: str, topic: str, out: str, dlq: str, group: str, args, member: str,
           fleet: dict | None, **kafka) -> dict:
    """A daemon config as bench_daemon's (emit anomalies, p = 1%), fleet on when `fleet` is
    {"state": topic, "coordination": topic}."""
    cfg = kh.daemon_config(bootstrap, topic, out, dlq, group, warmup=WARMUP, percentile=1.0,
                           metrics_port=kh.free_port(), emit="anomalies",
                           kafka={"client_id": member,
                                  "max_poll_records": args.max_poll_records,
                                  "poll_timeout_ms": 500,
                                  "consumer": {"fetch_max_wait_ms": args.fetch_max_wait_ms},
                                  **kafka},
                           logging={"level": "INFO"})
    if fleet is not None:
        cfg["checkpoint"] = {"path": None, "store": "kafka", "topic": fleet["state"],
                             "interval_seconds": 3600}
        cfg["fleet"] = {"enabled": True, "topic": fleet["coordination"],
                        "sample_records": 500}
        cfg["model"] = {"sync_seconds": SYNC}
    return cfg


def snapshot(daemons) -> list:
    return [(d.metrics(), d.cpu(), time.perf_counter()) for d in daemons]


def settled(daemons, total: int, timeout: float, fleet: bool) -> list:
    """Wait until every daemon is ready (a fleet: holds a version, and one member leads), the
    group's counters sum to `total` and no rebalance happened for 2 s; returns the last
    metrics."""
    deadline = time.monotonic() + timeout
    last_key, since = None, time.monotonic()
    while True:
        ms = [d.metrics() for d in daemons]
        for d in daemons:
            if d.proc.poll() is not None:
                raise SystemExit(f"{d.tag} exited ({d.proc.returncode}): see {d.log_path}")
        ok = all(m is not None for m in ms) and all(
            d.value(m, "streamgmm_ready") == 1 for d, m in zip(daemons, ms)) and (
            not fleet or (all(d.value(m, "streamgmm_fleet_model_version") >= 1
                              for d, m in zip(daemons, ms)) and
                          sum(d.value(m, "streamgmm_fleet_leader") == 1
                              for d, m in zip(daemons, ms)) == 1))
        done = sum(d.value(m, "streamgmm_records_processed_total") for d, m in zip(daemons, ms)) \
            if ok else -1
        key = (done, tuple(d.value(m, "streamgmm_rebalances_total") for d, m in zip(daemons, ms))
               ) if ok else None
        if key != last_key:
            last_key, since = key, time.monotonic()
        elif ok and done >= total and time.monotonic() - since >= 2.0:
            return ms
        if time.monotonic() > deadline:
            raise SystemExit(f"the group did not settle within {timeout:.0f}s "
                             f"(ready/version/processed {key}); logs in "
                             f"{daemons[0].log_path.parent}")
        time.sleep(0.3)


def problems(d: Daemon) -> list[str]:
    """Lines of a daemon's log that look wrong (errors, warnings, tracebacks)."""
    return [ln for ln in d.log().splitlines()
            if re.search(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback|Exception", ln)]


# --------------------------------------------------------------------- 1. throughput
def stop_all(daemons, timeout: float = 30.0) -> list:
    """SIGTERM every daemon at once, then wait for each: exit codes (None: killed)."""
    for d in daemons:
        d.signal(signal.SIGTERM)
    return [d.stop(timeout) for d in daemons]


def newest_version(bootstrap: str, state: str, group: str) -> tuple[int, bytes]:
    """(version, bytes) of the newest fleet version of `group` on the state topic."""
    from kafka import KafkaConsumer, TopicPartition

    from streamgmm.service.fleet.messages import version_of
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=100, max_partition_fetch_bytes=64 << 20,
                      fetch_max_bytes=64 << 20)
    tp = TopicPartition(state, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    best = None
    deadline = time.monotonic() + 30
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            for r in recs:
                v = version_of(r.headers)
                if r.key == group.encode() and v is not None and (best is None or v > best[0]):
                    best = (v, r.value)
    c.close()
    if best is None:
        raise SystemExit(f"no fleet version of {group} on {state}")
    return best


def seed_state(bootstrap, io, state, args, work, warm) -> tuple[int, bytes]:
    """A one-member fleet warms up on `warm` (version 1 fitted by its leader, as any fleet
    does); its newest published version is returned, to be copied under each run's group."""
    topic = kh.unique("fl-seed")
    kh.create_topics(bootstrap, [topic], partitions=PARTITIONS)
    bd.produce_all(bootstrap, topic, warm)
    group = kh.unique("fleet-seed")
    d = Daemon(config(bootstrap, topic, *io, group, args, "seed",
                      {"state": state, "coordination": kh.unique("fl-coord")}), work, "seed")
    try:
        settled([d], len(warm), 120, fleet=True)
        kh.wait_for(lambda: d.value(d.metrics(), "streamgmm_fleet_model_version") >= 2, 30,
                    what="the seed's second version")
    finally:
        stop_all([d])
    return newest_version(bootstrap, state, group)


def throughput_run(bootstrap, io, state, seed, n_members, backlog, args, work, tag) -> dict:
    """n members of a fresh group on a fresh, empty six-partition topic, starting from the
    seed version (restored from the state topic, as a group with state in Kafka does); once
    the group has settled they are SIGSTOPped, the backlog is produced, and they are
    SIGCONTinued together."""
    from kafka import KafkaProducer

    from streamgmm.service.fleet.messages import version_header
    out, dlq = io
    topic = kh.unique("fl-in")
    kh.create_topics(bootstrap, [topic], partitions=PARTITIONS)
    group = kh.unique("fleet")
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=64 << 20)
    p.send(state, key=group.encode(), value=seed[1], headers=version_header(seed[0])).get(30)
    p.close()
    fleet = {"state": state, "coordination": kh.unique("fl-coord")}
    # a session that outlasts the SIGSTOP while the backlog is produced
    members = [Daemon(config(bootstrap, topic, out, dlq, group, args, f"{tag}m{k}", fleet,
                             session_timeout_ms=args.session_timeout_ms,
                             heartbeat_interval_ms=1000), work, f"{tag}m{k}")
               for k in range(n_members)]
    res: dict = {"members": n_members, "group": group, "topic": topic}
    try:
        ms0 = settled(members, 0, 180, fleet=True)
        res["settle_seconds"] = time.perf_counter() - min(d.t_start for d in members)
        # seconds from the start to partitions assigned / leadership, from the logs
        res["assigned_s"], res["leader_s"] = [], None
        for d in members:
            for ln in d.log().splitlines():
                if "partitions assigned" in ln:
                    res["assigned_s"].append(round(log_time(ln) - d.t_wall, 1))
                    break
            for ln in d.log().splitlines():
                if "is the leader" in ln:
                    res["leader_s"] = round(log_time(ln) - d.t_wall, 1)
                    break
        for d in members:
            d.signal(signal.SIGSTOP)
        # counters as the members stopped (a stopped member serves no metrics), CPU while
        # stopped (it does not move), then the clock starts with SIGCONT
        k0 = [d.value(m, "streamgmm_records_processed_total") for d, m in zip(members, ms0)]
        reb0 = [d.value(m, "streamgmm_rebalances_total") for d, m in zip(members, ms0)]
        res["produce_seconds"] = bd.produce_all(bootstrap, topic, backlog)
        cpu0 = [d.cpu() for d in members]
        for d in members:
            d.signal(signal.SIGCONT)
        t0 = time.perf_counter()
        start = [(None, c, t0) for c in cpu0]
        n_records = sum(k0) + len(backlog)
        last = [(k, c, t) for k, (_, c, t) in zip(k0, start)]  # at each member's last change
        t_end, stall = None, time.monotonic()
        while t_end is None:
            now_all = snapshot(members)
            ks = [d.value(m, "streamgmm_records_processed_total") if m is not None else
                  last[i][0] for i, (d, (m, _, _)) in enumerate(zip(members, now_all))]
            for i, (k, (m, c, t)) in enumerate(zip(ks, now_all)):
                if k > last[i][0]:
                    last[i] = (k, c, t)
                    stall = time.monotonic()
            if sum(ks) >= n_records:
                t_end = max(t for _, _, t in last)
            elif time.monotonic() - stall > 30:
                raise SystemExit(f"{tag}: no progress for 30s at {sum(ks):,.0f} of "
                                 f"{n_records:,} records; logs in {work}")
            for d in members:
                if d.proc.poll() is not None:
                    raise SystemExit(f"{d.tag} exited: see {d.log_path}")
            # each scrape costs the member CPU: poll 4 times a second, finely near the end
            time.sleep(0.05 if sum(ks) >= 0.9 * n_records else 0.25)
        ms = [m for m, _, _ in now_all]
        per = []
        for d, k_0, (_, c0, _), (k1, c1, t1), m, r0 in zip(members, k0, start, last, ms, reb0):
            n = k1 - k_0
            per.append({"member": d.tag, "records": int(n), "records_before": int(k_0),
                        "rate": n / max(t1 - t0, 1e-9) if n else 0.0,
                        "cpu_us": (c1 - c0) / n * 1e6 if n else float("nan"),
                        "leader": d.value(m, "streamgmm_fleet_leader") == 1,
                        "version": d.value(m, "streamgmm_fleet_model_version"),
                        "rebalances_in_window": d.value(m, "streamgmm_rebalances_total") - r0})
        done = sum(p["records"] for p in per)
        res.update({"rate": done / (t_end - t0), "seconds": t_end - t0, "records": done,
                    "per_member": per, "versions": [p["version"] for p in per],
                    "leaders": sum(p["leader"] for p in per),
                    "seed_version": seed[0]})
        busy = [p for p in per if p["records"]]
        res["cpu_us_mean"] = float(np.mean([p["cpu_us"] for p in busy]))
        # with the partitions spread evenly, the slowest member sets the pace
        res["cpu_us_max"] = float(np.max([p["cpu_us"] for p in busy]))
        return res
    finally:
        for d in members:
            d.signal(signal.SIGCONT)
        res["exit_codes"] = stop_all(members)
        res["log_problems"] = {d.tag: problems(d) for d in members if problems(d)}


# --------------------------------------------------------------- 2. and 3. live stream
class Paced(threading.Thread):
    """A producer at `rate` records/s (bench_daemon.paced's loop) until stopped."""

    def __init__(self, bootstrap, topic, values, rate):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.values, self.rate = bootstrap, topic, values, rate
        self.halt = threading.Event()
        self.sent = 0

    def run(self):
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        t0 = time.perf_counter()
        for i, v in enumerate(self.values):
            if self.halt.is_set():
                break
            p.send(self.topic, v)
            self.sent = i + 1
            ahead = t0 + (i + 1) / self.rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        p.flush()
        p.close()


def live_cost(bootstrap, topic, fleet_members, plain, args, values) -> dict:
    """CPU s/s of every member of both groups and fleet bytes/s over a paced interval."""
    everyone = fleet_members + plain
    s0 = snapshot(everyone)
    t0 = time.perf_counter()
    bd.paced(bootstrap, topic, values, args.live_rate)
    t_prod = time.perf_counter() - t0
    # until both groups have scored it all (a batch or two behind the producer)
    base = {d.tag: d.value(m, "streamgmm_records_processed_total")
            for d, (m, _, _) in zip(everyone, s0)}
    for grp in (fleet_members, plain):
        kh.wait_for(lambda g=grp: sum(d.value(d.metrics(), "streamgmm_records_processed_total")
                                      - base[d.tag] for d in g) >= len(values), 30, 0.1,
                    what="the live records scored")
    s1 = snapshot(everyone)
    rows = []
    for d, (m0, c0, t0_), (m1, c1, t1) in zip(everyone, s0, s1):
        dt = t1 - t0_
        row = {"member": d.tag, "fleet": d in fleet_members, "cpu_per_s": (c1 - c0) / dt,
               "seconds": dt,
               "records": d.value(m1, "streamgmm_records_processed_total")
               - d.value(m0, "streamgmm_records_processed_total")}
        if d in fleet_members:
            row["leader"] = d.value(m1, "streamgmm_fleet_leader") == 1
            for tp in ("coordination", "state"):
                for di in ("sent", "received"):
                    name = "streamgmm_fleet_bytes_total"
                    row[f"{tp}_{di}_Bps"] = (d.value(m1, name, topic=tp, direction=di)
                                            - d.value(m0, name, topic=tp, direction=di)) / dt
            for c in ("published", "merged"):
                name = f"streamgmm_fleet_statistics_{c}_total"
                row[c] = d.value(m1, name) - d.value(m0, name)
            row["versions_published"] = (d.value(m1, "streamgmm_fleet_model_version")
                                         - d.value(m0, "streamgmm_fleet_model_version"))
            row["version_end"] = d.value(m1, "streamgmm_fleet_model_version")
        rows.append(row)
    return {"rows": rows, "produce_seconds": t_prod}


def join_time(d: Daemon, timeout: float = 90.0) -> dict:
    """Seconds from the process start to metrics served, ready, first scored record."""
    up = ready = first = None
    deadline = time.perf_counter() + timeout
    while ready is None or first is None:
        now = time.perf_counter()
        if now > deadline:
            break
        if d.proc.poll() is not None:
            raise SystemExit(f"{d.tag} exited ({d.proc.returncode}): see {d.log_path}")
        m = d.metrics()
        now = time.perf_counter() - d.t_start
        if m is not None:
            up = up if up is not None else now
            if ready is None and d.value(m, "streamgmm_ready") == 1:
                ready = now
            if first is None and d.value(m, "streamgmm_records_processed_total") > 0:
                first = now
        time.sleep(0.05)
    out = {"member": d.tag, "metrics_up": up, "ready": ready, "first_record": first}
    # from the log: when the model was usable (restored, or warmed up) and partitions came
    for key, needle in (("model", "starts on version"), ("model", "warmup_done"),
                        ("assigned", "partitions assigned")):
        for ln in d.log().splitlines():
            if needle in ln and key not in out:
                out[key] = log_time(ln) - d.t_wall
                out[key + "_line"] = ln
    return out


def log_time(line: str) -> float:
    """Unix time of the ISO timestamp that starts a daemon log line."""
    from datetime import datetime, timezone
    return datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


# ------------------------------------------------------------------------------ main
def fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return float(np.median(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000, help="backlog per throughput run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the throughput part")
    ap.add_argument("--sizes", default="1,2,3", help="fleet sizes of the throughput part")
    ap.add_argument("--warmup-records", type=int, default=4000,
                    help="records each throughput run starts with (version 1 is fit on them)")
    ap.add_argument("--live-rate", type=float, default=3000.0, help="paced records/s")
    ap.add_argument("--live-seconds", type=float, default=20.0)
    ap.add_argument("--join-rounds", type=int, default=2)
    ap.add_argument("--max-poll-records", type=int, default=1000)
    ap.add_argument("--session-timeout-ms", type=int, default=30000,
                    help="throughput part only: must outlast producing the backlog while the "
                         "members are SIGSTOPped (other parts: the tests' 6 s)")
    ap.add_argument("--fetch-max-wait-ms", type=int, default=50)
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of Tansu")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 60,000 records, one round, 10 s live, one join round")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 1 or 2,3")
    args = ap.parse_args()
    if args.quick:
        args.records, args.rounds, args.live_seconds, args.join_rounds = 60_000, 1, 10.0, 1
    skip = {s for s in args.skip.split(",") if s}
    sizes = [int(s) for s in args.sizes.split(",")]
    work, broker, bootstrap = bd.bench_setup("bench-fleet-", args.bootstrap)
    t_run = time.perf_counter()
    res: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                 "records": args.records, "rounds": args.rounds, "work": str(work)}
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}; logs and configs in {work}",
          flush=True)
    try:
        io = (kh.unique("fl-out"), kh.unique("fl-dlq"))
        kh.create_topics(bootstrap, list(io))
        warm = bd.payloads(args.warmup_records, seed=7)

        # ------------------------------------------------------------- 1. throughput
        if "1" not in skip:
            backlog = bd.payloads(args.records, seed=0)
            state = kh.unique("fl-state")
            seed = seed_state(bootstrap, io, state, args, work, warm)
            print(f"seed: version {seed[0]} ({len(seed[1]):,} bytes) from a one-member fleet "
                  f"warmed up on {len(warm):,} records", flush=True)
            runs: dict = {n: [] for n in sizes}
            bares = []
            for r in range(args.rounds):
                for n in sizes:
                    run = throughput_run(bootstrap, io, state, seed, n, backlog, args, work,
                                         f"r{r}n{n}")
                    runs[n].append(run)
                    print(f"round {r + 1}, {n} member(s): {run['rate']:,.0f} records/s over "
                          f"{run['records']:,} records in {run['seconds']:.2f}s; per member "
                          + ", ".join(f"{p['rate']:,.0f}/s {p['cpu_us']:.2f} us/rec"
                                      f"{' (leader)' if p['leader'] else ''}"
                                      for p in run["per_member"])
                          + f"; versions {run['versions']}; partitions at "
                          f"{run['assigned_s']} s, leader at {run['leader_s']} s after start; "
                          f"backlog produced in "
                          f"{run['produce_seconds']:.1f}s; load {os.getloadavg()[0]:.1f}",
                          flush=True)
                rate_, cpu_ = bd.bare_consume(bootstrap, run["topic"], args.records,
                                              args.max_poll_records, args.fetch_max_wait_ms)
                bares.append((rate_, cpu_))
                print(f"round {r + 1}: bare kafka-python consumer {rate_:,.0f} records/s "
                      f"({cpu_:.2f} us/record), same topic", flush=True)
            bare = med([b[0] for b in bares])
            bare_cpu = med([b[1] for b in bares])
            table = []
            for n in sizes:
                rate = med([x["rate"] for x in runs[n]])
                cpu_mean = med([x["cpu_us_mean"] for x in runs[n]])
                cpu_max = med([x["cpu_us_max"] for x in runs[n]])
                # CPU-bound on one core per member, capped by the bare loop's CPU-bound rate
                uncapped = n * 1e6 / cpu_max
                projected = min(uncapped, n * 1e6 / bare_cpu)
                table.append({"members": n, "rate": rate, "rounds": [round(x["rate"])
                                                                    for x in runs[n]],
                              "ratio": rate / bare,
                              "member_rate": med([p["rate"] for x in runs[n]
                                                  for p in x["per_member"]]),
                              "cpu_us_mean": cpu_mean, "cpu_us_max": cpu_max,
                              "projected_uncapped": uncapped, "projected": projected,
                              "projected_ratio_to_1": None})
            one = next((t for t in table if t["members"] == 1), None)
            for t in table:
                if one:
                    t["projected_ratio_to_1"] = t["projected"] / one["projected"]
            res["throughput"] = {"bare": bare, "bare_cpu_us": bare_cpu,
                                 "bare_rounds": [round(b[0]) for b in bares], "table": table,
                                 "runs": {n: runs[n] for n in sizes}}
            print(f"\n### 1. Throughput, {args.records:,}-record backlog on {PARTITIONS} "
                  f"partitions (medians of {args.rounds} rounds)\n")
            print(f"Bare kafka-python consumer (C crc32c), same topic: {bare:,.0f} records/s, "
                  f"{bare_cpu:.2f} CPU us/record\n")
            print("| members | aggregate records/s (rounds) | ratio to bare | records/s per "
                  "member | CPU us/record per member: mean / slowest member | projected "
                  "records/s, one core per member |")
            print("|---|---|---|---|---|---|")
            for t in table:
                print(f"| {t['members']} | {t['rate']:,.0f} ({' / '.join(f'{x:,}' for x in t['rounds'])}) "
                      f"| {t['ratio']:.2f} | {t['member_rate']:,.0f} | {t['cpu_us_mean']:.2f} / "
                      f"{t['cpu_us_max']:.2f} | {t['projected']:,.0f} |")
            print(f"\nProjected = members x 1e6 / (CPU us per record of the slowest member), "
                  f"capped by members x 1e6 / (the bare loop's CPU us per record) = members x "
                  f"{1e6 / bare_cpu:,.0f}: each member alone on its own core, busy all the time "
                  f"(CPU-bound), partitions spread evenly. The broker, which here shares the "
                  f"same 2 cores, is assumed not to be the limit; the bare loop's measured "
                  f"wall rate here ({bare:,.0f}/s) is below its CPU bound because it too waits "
                  f"for that broker.\n", flush=True)

        # ------------------------------------------------ 2. sync cost, 3. join time
        if not {"2", "3"} <= skip:
            topic = kh.unique("fl-live")
            kh.create_topics(bootstrap, [topic], partitions=PARTITIONS)
            # enough for each of 3 plain daemons to see warmup_records of its partitions
            warm2 = bd.payloads(int(WARMUP * 3 * 1.6), seed=8)
            bd.produce_all(bootstrap, topic, warm2)
            gf, gp = kh.unique("fleet-live"), kh.unique("plain-live")
            fleet = {"state": kh.unique("fl-state"), "coordination": kh.unique("fl-coord")}
            F = [Daemon(config(bootstrap, topic, *io, gf, args, f"lf{k}", fleet), work,
                        f"lf{k}") for k in range(3)]
            P = [Daemon(config(bootstrap, topic, *io, gp, args, f"lp{k}", None), work,
                        f"lp{k}") for k in range(3)]
            extra: list = []
            try:
                settled(F, len(warm2), 120, fleet=True)
                settled(P, len(warm2), 120, fleet=False)
                if "2" not in skip:
                    live = bd.payloads(int(args.live_rate * args.live_seconds), seed=99)
                    cost = live_cost(bootstrap, topic, F, P, args, live)
                    rows = cost["rows"]
                    fr = [x for x in rows if x["fleet"]]
                    pr = [x for x in rows if not x["fleet"]]
                    f_cpu, p_cpu = med([x["cpu_per_s"] for x in fr]), med(
                        [x["cpu_per_s"] for x in pr])
                    lead = [x for x in fr if x.get("leader")]
                    res["sync_cost"] = {"rate": args.live_rate, "seconds": args.live_seconds,
                                        "rows": rows, "fleet_cpu_per_s_median": f_cpu,
                                        "plain_cpu_per_s_median": p_cpu,
                                        "produce_seconds": cost["produce_seconds"]}
                    print(f"### 2. Sync and merge cost: 3 members per group, paced stream "
                          f"{args.live_rate:,.0f} records/s for {args.live_seconds:.0f} s "
                          f"(produced in {cost['produce_seconds']:.1f} s), "
                          f"model.sync_seconds {SYNC:g}\n")
                    print("| daemon | records | CPU s/s | coordination sent B/s | coordination "
                          "received B/s | state sent B/s | state received B/s | stats "
                          "published / merged | versions adopted |")
                    print("|---|---|---|---|---|---|---|---|---|")
                    for x in rows:
                        name = x["member"] + (" (leader)" if x.get("leader") else "") + \
                            ("" if x["fleet"] else " (fleet off)")
                        if x["fleet"]:
                            print(f"| {name} | {x['records']:,.0f} | {x['cpu_per_s']:.3f} | "
                                  f"{x['coordination_sent_Bps']:,.0f} | "
                                  f"{x['coordination_received_Bps']:,.0f} | "
                                  f"{x['state_sent_Bps']:,.0f} | {x['state_received_Bps']:,.0f}"
                                  f" | {x['published']:.0f} / {x['merged']:.0f} | "
                                  f"{x['versions_published']:.0f} |")
                        else:
                            print(f"| {name} | {x['records']:,.0f} | {x['cpu_per_s']:.3f} | "
                                  "- | - | - | - | - | - |")
                    print(f"\nMedian CPU s/s per member: fleet {f_cpu:.3f}, fleet off "
                          f"{p_cpu:.3f}: the fleet costs {f_cpu - p_cpu:+.3f} core per member"
                          + (f"; the leader {lead[0]['cpu_per_s'] - p_cpu:+.3f}" if lead
                             else "") + "\n", flush=True)
                if "3" not in skip:
                    n_live = int(args.live_rate * (30 + 25 * args.join_rounds))
                    bg = Paced(bootstrap, topic, bd.payloads(n_live, seed=123), args.live_rate)
                    bg.start()
                    time.sleep(3)
                    joins = {"fleet": [], "plain": []}
                    for r in range(args.join_rounds):
                        for kind, group, fl in (("fleet", gf, fleet), ("plain", gp, None)):
                            tag = f"j{r}{kind[0]}"
                            d = Daemon(config(bootstrap, topic, *io, group, args, tag, fl),
                                       work, tag)
                            extra.append(d)
                            j = join_time(d)
                            m = d.metrics()
                            j["version"] = d.value(m, "streamgmm_fleet_model_version")
                            joins[kind].append(j)
                            print(f"join round {r + 1}, {kind}: metrics {fmt(j['metrics_up'])}"
                                  f" s, model {fmt(j.get('model'))} s, partitions "
                                  f"{fmt(j.get('assigned'))} s, ready {fmt(j['ready'])} s, "
                                  f"first record {fmt(j['first_record'])} s (version "
                                  f"{j['version']:.0f})", flush=True)
                            time.sleep(1.0)
                            j["exit_code"] = stop_all([d])[0]
                            # let the group rebalance back before the next joiner
                            time.sleep(4.0)
                    bg.halt.set()
                    bg.join(30)
                    res["join"] = joins
                    print(f"\n### 3. A new member joins a group of 3 (live stream "
                          f"{args.live_rate:,.0f} records/s; medians of {args.join_rounds})\n")
                    print("| new member | metrics served, s | model usable, s | partitions "
                          "assigned, s | ready (streamgmm_ready = 1), s | first record "
                          "scored, s |")
                    print("|---|---|---|---|---|---|")
                    for kind, label in (("fleet", "fleet member, state in Kafka (restores "
                                                  "the newest version)"),
                                        ("plain", f"plain daemon, no state (warms up on "
                                                  f"{WARMUP:,} records)")):
                        js = joins[kind]
                        print(f"| {label} | {med([j['metrics_up'] for j in js]):.2f} | "
                              f"{med([j.get('model') for j in js]):.2f} | "
                              f"{med([j.get('assigned') for j in js]):.2f} | "
                              f"{med([j['ready'] for j in js]):.2f} | "
                              f"{med([j['first_record'] for j in js]):.2f} |")
                    print(flush=True)
            finally:
                stop_all(extra)
                res["live_versions_end"] = [d.value(d.metrics(), "streamgmm_fleet_model_version")
                                            for d in F]
                codes = stop_all(F + P)
                res["live_exit_codes"] = {d.tag: c for d, c in zip(F + P, codes)}
                res["live_log_problems"] = {d.tag: problems(d) for d in F + P + extra
                                            if problems(d)}
        res["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        res["run_seconds"] = round(time.perf_counter() - t_run, 1)
        bad = {k: v for k, v in res.get("live_log_problems", {}).items()}
        for n, rs in res.get("throughput", {}).get("runs", {}).items():
            for x in rs:
                bad.update(x.get("log_problems") or {})
                if any(c != 0 for c in x.get("exit_codes", [])):
                    print(f"exit codes of the {n}-member run: {x['exit_codes']}")
                if len(set(x["versions"])) > 1 or x["leaders"] != 1:
                    print(f"{n}-member run: versions {x['versions']}, leaders {x['leaders']}")
        if any(c not in (0, None) for c in res.get("live_exit_codes", {}).values()):
            print(f"exit codes of the live groups: {res['live_exit_codes']}")
        for tag, lines in bad.items():
            print(f"log problems of {tag} ({len(lines)} lines), first: {lines[:3]}")
        print(f"run time {res['run_seconds']:.0f}s, load {res['load_avg_1m_end']}")
        with open(work / "result.json", "w") as f:
            json.dump(res, f, default=str, indent=1)
        print(f"full results: {work / 'result.json'}")
        return 0
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
