"""File and stdin sources (no Kafka): the run ends with exit 0 at end of input; outputs and
dead letters go to JSON-lines files or stdout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kafka_helpers import (DaemonThread, FEATURES, mixture_rows, signal_when, to_record,
                           wait_for, write_yaml)

pytestmark = pytest.mark.timeout(120)


def _cfg(source: dict, sink: dict, dead_letter: dict, warmup: int = 100) -> dict:
    return {
        "source": source,
        "records": {"features": list(FEATURES), "key_field": "id"},
        "sink": {"emit": "all", **sink},
        "dead_letter": dead_letter,
        "detector": {"n_components": 3, "max_components": 3, "warmup_records": warmup},
        "metrics": {"enabled": False},
        "kafka": {"poll_timeout_ms": 100},
    }


def _jsonl(path, n: int, bad_every: int = 0) -> tuple[int, int]:
    X = mixture_rows(n, seed=5)
    good = bad = 0
    with open(path, "w") as f:
        for i, x in enumerate(X):
            if bad_every and i % bad_every == bad_every - 1:
                f.write('{"id": "b%d", "amount": "oops"}\n' % i)
                bad += 1
            else:
                f.write(json.dumps(to_record(i, x)) + "\n")
                good += 1
    return good, bad


def _lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_file_source_run_ends_with_exit_0_at_eof(tmp_path):
    data = tmp_path / "events.jsonl"
    good, bad = _jsonl(data, 1000, bad_every=100)
    out, dl = tmp_path / "out" / "scored.jsonl", tmp_path / "dead.jsonl"
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "file", "path": str(out)},
               {"type": "file", "path": str(dl)})
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "streamgmm", "run", "--config", path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    scored = _lines(out)
    assert len(scored) == good
    assert [s["offset"] for s in scored] == sorted(s["offset"] for s in scored)
    assert {s["key"] for s in scored} == {f"r{i}" for i in range(1000) if i % 100 != 99}
    assert all({"score", "threshold", "anomaly", "model_version"} <= set(s) for s in scored)
    dead = _lines(dl)
    assert len(dead) == bad
    assert all(d["reason"] == "non_numeric" and '"oops"' in d["value"] for d in dead)
    assert [d["offset"] for d in dead] == [i for i in range(1000) if i % 100 == 99]


def test_csv_file_source_in_process(tmp_path):
    data = tmp_path / "events.csv"
    X = mixture_rows(400, seed=6)
    with open(data, "w") as f:
        f.write("id," + ",".join(FEATURES) + "\n")
        for i, x in enumerate(X):
            f.write(f"r{i}," + ",".join(f"{v:.6f}" for v in x) + "\n")
        f.write("bad1,1.0,abc,1.0,1.0\n")
        f.write("bad2,1.0,2.0,,1.0\n")
    out, dl = tmp_path / "scored.jsonl", tmp_path / "dead.jsonl"
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "file", "path": str(out)},
               {"type": "file", "path": str(dl)})
    d = DaemonThread(cfg).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    assert len(_lines(out)) == 400
    dead = {x["value"].split(",")[0]: x for x in _lines(dl)}
    assert dead["bad1"]["reason"] == "non_numeric" and dead["bad1"]["value"] == "bad1,1.0,abc,1.0,1.0"
    assert dead["bad2"]["reason"] == "missing_field"


def test_gzip_file_source_is_read_by_content(tmp_path):
    """A gzip-compressed input is decompressed whatever its name; .csv.gz is CSV."""
    import gzip

    X = mixture_rows(400, seed=7)
    text = "id," + ",".join(FEATURES) + "\n" + "".join(
        f"r{i}," + ",".join(f"{v:.6f}" for v in x) + "\n" for i, x in enumerate(X))
    for name, fmt in (("events.csv.gz", "auto"), ("events.data", "csv")):
        data = tmp_path / name
        data.write_bytes(gzip.compress(text.encode()))
        out, dl = tmp_path / f"{name}.out.jsonl", tmp_path / f"{name}.dead.jsonl"
        cfg = _cfg({"type": "file", "path": str(data), "format": fmt},
                   {"type": "file", "path": str(out)}, {"type": "file", "path": str(dl)})
        d = DaemonThread(cfg).start()
        wait_for(lambda: not d.alive, 60, what="end of file")
        assert d.stop() == 0
        assert [s["key"] for s in _lines(out)] == [f"r{i}" for i in range(400)]
        assert not dl.exists() or not _lines(dl)


def test_stdin_source_to_stdout(tmp_path):
    X = mixture_rows(300, seed=7)
    text = "".join(json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(X)) + "[]\n"
    cfg = _cfg({"type": "stdin"}, {"type": "stdout"}, {"type": "stdout"}, warmup=50)
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    r = subprocess.run([sys.executable, "-m", "streamgmm.service.runtime.daemon", "--config", path],
                       input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    scored = [x for x in lines if "score" in x]
    dead = [x for x in lines if "reason" in x]
    assert len(scored) == 300 and len(dead) == 1 and dead[0]["reason"] == "not_object"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_stdin_stays_open_exits_0(tmp_path, sig):
    """The writer keeps stdin open (a pipe from a live process): the reading thread is still
    blocked in it at exit, which must not abort the interpreter (exit 134)."""
    import signal

    X = mixture_rows(100, seed=7)
    cfg = _cfg({"type": "stdin"}, {"type": "stdout"}, {"type": "stdout"}, warmup=50)
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    p = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config", path],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write("".join(json.dumps(to_record(i, x)) + "\n"
                              for i, x in enumerate(X)).encode())
        p.stdin.flush()  # and left open
        lines = [p.stdout.readline() for _ in range(100)]
        assert all(b'"score"' in line for line in lines)
        p.send_signal(getattr(signal, sig))
        p.wait(30)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
        p.stdin.close()
    assert p.returncode == 0, err
    assert "Fatal Python error" not in err and "stopped (exit code 0)" in err


def _following(tmp_path, n: int, first: int, seed: int):
    """(input file holding the first ``first`` of n JSON lines, output file, the n lines, a
    daemon following the file)."""
    data = tmp_path / "tail.jsonl"
    rows = [json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(mixture_rows(n, seed))]
    data.write_text("".join(rows[:first]))
    out = tmp_path / "scored.jsonl"
    cfg = _cfg({"type": "file", "path": str(data), "follow": True},
               {"type": "file", "path": str(out)}, {"type": "stdout"})
    return data, out, rows, DaemonThread(cfg).start()


def test_follow_picks_up_appended_lines(tmp_path):
    data, out, rows, d = _following(tmp_path, 300, 200, seed=8)
    try:
        wait_for(lambda: out.exists() and len(_lines(out)) == 200, 30, what="first part")
        with open(data, "a") as f:
            f.write("".join(rows[200:250]))
            f.write(rows[250][:20])  # a half-written line is not read yet
            f.flush()
            wait_for(lambda: len(_lines(out)) == 250, 30, what="appended lines")
            f.write(rows[250][20:])
        wait_for(lambda: len(_lines(out)) == 251, 30, what="completed line")
        assert d.alive  # following: no exit at end of file
    finally:
        assert d.stop() == 0


def test_follow_reads_a_truncated_or_rotated_file_from_its_start(tmp_path):
    """As `tail -F`: a file truncated under the daemon (copytruncate) and a file renamed away
    and replaced (rotation) are read from their start; nothing appended after is lost."""
    data, out, rows, d = _following(tmp_path, 600, 300, seed=9)
    try:
        wait_for(lambda: out.exists() and len(_lines(out)) == 300, 30, what="first part")
        with open(data, "r+") as f:  # truncated, then a few (shorter than before) appended
            f.truncate(0)
        time.sleep(0.5)
        with open(data, "a") as f:
            f.write("".join(rows[300:350]))
        wait_for(lambda: len(_lines(out)) == 350, 30, what="lines after the truncation")
        os.rename(data, tmp_path / "tail.jsonl.1")  # rotation: renamed, a new file
        data.write_text("".join(rows[350:400]))
        wait_for(lambda: len(_lines(out)) == 400, 30, what="lines of the new file")
        keys = [o["key"] for o in _lines(out)]
        assert keys == [f"r{i}" for i in range(400)]
    finally:
        assert d.stop() == 0


def _every_row_scored_once(tmp_path, data, n: int) -> None:
    """Run the daemon over a CSV file to its end: rows r0..r{n-1} scored in order, no dead
    letter."""
    out, dl = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    cfg = _cfg({"type": "file", "path": str(data), "format": "csv"},
               {"type": "file", "path": str(out)}, {"type": "file", "path": str(dl)})
    d = DaemonThread(cfg).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    assert not dl.exists() or not _lines(dl)
    assert [o["key"] for o in _lines(out)] == [f"r{i}" for i in range(n)]


def test_csv_with_a_byte_order_mark(tmp_path):
    """Spreadsheet exports open with a UTF-8 BOM: the header's first name is still a name."""
    data = tmp_path / "export.csv"
    X = mixture_rows(300, seed=10)
    head = ",".join(["id", *FEATURES])
    body = "".join(f"r{i}," + ",".join(repr(float(v)) for v in x) + "\r\n"
                   for i, x in enumerate(X))
    data.write_bytes(b"\xef\xbb\xbf" + (head + "\r\n" + body).encode())
    _every_row_scored_once(tmp_path, data, 300)


