"""Model and checkpoint files carry no raw records and no uninitialised memory.

A recognisable marker value is put into the input; the saved file (the NPZ's raw bytes, and
every zip member decompressed, in case a member is ever compressed) must not contain it as a
float64, as a float32 or as text, unless the daemon is told to keep recent records
(``checkpoint.include_recent_records: true``). Every saved buffer is exactly as long as its
filled part.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml

from kafka_helpers import DaemonThread, FEATURES, mixture_rows, to_record, wait_for
from streamgmm import Detector
from streamgmm.persistence import load_state

pytestmark = pytest.mark.timeout(180)

MARKER = 123456.789
MARKER_BYTES = {"float64": struct.pack("<d", MARKER), "float64-be": struct.pack(">d", MARKER),
                "float32": struct.pack("<f", MARKER), "float32-be": struct.pack(">f", MARKER),
                "text": b"123456.789"}


def marked_rows(n, seed=0, every=97):
    """Mixture rows whose first feature is MARKER in every `every`-th row (a few dozen
    scattered rows: too few to become a model parameter, but in every recent-rows buffer)."""
    X = mixture_rows(n, seed=seed)
    X[every - 1::every, 0] = MARKER
    return X


def marker_hits(path) -> list:
    """Which encodings of MARKER occur in the file's bytes or in any zip member."""
    blobs = [open(path, "rb").read()]
    with zipfile.ZipFile(path) as zf:
        blobs += [zf.read(name) for name in zf.namelist()]
    return sorted({kind for kind, pat in MARKER_BYTES.items() for b in blobs if pat in b})


def assert_no_rows_or_slack(path, window=None):
    """No input-row buffers, and the score ring exactly as long as its filled part."""
    meta, arrays = load_state(path)
    for name in ("refit.ring", "learn.X", "learn.resp", "learn.scores", "drift.ref_buf",
                 "drift.rem"):
        assert arrays[name].size == 0, (name, arrays[name].shape)
    assert meta["refit"]["filled"] == 0
    n_filled = meta["threshold"]["n_filled"]
    assert arrays["threshold.ring"].shape == (n_filled,)
    assert np.isfinite(arrays["threshold.ring"]).any()
    if window is not None:
        assert meta["threshold"]["window"] == window
    # nothing else row-shaped: every other array is a parameter/statistic of the model
    for name, a in arrays.items():
        if name != "threshold.ring":
            assert a.size <= 1000, (name, a.shape)
    return meta, arrays


def test_marker_is_found_when_it_is_there(tmp_path):
    """The search itself works (else the tests below could not fail)."""
    path = tmp_path / "x.npz"
    np.savez(path, a=np.array([1.0, MARKER]), b=np.array([MARKER], dtype=np.float32))
    assert {"float64", "float32"} <= set(marker_hits(path))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_file_has_no_input_rows(tmp_path, dtype):
    det = Detector({"n_components": 3, "warmup_records": 300,
                    "threshold": {"window": 20000}, "drift": {"reference_records": 500}},
                   feature_names=list(FEATURES), dtype=dtype, background_refit=False)
    det.fit(marked_rows(2000))
    for i in range(7):                # the stream goes on: learn queue, drift block, ring
        det.process(marked_rows(333, seed=10 + i))
    det.process(marked_rows(120, seed=20))  # fewer than online.batch_size: stays queued
    assert det.scheduler_.ring.filled > 0 and det._learn_n > 0 and len(det.monitor_.rem_)
    path = tmp_path / "model.npz"
    det.save(path)
    assert marker_hits(path) == []
    meta, arrays = assert_no_rows_or_slack(path, window=20000)
    # the ring was not full: the old file carried 20,000 - n slots of uninitialised memory
    assert 0 < meta["threshold"]["n_filled"] < 20000
    path2 = tmp_path / "model.joblib"
    det.export_joblib(path2)
    assert not any(p in path2.read_bytes() for p in MARKER_BYTES.values())
    # the same detector with its recent records: the marker is there
    path3 = tmp_path / "with-rows.npz"
    det.save(path3, include_recent_records=True)
    assert "float64" in marker_hits(path3)


