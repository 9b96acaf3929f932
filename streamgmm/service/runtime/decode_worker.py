"""Record decoding in a child process, so JSON parsing runs on another core while the main
process fetches; used only when the process may use three or more CPUs."""
from __future__ import annotations

import os
import signal
import time


# With msgspec decoding (~0.8 us/record) the worker takes little off the main process and
# adds a pickled hand-off and a second busy process: on a 2-CPU box it measured no faster and
# much less steady than decoding in-process (the main loop stalls whenever the worker is not
# scheduled at once; BENCHMARKS.md). So it needs a CPU of its own beyond the main loop's and
# kafka-python's threads'.
MIN_CPUS_FOR_WORKER = 3


def decode_worker_wanted() -> bool:
    """Use a decode worker process? `STREAMGMM_DECODE_WORKER=0|1` decides, else: when this
    process may use at least MIN_CPUS_FOR_WORKER CPUs (`available_cpus`)."""
    env = os.environ.get("STREAMGMM_DECODE_WORKER", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return available_cpus() >= MIN_CPUS_FOR_WORKER


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> float:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container
    limited to one CPU on a large node still sees every core in its affinity mask)."""
    try:
        n: float = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)
    quota = _cgroup_cpu_quota(cgroup_root)
    return min(n, quota) if quota is not None else n


def _cgroup_cpu_quota(root: str) -> float | None:
    """quota / period from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None if unlimited."""
    def read(path):
        try:
            with open(os.path.join(root, path)) as f:
                return f.read().split()
        except (OSError, ValueError):
            return None
    v2 = read("cpu.max")
    if v2 and len(v2) == 2 and v2[0] != "max":
        try:
            return int(v2[0]) / int(v2[1])
        except (ValueError, ZeroDivisionError):
            return None
    quota, period = read("cpu/cpu.cfs_quota_us"), read("cpu/cpu.cfs_period_us")
    if quota and period:
        try:
            q, p = int(quota[0]), int(period[0])
        except ValueError:
            return None
        if q > 0 and p > 0:
            return q / p
    return None


class DecodeWorker:
    """`records.decode_batch` in a child process, one batch at a time, so that JSON parsing
    runs on another core while this process fetches (kafka-python's fetch path is pure Python
    and takes most of a core). Used for full batches (a backlog); small batches are decoded
    inline, so a live stream gets no extra latency."""

    def __init__(self, records_cfg):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that has client threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_decode_worker_main, args=(child, records_cfg),
                                 name="streamgmm-decode", daemon=True)
        self._proc.start()
        child.close()

    def submit(self, recs, csv_header=None) -> None:
        """Start decoding a batch (at most one outstanding: see `result`)."""
        if csv_header is None:
            self._conn.send(([r.value for r in recs], None))
        else:
            self._conn.send((None, (csv_header, [r.row for r in recs])))

    def result(self):
        """(DecodedBatch, seconds) of the submitted batch; RuntimeError if the worker failed."""
        try:
            out = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the decode worker process died ({exc!r})") from exc
        if isinstance(out, BaseException):
            raise RuntimeError(f"the decode worker failed: {out!r}") from out
        return out

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(2)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(2)
        self._conn.close()


def _decode_worker_main(conn, records_cfg) -> None:
    """The worker: decode batches until told to stop or the parent goes away. It ignores
    SIGINT/SIGTERM: the parent drains it during its own graceful shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..records import compile_spec, decode_batch, decode_csv_rows

    spec = compile_spec(records_cfg)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        t0 = time.perf_counter()
        try:
            values, csv_job = job
            if csv_job is None:
                dec = decode_batch(values, spec)
            else:
                dec = decode_csv_rows(csv_job[0], csv_job[1], spec)
            conn.send((dec, time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
            conn.send(exc)