def test_a_cut_gzip_file_is_scored_up_to_the_cut_then_a_one_line_exit_1(tmp_path):
    import gzip

    X = mixture_rows(3000, seed=11)
    text = "".join(json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(X))
    packed = gzip.compress(text.encode())
    data = tmp_path / "cut.jsonl.gz"
    data.write_bytes(packed[: len(packed) // 2])
    out = tmp_path / "out.jsonl"
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "file", "path": str(out)},
               {"type": "stdout"})
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    r = subprocess.run([sys.executable, "-m", "streamgmm.service.runtime.daemon", "--config", path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"source.path {data}: the compressed input is cut short" in r.stderr
    assert "Traceback" not in r.stderr
    keys = [o["key"] for o in _lines(out)]
    assert 100 < len(keys) < 3000 and keys == [f"r{i}" for i in range(len(keys))]


def test_csv_quoted_fields_may_span_lines(tmp_path):
    """A quoted CSV field with a line break in it (a note column) is one row, as for `score`:
    no half-row is scored and no fragment is dead-lettered."""
    data = tmp_path / "notes.csv"
    X = mixture_rows(300, seed=12)
    rows = ["id," + ",".join(FEATURES) + ",note"]
    for i, x in enumerate(X):
        note = f'"line one\r\nline two, {i}"' if i % 7 == 0 else "plain"
        rows.append(f"r{i}," + ",".join(repr(float(v)) for v in x) + "," + note)
    data.write_text("\r\n".join(rows) + "\r\n")
    _every_row_scored_once(tmp_path, data, 300)


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_csv_quote_never_closed_is_a_dead_letter_not_a_silent_loss(tmp_path, source):
    """A quoted field opened and never closed gathers every line after it, looking for its
    end; at the end of the input those lines used to vanish: no event, no dead letter, no
    log line. They are one dead letter now (not_object), with every byte of them."""
    data = tmp_path / "open-quote.csv"
    X = mixture_rows(200, seed=13)
    rows = ["id," + ",".join(FEATURES)]
    rows += [f"r{i}," + ",".join(repr(float(v)) for v in x) for i, x in enumerate(X)]
    tail = ['r200,1,2,3,"4', "r201,1,1,1,1", "r202,1,1,1,1"]
    data.write_text("\n".join(rows + tail) + "\n")
    out, dl = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    src = ({"type": "file", "path": str(data), "format": "csv"} if source == "file"
           else {"type": "stdin", "format": "csv"})
    cfg = _cfg(src, {"type": "file", "path": str(out)}, {"type": "file", "path": str(dl)})
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    with open(data) as stdin:
        r = subprocess.run([sys.executable, "-m", "streamgmm.service.runtime.daemon",
                            "--config", path], stdin=stdin, capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 0, r.stderr
    assert [o["key"] for o in _lines(out)] == [f"r{i}" for i in range(200)]
    [letter] = _lines(dl)
    assert letter["reason"] == "not_object" and "never closed" in letter["message"]
    assert letter["value"] == "\n".join(tail) and letter["offset"] == 200


def test_pretrained_model_skips_warmup(tmp_path):
    from streamgmm import Detector
    from streamgmm.service.config import config_from_dict, detector_dict

    data = tmp_path / "events.jsonl"
    good, _ = _jsonl(data, 150)
    model = tmp_path / "model.npz"
    cfg = _cfg({"type": "file", "path": str(data)},
               {"type": "file", "path": str(tmp_path / "out.jsonl")}, {"type": "stdout"},
               warmup=10_000)  # far more than the file holds: only a model can score it
    det = Detector.from_dict(detector_dict(config_from_dict(cfg, environ={})),
                             feature_names=list(FEATURES))
    det.fit(mixture_rows(2000, seed=9))
    det.save(str(model))
    cfg["model"] = {"path": str(model)}
    d = DaemonThread(cfg).start()
    wait_for(lambda: not d.alive, 30, what="end of file")
    assert d.stop() == 0
    assert len(_lines(tmp_path / "out.jsonl")) == good == 150


def test_config_detector_settings_override_the_models(tmp_path):
    """The YAML is the one truth: a model saved with percentile 1 runs at the config's 20."""
    from streamgmm import Detector

    data = tmp_path / "events.jsonl"
    good, _ = _jsonl(data, 2000)
    model = tmp_path / "model.npz"
    det = Detector({"n_components": 3, "threshold": {"percentile": 1.0}},
                   feature_names=list(FEATURES))
    det.fit(mixture_rows(4000, seed=9))
    det.save(str(model))
    cfg = _cfg({"type": "file", "path": str(data)},
               {"type": "file", "path": str(tmp_path / "out.jsonl")}, {"type": "stdout"},
               warmup=10_000)
    cfg["detector"]["threshold"] = {"percentile": 20.0}
    cfg["model"] = {"path": str(model)}
    cfg["logging"] = {"level": "INFO"}
    r = _run_cli(cfg, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "detector.threshold.percentile 1.0 -> 20.0" in r.stderr
    scored = _lines(tmp_path / "out.jsonl")
    assert len(scored) == good
    flagged = sum(e["anomaly"] for e in scored) / len(scored)
    assert 0.12 < flagged < 0.3, flagged


def _run_cli(cfg: dict, tmp_path) -> subprocess.CompletedProcess:
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    return subprocess.run([sys.executable, "-m", "streamgmm", "run", "--config", path],
                          capture_output=True, text=True, timeout=60)


def test_corrupt_checkpoint_is_refused_with_one_clear_line(tmp_path):
    data = tmp_path / "events.jsonl"
    _jsonl(data, 50)
    ck = tmp_path / "ck.npz"
    ck.write_bytes(b"this is not a checkpoint")
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "stdout"}, {"type": "stdout"})
    cfg["checkpoint"] = {"path": str(ck)}
    r = _run_cli(cfg, tmp_path)
    assert r.returncode == 1
    assert "cannot load checkpoint" in r.stderr and str(ck) in r.stderr
    assert "Traceback" not in r.stderr
    assert ck.read_bytes() == b"this is not a checkpoint"   # not overwritten


def test_a_pickle_at_the_checkpoint_path_is_refused_with_a_hint_that_works(tmp_path):
    """model.trusted does not make a checkpoint loadable from a pickle: the message says
    what does (the file as model.path)."""
    import pickle

    data = tmp_path / "events.jsonl"
    _jsonl(data, 50)
    ck = tmp_path / "ck.npz"
    ck.write_bytes(pickle.dumps({"a": 1}))
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "stdout"}, {"type": "stdout"})
    cfg["checkpoint"] = {"path": str(ck)}
    cfg["model"] = {"trusted": True}
    r = _run_cli(cfg, tmp_path)
    assert r.returncode == 1
    assert "never loaded from a pickle" in r.stderr and "model.path" in r.stderr
    assert "config model.trusted: true" not in r.stderr


