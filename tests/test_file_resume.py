"""A file source with a checkpoint goes on after a restart from the position of its committed
records (`source.resume`), as a Kafka consumer goes on from its committed offset; a file that is
not the one read before (rotated, truncated, regenerated) is read from its start."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest

from kafka_helpers import (DaemonThread, FEATURES, mixture_rows, signal_when, to_record,
                           wait_for, write_yaml)
from streamgmm.service.local_io import FileSource

pytestmark = pytest.mark.timeout(120)


def _rows(n: int, seed: int = 3) -> list[str]:
    return [json.dumps(to_record(i, x)) + "\n" for i, x in enumerate(mixture_rows(n, seed))]


def _read(src: FileSource, n: int, size: int = 7) -> list:
    """n records polled in batches of `size`."""
    out = []
    while len(out) < n:
        batch = src.poll(0, min(size, n - len(out)))
        assert batch.records, "the file ended early"
        out.extend(batch.records)
    return out


def _keys(recs) -> list:
    return [json.loads(r.value)["id"] if r.row is None else r.row[0] for r in recs]


def test_a_new_source_goes_on_after_the_committed_record(tmp_path):
    data, pos = tmp_path / "in.jsonl", str(tmp_path / "ck.npz.position")
    data.write_text("".join(_rows(100)))
    src = FileSource(str(data), position_path=pos)
    first = _read(src, 40)
    assert src.commit({(src.topic, None): 33})  # mid-batch (a warm-up boundary, say)
    src.close()
    again = FileSource(str(data), position_path=pos)
    rest = _read(again, 67)
    assert [r.offset for r in rest] == list(range(33, 100))
    assert _keys(rest) == [f"r{i}" for i in range(33, 100)]
    assert _keys(first[33:]) == _keys(rest[:7])
    assert not again.poll(0, 10).records and again.exhausted


@pytest.mark.parametrize("kind", ["csv", "csv-bom", "gzip"])
def test_csv_and_gzip_files_resume_too(tmp_path, kind):
    X = mixture_rows(60, seed=4)
    lines = ["id," + ",".join(FEATURES) + "\n"] + [
        f"r{i}," + ",".join(f"{v:.5f}" for v in x) + "\n" for i, x in enumerate(X)]
    text = "".join(lines).encode()
    if kind == "csv-bom":
        text = b"\xef\xbb\xbf" + text
    data = tmp_path / ("in.csv.gz" if kind == "gzip" else "in.csv")
    data.write_bytes(gzip.compress(text) if kind == "gzip" else text)
    pos = str(tmp_path / "p.position")
    src = FileSource(str(data), position_path=pos)
    _read(src, 25)
    assert src.commit({(src.topic, None): 25})
    src.close()
    again = FileSource(str(data), position_path=pos)
    rest = _read(again, 35)
    assert again.csv_header == ["id", *FEATURES]
    assert _keys(rest) == [f"r{i}" for i in range(25, 60)]


@pytest.mark.parametrize("change", ["regenerated", "truncated", "edited before", "no file"])
def test_a_file_that_is_not_the_one_read_is_read_from_its_start(tmp_path, change, caplog):
    data, pos = tmp_path / "in.jsonl", str(tmp_path / "p.position")
    rows = _rows(200)
    data.write_text("".join(rows))
    src = FileSource(str(data), position_path=pos)
    _read(src, 150)
    assert src.commit({(src.topic, None): 150})
    src.close()
    if change == "regenerated":  # other content from the first byte on
        data.write_text("".join(_rows(200, seed=9)))
    elif change == "truncated":  # the same start, but shorter than the position
        data.write_text("".join(rows[:120]))
    elif change == "edited before":  # the same start, the lines just before the position not
        last = rows[149]  # its last digit changed: the same length, other bytes
        edited = last[:-3] + ("1" if last[-3] != "1" else "2") + last[-2:]
        data.write_text("".join(rows[:149] + [edited] + rows[150:]))
    else:
        with open(pos, "w") as f:
            f.write("{not json")
    again = FileSource(str(data), position_path=pos)
    first = again.poll(0, 5).records
    assert [r.offset for r in first] == [0, 1, 2, 3, 4]
    assert "reading" in caplog.text and "start" in caplog.text


def _cfg(tmp_path, follow: bool, resume: bool = True) -> dict:
    return {
        "source": {"type": "file", "path": str(tmp_path / "in.jsonl"), "follow": follow,
                   "resume": resume},
        "records": {"features": list(FEATURES), "key_field": "id"},
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "emit": "all"},
        "dead_letter": {"type": "stdout"},
        "detector": {"n_components": 2, "max_components": 2, "warmup_records": 100},
        "checkpoint": {"path": str(tmp_path / "ck.npz"), "interval_seconds": 3600},
        "metrics": {"enabled": False},
        "kafka": {"poll_timeout_ms": 50},
    }


def _scored(tmp_path) -> list[str]:
    with open(tmp_path / "out.jsonl") as f:
        return [json.loads(x)["key"] for x in f if x.strip()]


def test_a_restarted_run_scores_only_what_was_appended(tmp_path):
    rows = _rows(500)
    (tmp_path / "in.jsonl").write_text("".join(rows[:300]))
    d = DaemonThread(_cfg(tmp_path, follow=False)).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    with open(tmp_path / "in.jsonl", "a") as f:
        f.write("".join(rows[300:]))
    d = DaemonThread(_cfg(tmp_path, follow=False)).start()
    wait_for(lambda: not d.alive, 60, what="end of file")
    assert d.stop() == 0
    assert _scored(tmp_path) == [f"r{i}" for i in range(500)]  # each once, in order
    assert d.daemon.det.model_version == 1  # the checkpoint's model went on: no new warm-up


def test_without_resume_every_start_reads_from_the_first_line(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(_rows(300)))
    for _ in range(2):
        d = DaemonThread(_cfg(tmp_path, follow=False, resume=False)).start()
        wait_for(lambda: not d.alive, 60, what="end of file")
        assert d.stop() == 0
    assert _scored(tmp_path) == [f"r{i}" for i in range(300)] * 2
    assert not (tmp_path / "ck.npz.position").exists()


def test_kill_9_while_following_loses_nothing_and_rereads_little(tmp_path):
    """At-least-once across a crash: every record is scored, and the restart goes on from the
    last committed position, not from the file's first line."""
    rows = _rows(1200)
    (tmp_path / "in.jsonl").write_text("".join(rows[:600]))
    path = write_yaml(tmp_path / "cfg.yaml", _cfg(tmp_path, follow=True))
    cmd = [sys.executable, "-m", "streamgmm", "run", "--config", path]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "out.jsonl").exists() and len(_scored(tmp_path)) == 600,
                 60, what="scoring after the warm-up")
        wait_for(lambda: (tmp_path / "ck.npz.position").exists(), 30, what="a stored position")
    finally:
        p.kill()
        p.wait(10)
    with open(tmp_path / "in.jsonl", "a") as f:
        f.write("".join(rows[600:]))
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err, _ = signal_when(p, lambda: _scored(tmp_path)[-1:] == ["r1199"], "the appended rows",
                         timeout=60)
    assert p.returncode == 0, err
    keys = _scored(tmp_path)
    assert set(keys) == {f"r{i}" for i in range(1200)}  # nothing lost
    assert len(keys) < 1200 + 100  # and not the whole first part again
    assert "resuming after record" in err