def test_restored_without_rows_still_works_and_refits_on_new_records(tmp_path):
    det = Detector({"n_components": 2, "warmup_records": 500,
                    "refit": {"window": 3000, "min_records": 1000, "cooldown_records": 0}},
                   background_refit=False)
    draw = lambda n, s: mixture_rows(n, seed=s)[:, :2]  # noqa: E731
    det.process(draw(500, 1))
    for i in range(6):
        det.process(draw(500, 2 + i))
    det.scheduler_.request(det.counters["records"] - 2000, "test")  # 2,000 rows ready
    det.save(tmp_path / "rows.npz", include_recent_records=True)
    det.save(tmp_path / "plain.npz")

    with_rows = Detector.load(tmp_path / "rows.npz")
    res = with_rows.process(draw(500, 50))             # to the next policy boundary (4,000)
    started = [e for e in res.events if e.kind == "refit_started"]
    assert started and started[0].detail["n_records"] == 2500  # the saved rows are used

    back = Detector.load(tmp_path / "plain.npz")
    assert back.scheduler_.ring.filled == 0 and back._learn_n == 0
    np.testing.assert_array_equal(back.threshold_model_.recent(),
                                  det.threshold_model_.recent())
    assert back.threshold_ == det.threshold_
    X = draw(10, 50)
    a, b = det.score(X), back.score(X)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    events = []
    for i in range(19):                                  # 950 new rows: not enough yet
        events += back.process(draw(50, 100 + i)).events
    assert not [e for e in events if e.kind.startswith("refit")]
    events = []
    for i in range(11):  # to record 5,000: the first policy boundary with >= 1,000 new rows
        events += back.process(draw(50, 200 + i)).events
    assert [e.kind for e in events] == ["refit_started"]
    events += back.wait_for_refit(timeout=60)
    assert [e.kind for e in events] == ["refit_started", "refit_done"]
    assert events[0].detail["n_records"] == 1500          # only records seen since the restore
    assert back.model_version == det.model_version + 1
    res = back.process(draw(200, 300))
    assert len(res) == 200 and 0 < np.isfinite(res.scores).sum() == 200


def test_cli_fit_model_has_no_input_rows(tmp_path):
    X = marked_rows(1500)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(X)))
    assert MARKER_BYTES["text"] in data.read_bytes()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"type": "stdin"}, "sink": {"type": "stdout"},
        "dead_letter": {"type": "stdout"}, "records": {"features": FEATURES},
        "detector": {"n_components": 3, "max_components": 3}, "metrics": {"enabled": False}}))
    model = tmp_path / "model.npz"
    r = subprocess.run([sys.executable, "-m", "streamgmm", "fit", "--config", str(cfg),
                        "--input", str(data), "--output", str(model)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert marker_hits(model) == []
    assert_no_rows_or_slack(model)


@pytest.mark.parametrize("include", [False, True])
def test_daemon_checkpoint_holds_rows_only_when_configured(tmp_path, include):
    X = marked_rows(3000, seed=3)
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(X)))
    ck = tmp_path / "ck.npz"
    cfg = {
        "source": {"type": "file", "path": str(data)},
        "records": {"features": list(FEATURES), "key_field": "id"},
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "emit": "all"},
        "dead_letter": {"type": "file", "path": str(tmp_path / "dead.jsonl")},
        "detector": {"n_components": 3, "max_components": 3, "warmup_records": 300},
        "checkpoint": {"path": str(ck), "interval_seconds": 3600,
                       "include_recent_records": include},
        "metrics": {"enabled": False},
    }
    d = DaemonThread(cfg).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    assert ck.exists()
    hits = marker_hits(ck)
    if include:
        assert "float64" in hits                       # the refit ring's raw rows
        meta, arrays = load_state(ck)
        assert arrays["refit.ring"].shape == (3000, 4) == (meta["refit"]["filled"], 4)
        assert arrays["threshold.ring"].shape == (meta["threshold"]["n_filled"],)
    else:
        assert hits == []
        assert_no_rows_or_slack(ck)
    # either way the daemon restarts from it
    assert Detector.load(ck).ready