def test_checkpoint_for_other_features_is_refused(tmp_path):
    from streamgmm import Detector

    data = tmp_path / "events.jsonl"
    _jsonl(data, 50)
    ck = tmp_path / "ck.npz"
    det = Detector.from_dict({"n_components": 2, "warmup_records": 10},
                             feature_names=["a", "b", "c", "d"])
    det.fit(mixture_rows(500, seed=2))
    det.save(str(ck))
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "stdout"}, {"type": "stdout"})
    cfg["checkpoint"] = {"path": str(ck)}
    r = _run_cli(cfg, tmp_path)
    assert r.returncode == 1
    assert "records.features" in r.stderr and "Traceback" not in r.stderr


def _run_following(tmp_path, **sections):
    """`streamgmm run` following a file of 300 records into a file sink: (the process, the
    input, the output, the number of good records)."""
    data = tmp_path / "tail.jsonl"
    good, _ = _jsonl(data, 300)
    out = tmp_path / "scored.jsonl"
    cfg = _cfg({"type": "file", "path": str(data), "follow": True},
               {"type": "file", "path": str(out)}, {"type": "stdout"})
    cfg.update(sections)
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    p = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, data, out, good


def test_sigint_while_following_flushes_and_exits_0(tmp_path):
    import signal

    p, data, out, good = _run_following(tmp_path)
    err, _ = signal_when(p, lambda: out.exists() and len(_lines(out)) == good, "scored",
                         signal.SIGINT)
    assert p.returncode == 0, err
    assert "SIGINT received" in err


