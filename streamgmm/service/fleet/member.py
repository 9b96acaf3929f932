"""A member's side of the shared model: what its Detector hands over between syncs.

The member's Detector follows the group (`Detector.follow(link)`): it scores with the
adopted version and, instead of stepping the model, gives this link the online-EM
statistics of the records it learns from, its scores (for the group threshold) and
its drift alarms. Every `model.sync_seconds` the fleet takes one `sync` message from here.
Raw rows leave the member only as the bounded refit sample (`fleet.sample_records`) and,
before the first version, its buffered warm-up rows. Rows that would make a sync larger than
SYNC_BYTES follow it in row-only messages of at most that size, so that wide records pass a
coordination topic at Apache Kafka's default `max.message.bytes` (1 MB).
"""
from __future__ import annotations

import bisect
import time

import numpy as np

from ...models import pooled

SCORES_PER_SYNC = 2000   # scores per member per sync for the group threshold
SYNC_BYTES = 900_000     # bound on the rows' share of one message (Kafka's default: 1 MB)
SYNC_OVERHEAD = 16_384   # a message's manifest and container beyond its arrays' data


class MemberLink:
    """Gathers statistics, scores, a row sample and drift alarms for the next sync."""

    def __init__(self, member_id: str, sample_records: int, warmup_records: int):
        from .sampling import Thinned

        self.member_id = member_id
        self.det = None
        self.warmup_records = int(warmup_records)
        self._stats = None          # (stats list, n records, generation)
        self._steps = 0
        self._scores = Thinned(SCORES_PER_SYNC)
        self._scores_gen = None     # the model generation the buffered scores are under
        self._rows = Thinned(sample_records) if sample_records > 0 else None
        self._marks: list = []      # (records seen after a chunk, wall time) for alarm times
        self._drift: dict | None = None  # resent each sync until a new generation arrives
        self._warm_sent = 0
        self._more: list = []       # row-only messages following this interval's sync
        self.scored = 0             # records scored by this member
        self.urgent = False         # a new drift report: sync now, not at the interval
        self._scored_at_take = 0

    # --------------------------------------------------------------- Detector link protocol
    def learn(self, model, X, resp, log_density) -> None:
        stats, n = pooled.statistics_of(model, X, resp, log_density)
        gen = self.det.model_version
        if self._stats is not None and self._stats[2] == gen and \
                pooled.compatible(model, self._stats[0]):
            stats, n = pooled.merge(model, self._stats[0], self._stats[1], stats, n)
        elif self._stats is not None:
            self._steps = 0  # statistics of an older generation are of other components
        self._stats = (stats, n, gen)
        self._steps += 1

    def scores(self, X, scores, is_anomaly) -> None:
        now = time.time()
        self.scored += len(scores)
        if self._scores_gen != self.det.model_version:  # a refit: other scores from now on
            self._scores.take()
            self._scores_gen = self.det.model_version
        self._scores.add(np.asarray(scores), now)  # all of them, as the single detector
        if self._rows is not None:
            self._rows.add(np.asarray(X, dtype=np.float64), now)
        seen = self.det.records_seen
        self._marks.append((seen, now))
        if len(self._marks) > 4096:
            del self._marks[:2048]

    def drift(self, alarm) -> None:
        self._drift = {"generation": int(self.det.model_version),
                       "detector": alarm.detector, "change_time": self._time_of(alarm.change_start),
                       "member": self.member_id, "at": self.scored}
        self.urgent = True

    def restart_warm_rows(self) -> None:
        """Send the rows buffered for a first version again (a solo member turned shared)."""
        self._warm_sent = 0

    def forget_drift(self) -> None:
        """Stop reporting the pending drift (the group did not refit for it)."""
        self._drift = None

    def records_since_drift(self) -> int:
        """Records scored since this member reported a drift the group has not refitted
        for yet (0 when none is pending)."""
        d = self._drift
        if d is None or d["generation"] != self.det.model_version:
            return 0
        return self.scored - d["at"]

    def _time_of(self, record: int) -> float:
        """Wall time when the member scored record number `record` (the chunk's time)."""
        i = bisect.bisect_left([m[0] for m in self._marks], int(record))
        return self._marks[min(i, len(self._marks) - 1)][1] if self._marks else time.time()

    # --------------------------------------------------------------------------- the sync
    def take(self, version: int):
        """(meta, arrays) of this interval's sync message; resets the interval."""
        det = self.det
        meta = {"member": self.member_id, "version": int(version),
                "generation": int(det.model_version), "ready": bool(det.ready),
                "n": 0, "steps": 0, "n_mixtures": 0, "drift": None, "sent_at": time.time(),
                "scored": self.scored - self._scored_at_take}
        self._scored_at_take = self.scored
        self.urgent = False
        arrays = {}
        if self._stats is not None and self._stats[2] == det.model_version:
            stats, n, _ = self._stats
            meta.update(n=int(n), steps=int(self._steps), n_mixtures=len(stats))
            arrays.update(pooled.to_arrays(stats))
        self._stats, self._steps = None, 0
        if self._drift is not None and self._drift["generation"] == det.model_version:
            meta["drift"] = dict(self._drift)
        else:
            self._drift = None
        scores, stimes = self._scores.take()
        # scores under a replaced generation (a version adopted since the last score, none
        # scored with it yet) would pull the new model's threshold towards the old one's
        if scores is not None and self._scores_gen == det.model_version:
            arrays["scores"], arrays["score_times"] = scores, stimes
        rows, rtimes = self._rows.take() if self._rows is not None else (None, None)
        start = None
        if not det.ready:  # before the first version: the buffered records, for its fit
            start = self._warm_sent
            rows, rtimes = self._warm_rows()
        self._more = []
        if rows is not None and len(rows):
            self._split_rows(meta, arrays, rows, rtimes, start)
        return meta, arrays

    def take_all(self, version: int) -> list:
        """This interval's messages: the sync (`take`), then the rows that did not fit in it,
        each message at most SYNC_BYTES."""
        out = [self.take(version)]
        out.extend(self._more)
        self._more = []
        return out

    def _split_rows(self, meta, arrays, rows, rtimes, start) -> None:
        """Put into the sync the rows that keep it within SYNC_BYTES and the others into
        row-only messages after it (`warm_from`: their position in the warm-up buffer)."""
        per_row = rows.shape[1] * rows.itemsize + rtimes.itemsize
        used = SYNC_OVERHEAD + sum(a.nbytes for a in arrays.values())
        first = max(0, (SYNC_BYTES - used) // per_row)
        step = max(1, (SYNC_BYTES - SYNC_OVERHEAD) // per_row)
        if first:
            arrays["rows"], arrays["row_times"] = rows[:first], rtimes[:first]
            if start is not None:
                meta["warm_from"] = start
        for i in range(first, len(rows), step):
            m = dict(meta, n=0, steps=0, n_mixtures=0, drift=None, scored=0)
            m.pop("warm_from", None)
            if start is not None:
                m["warm_from"] = start + i
            self._more.append((m, {"rows": rows[i:i + step], "row_times": rtimes[i:i + step]}))

    def _warm_rows(self):
        """Rows buffered for the first version not sent yet (at most warmup_records)."""
        if self._warm_sent >= self.warmup_records:
            return None, None
        X = self.det.buffered()[self._warm_sent:self.warmup_records]
        if not len(X):
            return None, None
        self._warm_sent += len(X)
        return np.asarray(X, dtype=np.float64), np.full(len(X), time.time())
