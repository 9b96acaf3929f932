"""Metadata of records handed to the Detector and not yet returned by it (warm-up buffers them),
kept in order so results can be matched to their records and offsets committed behind them."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Chunk:
    """Metadata of good records handed to the Detector, in order: the source records, their
    `records.key_field` values (None when no key field: the Kafka key is used), and the
    record timestamps in ms (NaN if unknown)."""

    recs: list
    keys: list | None
    ts_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.recs)


class PendingQueue:
    """FIFO of Chunks for records given to `Detector.process` and not yet returned by it."""

    def __init__(self):
        self._chunks: deque[Chunk] = deque()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, chunk: Chunk) -> None:
        if len(chunk):
            self._chunks.append(chunk)
            self._n += len(chunk)

    def pop(self, n: int) -> Chunk:
        """The oldest `n` records' metadata (the Detector returns results oldest first)."""
        if n > self._n:
            raise RuntimeError(f"Detector returned {n} results but only {self._n} records "
                               "are pending")
        if self._chunks and len(self._chunks[0]) == n:  # the common case: one whole batch
            self._n -= n
            return self._chunks.popleft()
        recs, keys, ts = [], [], []
        need = n
        while need:
            c = self._chunks[0]
            ck = c.keys if c.keys is not None else [None] * len(c)
            if len(c) <= need:
                self._chunks.popleft()
                recs.extend(c.recs), keys.extend(ck), ts.append(c.ts_ms)
                need -= len(c)
            else:
                recs.extend(c.recs[:need]), keys.extend(ck[:need]), ts.append(c.ts_ms[:need])
                self._chunks[0] = Chunk(c.recs[need:], None if c.keys is None else ck[need:],
                                        c.ts_ms[need:])
                need = 0
        self._n -= n
        has_keys = any(c is not None for c in keys)
        return Chunk(recs, keys if has_keys else None, np.concatenate(ts) if ts else np.empty(0))

    def min_offsets(self) -> dict:
        """{(topic, partition): lowest pending offset} — commits must stay below these."""
        out: dict = {}
        for c in self._chunks:
            for r in c.recs:  # (a file's records: (topic, None))
                tp = (r.topic, r.partition)
                if r.offset < out.get(tp, r.offset + 1):
                    out[tp] = r.offset
        return out