def test_sigterm_is_prompt_whatever_the_poll_timeout(tmp_path):
    """A poll waits at most a second at a time, so a long poll_timeout_ms does not hold a
    stop request up until shutdown_timeout_seconds runs out (exit 1)."""
    p, data, out, good = _run_following(tmp_path, kafka={"poll_timeout_ms": 60000})
    scored_at = []

    def idle():  # all scored, then 1.5 s more: waiting in a poll at the end of the file
        if not scored_at and out.exists() and len(_lines(out)) == good:
            scored_at.append(time.monotonic())
        return bool(scored_at) and time.monotonic() - scored_at[0] > 1.5
    err, took = signal_when(p, idle, "scored")
    assert p.returncode == 0, err
    assert took < 8, took  # (shutdown_timeout_seconds is 10 s by default)


def test_sighup_is_logged_and_the_daemon_carries_on(tmp_path):
    """logrotate's postrotate `kill -HUP`: its default action ended the daemon with no flush,
    commit or checkpoint. It is logged and ignored (renamed outputs reopen on their own)."""
    p, data, out, good = _run_following(tmp_path)
    try:
        wait_for(lambda: out.exists() and len(_lines(out)) == good, 60, what="scored")
        p.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert p.poll() is None
        with open(data, "a") as f:  # still reading and scoring
            f.write(json.dumps({"id": "after-hup", **dict(zip(FEATURES, [0.1] * 4))}) + "\n")
        wait_for(lambda: len(_lines(out)) == good + 1, 30, what="the record after SIGHUP")
    finally:
        err, _ = signal_when(p, lambda: True, "stop")
    assert p.returncode == 0, err
    assert "SIGHUP received" in err and "carrying on" in err