def _drain(src: FileSource, n: int, tries: int = 200) -> list:
    """Poll a following source (no waiting) until n records came, or fail."""
    out = []
    for _ in range(tries):
        out.extend(src.poll(0, 1000).records)
        if len(out) >= n:
            return out
    raise AssertionError(f"{len(out)} of {n} records")


def test_a_renamed_file_is_read_on_while_its_writer_appends(tmp_path, monkeypatch):
    """logrotate `create`: the writer goes on appending to the renamed file until it reopens
    its log; those lines are read too, beside the new file's, and none is lost."""
    from streamgmm.service.local_io import files

    monkeypatch.setattr(files, "ROTATE_WAIT_SECONDS", 0.3)
    rows = _rows(100)
    data = tmp_path / "app.log"
    data.write_text("".join(rows[:50]))
    src = FileSource(str(data), follow=True, position_path=str(tmp_path / "p.position"))
    assert len(_drain(src, 50)) == 50
    assert not src.poll(0, 10).records
    with open(data, "a") as old:
        data.rename(tmp_path / "app.log.1")
        data.write_text("".join(rows[80:90]))  # the new file, already written
        assert not src.poll(0, 10).records  # (the switch)
        old.write("".join(rows[50:80]))  # the writer has not reopened yet
    got = _drain(src, 40)
    assert sorted(_keys(got), key=lambda k: int(k[1:])) == [f"r{i}" for i in range(50, 90)]
    assert [r.offset for r in got] == list(range(50, 90))
    time.sleep(0.4)
    assert not src.poll(0, 10).records and not src._draining  # let go once quiet
    with open(data, "a") as f:
        f.write("".join(rows[90:]))
    assert _keys(_drain(src, 10)) == [f"r{i}" for i in range(90, 100)]
    src.close()