def test_sigterm_during_a_long_warmup_fit_exits_0_at_once(tmp_path):
    """Wide records and a large warm-up make a fit of many seconds: a stop does not wait for
    it (nor overrun shutdown_timeout_seconds into exit 1); nothing is committed or saved."""
    import signal

    import numpy as np

    rng = np.random.default_rng(0)
    names = [f"f{j}" for j in range(30)]
    data = tmp_path / "wide.jsonl"
    with open(data, "w") as f:
        for i, x in enumerate(rng.normal(size=(3000, 30))):
            f.write(json.dumps({"id": i, **dict(zip(names, map(float, x)))}) + "\n")
    out, ck = tmp_path / "scored.jsonl", tmp_path / "ck.npz"
    cfg = {"source": {"type": "file", "path": str(data), "follow": True},
           "records": {"features": names, "key_field": "id"},
           "sink": {"type": "file", "path": str(out), "emit": "all"},
           "dead_letter": {"type": "stdout"}, "detector": {"warmup_records": 3000},
           "checkpoint": {"path": str(ck)}, "metrics": {"enabled": False},
           "shutdown_timeout_seconds": 5}
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    p = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "--config", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stderr:  # wait for the fit to start
            seen.append(line)
            if "warm-up complete: fitting on 3000 records" in line:
                break
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        err = "".join(seen) + err
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stop requested during the warm-up fit" in err, err
    assert took < 3, took
    assert not ck.exists() and not (tmp_path / "ck.npz.position").exists()
    assert not out.exists() or not _lines(out)


def test_sink_helpers_write_strict_json_and_keep_binary_values():
    import base64

    from streamgmm.service.messages import dead_letter_json, dumps
    from streamgmm.service.messages import SourceRecord
    from streamgmm.service.local_io import detect_format

    assert json.loads(dumps({"score": float("-inf"), "x": [float("nan"), 1.0]})) == {
        "score": None, "x": [None, 1.0]}
    rec = SourceRecord(b"\xff\x00raw", "t", 3, 42, key=b"k")
    d = dead_letter_json(rec, "invalid_json", "bad", "streamgmm.records.InvalidJSON", "g")
    assert d["value_encoding"] == "base64" and base64.b64decode(d["value"]) == b"\xff\x00raw"
    assert (d["topic"], d["partition"], d["offset"], d["key"], d["group"]) == ("t", 3, 42, "k", "g")
    assert detect_format("x.CSV", "auto") == "csv" and detect_format("x.jsonl", "auto") == "jsonl"
    assert detect_format("x.csv", "jsonl") == "jsonl"


def test_available_cpus_respects_cgroup_quotas(tmp_path, monkeypatch):
    """A container limited to one CPU decodes in-process, whatever the node's core count."""
    import os

    from streamgmm.service.runtime import decode_worker as daemon

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert daemon.available_cpus(str(v2)) == 16  # no cgroup files: no quota
    (v2 / "cpu.max").write_text("max 100000\n")
    assert daemon.available_cpus(str(v2)) == 16
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert daemon.available_cpus(str(v2)) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert daemon.available_cpus(str(v1)) == 16
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert daemon.available_cpus(str(v1)) == 4

    monkeypatch.delenv("STREAMGMM_DECODE_WORKER", raising=False)
    monkeypatch.setattr(daemon, "available_cpus", lambda: 1.5)
    assert daemon.decode_worker_wanted() is False
    monkeypatch.setattr(daemon, "available_cpus", lambda: 2.0)
    assert daemon.decode_worker_wanted() is False  # 2 CPUs: in-process decoding measured steadier
    monkeypatch.setattr(daemon, "available_cpus", lambda: 3.0)
    assert daemon.decode_worker_wanted() is True
    monkeypatch.setenv("STREAMGMM_DECODE_WORKER", "0")
    assert daemon.decode_worker_wanted() is False