def test_a_file_truncated_and_written_past_the_read_position_is_read_from_its_start(tmp_path):
    """copytruncate where the writer refills the file beyond where we were before we look:
    its size alone does not show it; its first bytes do. No fragment of a line is read."""
    data = tmp_path / "app.log"
    data.write_text("".join(_rows(30)))
    src = FileSource(str(data), follow=True)
    assert len(_drain(src, 30)) == 30
    with open(data, "r+") as f:
        f.truncate(0)
    with open(data, "a") as f:
        f.write("".join(_rows(200, seed=11)))
    got = _drain(src, 200)
    assert len(got) == 200 and _keys(got) == [f"r{i}" for i in range(200)]
    assert [json.loads(r.value)["amount"] for r in got] == [
        json.loads(x)["amount"] for x in _rows(200, seed=11)]
    src.close()


def test_a_csv_file_truncated_without_a_new_header_keeps_its_header(tmp_path):
    """copytruncate of a CSV file: the writer appends rows, no new header; the first row after
    the truncation is a record, not the header. A file replaced by rotation has its own."""
    X = mixture_rows(60, seed=4)
    row = lambda i: f"r{i}," + ",".join(f"{v:.5f}" for v in X[i]) + "\n"  # noqa: E731
    header = "id," + ",".join(FEATURES) + "\n"
    data = tmp_path / "app.csv"
    data.write_text(header + "".join(row(i) for i in range(20)))
    src = FileSource(str(data), follow=True)
    assert len(_drain(src, 20)) == 20
    with open(data, "r+") as f:
        f.truncate(0)
    assert not src.poll(0, 10).records  # (noticed)
    with open(data, "a") as f:
        f.write("".join(row(i) for i in range(20, 40)))
    got = _drain(src, 20)
    assert _keys(got) == [f"r{i}" for i in range(20, 40)]
    assert src.csv_header == ["id", *FEATURES]
    data.rename(tmp_path / "app.csv.1")
    data.write_text(header + "".join(row(i) for i in range(40, 60)))
    got = _drain(src, 20)
    assert _keys(got) == [f"r{i}" for i in range(40, 60)]
    src.close()


def _stopped_after_committing_60(tmp_path, n: int):
    """n numbered rows, the first 100 in app.log, read by a follower that committed 60 and
    stopped: (rows, the file, its position path)."""
    rows = _rows(n)
    data, pos = tmp_path / "app.log", str(tmp_path / "p.position")
    data.write_text("".join(rows[:100]))
    src = FileSource(str(data), follow=True, position_path=pos)
    _read(src, 60)
    assert src.commit({(src.topic, None): 60})
    src.close()
    return rows, data, pos