@pytest.mark.parametrize("poll", [7, 400])
def test_daemon_and_api_agree_whatever_the_poll_size(tmp_path, poll):
    """Issue 9 point 4: the daemon's warm-up uses exactly warmup_records records (a poll is
    split at the boundary) and learning does not depend on poll sizes, so the daemon's scores
    are the Python API's on the same stream fed in batches of another size."""
    import numpy as np

    from streamgmm import Detector
    from streamgmm.service.config import config_from_dict, detector_dict

    n, warm = 3000, 1000
    X = mixture_rows(n, seed=21)
    data = tmp_path / "events.jsonl"
    with open(data, "w") as f:
        for i, x in enumerate(X):
            f.write(json.dumps(to_record(i, x)) + "\n")
    out = tmp_path / "out.jsonl"
    cfg = _cfg({"type": "file", "path": str(data)}, {"type": "file", "path": str(out)},
               {"type": "stdout"}, warmup=warm)
    cfg["kafka"]["max_poll_records"] = poll
    cfg["detector"]["online"] = {"batch_size": 250}
    d = DaemonThread(cfg).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    got = sorted(_lines(out), key=lambda e: e["offset"])
    assert [e["offset"] for e in got] == list(range(n))
    det = Detector.from_dict(detector_dict(config_from_dict(cfg, environ={})),
                             feature_names=list(FEATURES), background_refit=False)
    res = [det.process(X[i:i + 1000]) for i in range(0, n, 1000)]
    api = np.concatenate([r.scores for r in res])
    assert len(api) == n
    daemon = np.array([e["score"] for e in got])
    assert np.allclose(daemon, api, rtol=1e-6, atol=1e-6), np.abs(daemon - api).max()


def test_a_sink_file_renamed_away_or_deleted_is_written_anew_at_its_path(tmp_path):
    """logrotate `create` on the output file (no signal needed): the next lines go to a new
    file at the path, not on into the renamed one."""
    from streamgmm.service.local_io import JsonLinesSink

    out = tmp_path / "events.jsonl"
    sink = JsonLinesSink(str(out))
    sink.send_event({"n": 1})
    sink.flush()
    out.rename(tmp_path / "events.jsonl.1")
    sink.send_event({"n": 2})
    sink.flush()
    out.unlink()
    sink.send_event({"n": 3})
    sink.flush()
    sink.close()
    assert _lines(tmp_path / "events.jsonl.1") == [{"n": 1}]
    assert _lines(out) == [{"n": 3}]


def test_a_line_appended_to_a_followed_file_is_scored_at_once(tmp_path):
    """An idle daemon following a file wakes when it grows and writes the outcome without
    waiting for the next poll to time out: well under `poll_timeout_ms` (it took one to two
    of them before)."""
    data = tmp_path / "tail.jsonl"
    rows = [json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(mixture_rows(210, 8))]
    data.write_text("".join(rows[:200]))
    out = tmp_path / "scored.jsonl"
    cfg = _cfg({"type": "file", "path": str(data), "follow": True},
               {"type": "file", "path": str(out)}, {"type": "stdout"})
    cfg["kafka"] = {"poll_timeout_ms": 1000}
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: out.exists() and len(_lines(out)) == 200, 30, what="first part")
        took = []
        for i in range(200, 203):
            time.sleep(1.3)  # idle: waiting in a poll
            with open(data, "a") as f:
                f.write(rows[i])
            t0 = time.monotonic()
            wait_for(lambda: len(_lines(out)) == i + 1, 10, interval=0.01, what="the line")
            took.append(time.monotonic() - t0)
        assert min(took) < 0.5, took
    finally:
        assert d.stop() == 0