def _rotated_while_stopped(tmp_path, rotations: int):
    """Stopped after committing 60 of 200 rows; the writer appended 20 more, then logrotate
    renamed the file once (app.log -> app.log.1) or twice (.1 -> .2), and the new app.log
    holds the rest: (rows, the file, its position path)."""
    rows, data, pos = _stopped_after_committing_60(tmp_path, 200)
    with open(data, "a") as f:
        f.write("".join(rows[100:120]))
    data.rename(tmp_path / "app.log.1")
    if rotations == 2:
        (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
        (tmp_path / "app.log.1").write_text("".join(rows[120:150]))
        data.write_text("".join(rows[150:]))
    else:
        data.write_text("".join(rows[120:]))
    return rows, data, pos


@pytest.mark.parametrize("rotations", [1, 2])
def test_a_file_rotated_while_stopped_is_read_to_its_end_first(tmp_path, rotations):
    """Stopped (kill -9) after a commit; the writer went on, and logrotate renamed the file
    (app.log -> app.log.1, or twice: .1 -> .2): the restart reads the rest of the file it
    was in, then the newer ones, then the new app.log. Nothing is lost."""
    rows, data, pos = _rotated_while_stopped(tmp_path, rotations)
    again = FileSource(str(data), follow=True, position_path=pos)
    got = _drain(again, 140)
    assert _keys(got) == [f"r{i}" for i in range(60, 200)]
    again.close()


@pytest.mark.parametrize("rotations", [1, 2])
def test_without_follow_a_file_rotated_while_stopped_is_read_then_the_new_one(tmp_path,
                                                                              rotations):
    """The same without `follow` (a batch run over a log that logrotate rotated between two
    runs): the rest of the rotated file, the newer ones, then the new file, before the end;
    the new file's records were never read (and never would be, run after run)."""
    rows, data, pos = _rotated_while_stopped(tmp_path, rotations)
    again = FileSource(str(data), position_path=pos)
    got = []
    while not again.exhausted:
        batch = again.poll(0, 25)
        got.extend(batch.records)
        if batch.records:
            assert again.commit({(again.topic, None): batch.records[-1].offset + 1})
    assert _keys(got) == [f"r{i}" for i in range(60, 200)]
    assert [r.offset for r in got] == list(range(60, 200))
    again.close()
    third = FileSource(str(data), position_path=pos)  # a next run: nothing left to read
    assert not third.poll(0, 10).records and third.exhausted
    third.close()


def test_a_position_stored_for_another_file_is_not_used(tmp_path, caplog):
    """`source.path` changed between two runs to another file of the same directory: the
    position stored for the old file is not applied to the new one (which was then read from
    the old file's byte offset, i.e. mostly or wholly skipped, with no warning)."""
    rows = _rows(300)
    old, new, pos = tmp_path / "day1.jsonl", tmp_path / "day2.jsonl", str(tmp_path / "p.pos")
    old.write_text("".join(rows[:200]))
    src = FileSource(str(old), position_path=pos)
    _read(src, 200)
    assert src.commit({(src.topic, None): 200})
    src.close()
    new.write_text("".join(rows[200:]))
    again = FileSource(str(new), position_path=pos)
    got = _drain(again, 100)
    assert _keys(got) == [f"r{i}" for i in range(200, 300)]
    assert "day1.jsonl" in caplog.text and "from its start" in caplog.text
    again.close()


@pytest.mark.parametrize("refilled", [False, True])
def test_copytruncate_loses_nothing_that_is_in_the_copy(tmp_path, refilled):
    """logrotate `copytruncate` while the daemon is behind: the lines it had not read are
    read from the copy (`app.log.1`), then the truncated file from its start."""
    rows = _rows(300)
    data = tmp_path / "app.log"
    data.write_text("".join(rows[:100]))
    src = FileSource(str(data), follow=True)
    assert len(src.poll(0, 60).records) == 60  # 40 not read yet
    (tmp_path / "app.log.1").write_bytes(data.read_bytes())
    with open(data, "r+") as f:
        f.truncate(0)
    with open(data, "a") as f:  # refilled: past the read position before we look
        f.write("".join(rows[100:300 if refilled else 110]))
    got = _drain(src, 240 if refilled else 50)
    assert _keys(got) == [f"r{i}" for i in range(60, 300 if refilled else 110)]
    src.close()


def test_a_file_copytruncated_while_stopped_is_read_on_in_the_copy(tmp_path):
    """Stopped after a commit; logrotate `copytruncate` copied the file (app.log.1) and
    truncated it, and the writer refilled it: the restart reads the rest from the copy, then
    the file from its start."""
    rows, data, pos = _stopped_after_committing_60(tmp_path, 150)
    (tmp_path / "app.log.1").write_bytes(data.read_bytes())
    data.write_text("".join(rows[100:]))  # (truncated, the same file)
    again = FileSource(str(data), follow=True, position_path=pos)
    got = _drain(again, 90)
    assert _keys(got) == [f"r{i}" for i in range(60, 150)]
    again.close()


def test_a_commit_in_a_renamed_file_read_on_is_stored_there(tmp_path):
    """Records of a renamed file read on after the switch are committed as positions in it,
    so a crash then re-reads little and loses nothing: the restart finds it by its inode."""
    rows = _rows(120)
    data, pos = tmp_path / "app.log", str(tmp_path / "p.position")
    data.write_text("".join(rows[:50]))
    src = FileSource(str(data), follow=True, position_path=pos)
    assert len(_drain(src, 50)) == 50
    with open(data, "a") as old:
        data.rename(tmp_path / "app.log.1")
        data.write_text("")
        assert not src.poll(0, 10).records  # (the switch)
        old.write("".join(rows[50:80]))
        old.flush()
        assert len(_drain(src, 30)) == 30
        assert src.commit({(src.topic, None): 70})  # kill -9 after this
        old.write("".join(rows[80:100]))
    data.write_text("".join(rows[100:]))
    again = FileSource(str(data), follow=True, position_path=pos)
    got = _drain(again, 50)
    assert _keys(got) == [f"r{i}" for i in range(70, 120)]
    again.close()
    src.close()


def test_logrotates_copy_is_found_by_the_bytes_around_the_position(tmp_path):
    """The one search that resume and follow share: a file beside the path whose name begins
    with its name, that begins with the bytes read first and holds the bytes read last at the
    position; not the file itself (under another name), not another file, not a shorter one."""
    from streamgmm.service.local_io.rotation import Mark, find_copy

    text = "".join(_rows(20)).encode()
    data = tmp_path / "app.log"
    data.write_bytes(text)
    half = len(text) // 2
    mark = Mark.of(half, text[:100], text[half - 64:half])
    (tmp_path / "app.log.2").write_bytes(text[:half - 1])  # shorter
    (tmp_path / "app.log.3").write_bytes(text[:half - 1] + b"#" + text[half:])  # other bytes
    (tmp_path / "other.log").write_bytes(text)  # another name
    (tmp_path / "app.log.same").hardlink_to(data)
    with open(data, "rb") as ours:
        assert find_copy(str(data), mark, skip=ours) is None
        (tmp_path / "app.log-20261127").write_bytes(text + b"more\n")
        with find_copy(str(data), mark, skip=ours) as copy:
            assert copy.name == str(tmp_path / "app.log-20261127")
