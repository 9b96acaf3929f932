"""The ``streamgmm`` CLI through real subprocesses: exit codes, fit -> inspect -> score, demo;
plus the logging formats."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from streamgmm import __version__

REPO = Path(__file__).resolve().parent.parent
FEATURES = ["amount", "latency_ms", "sensor.temp"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMGMM__")}
    env.update(extra)
    return env


def cli(*args, cwd=None, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "streamgmm", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env or _env(),
                          timeout=timeout)


# ------------------------------------------------------------------------ basics, exit codes

def test_version_and_help():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith(f"streamgmm {__version__}")
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("run", "fit", "score", "inspect", "check-config", "generate"):
        assert cmd in r.stdout
    for cmd in ("run", "fit", "score", "inspect", "check-config"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and f"streamgmm {cmd}" in r.stdout


def test_console_script_is_installed():
    import shutil
    exe = shutil.which("streamgmm")
    assert exe is not None, "console script 'streamgmm' not on PATH: pip install -e ."
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and __version__ in r.stdout


@pytest.mark.parametrize("args", [
    [],                                    # no command
    ["frobnicate"],                        # unknown command
    ["run"],                               # needs --config or --demo
    ["run", "--config", "x.yaml", "--demo"],
    ["fit", "--config", "c.yaml"],         # missing --input/--output
    ["score", "--model", "m.npz", "--input", "d.jsonl"],
    ["inspect"],
    ["fit", "--config", "c", "--input", "i", "--output", "o", "--format", "xml"],
])
def test_usage_errors_exit_2_without_traceback(args):
    r = cli(*args)
    assert r.returncode == 2
    assert "usage:" in r.stderr and "Traceback" not in r.stderr


def test_generate_is_registered_and_its_help_works():
    r = cli("generate", "--help")
    assert r.returncode == 0, r.stderr
    assert "streamgmm generate" in r.stdout


def test_cli_works_when_the_generator_module_is_missing(monkeypatch, capsys, tmp_path):
    import streamgmm.service.cli.commands as cli_mod

    monkeypatch.setitem(sys.modules, "streamgmm.tools.generator", None)  # import fails
    import streamgmm.tools as svc
    monkeypatch.delattr(svc, "generator", raising=False)
    assert cli_mod.main(["generate", "--count", "5"]) == 1
    assert "generator is not available" in capsys.readouterr().err
    f = tmp_path / "c.yaml"
    f.write_text("records: {features: [a]}\n")
    assert cli_mod.main(["check-config", "-q", "--offline", str(f)]) == 0


def test_missing_model_is_a_one_line_failure(tmp_path):
    r = cli("inspect", tmp_path / "nope.npz")
    assert r.returncode == 1
    assert "nope.npz" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_joblib_model_needs_trusted(tmp_path):
    import joblib

    m = tmp_path / "m.joblib"
    joblib.dump({"a": 1}, m)
    r = cli("inspect", m)
    assert r.returncode == 2 and "--trusted" in r.stderr and "Traceback" not in r.stderr
    assert "pickle" in r.stderr


def test_fake_joblib_is_diagnosed_by_content_not_name(tmp_path):
    """A file named .joblib that is not a pickle is not sent towards --trusted."""
    m = tmp_path / "m.joblib"
    m.write_bytes(b"not really a pickle")
    r = cli("inspect", m)
    assert r.returncode == 1 and "--trusted" not in r.stderr and "Traceback" not in r.stderr
    assert "text file" in r.stderr


# ---------------------------------------------------------------------- fit / inspect / score

def make_data(n=1500, seed=0):
    """Three well-separated clusters plus 6 far-out planted anomalies (their row indices)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[10.0, 100.0, 20.0], [60.0, 40.0, 25.0], [30.0, 300.0, 15.0]])
    scales = np.array([[2.0, 10.0, 0.5], [5.0, 4.0, 0.4], [3.0, 20.0, 0.8]])
    comp = rng.integers(0, 3, size=n)
    X = centers[comp] + rng.normal(size=(n, 3)) * scales[comp]
    planted = (np.array([0.13, 0.33, 0.53, 0.73, 0.87, 0.97]) * n).astype(int)
    X[planted] = [[500.0, 5000.0, 90.0], [-300.0, 900.0, -40.0], [10.0, 100.0, 80.0],
                  [400.0, 40.0, 25.0], [60.0, 4000.0, 25.0], [200.0, 200.0, -20.0]]
    return X, planted


def write_jsonl(path, X, bad_at=()):
    bad = {
        0: "{broken json",
        1: json.dumps({"id": "x", "amount": 1.0, "sensor": {"temp": 3.0}}),
        2: json.dumps({"id": "y", "amount": "12", "latency_ms": 3.0, "sensor": {"temp": 3.0}}),
        3: "[1, 2, 3]",
    }
    reasons = {0: "invalid_json", 1: "missing_field", 2: "non_numeric", 3: "not_object"}
    lines, expected = [], []
    k = 0
    for i, (a, lat, t) in enumerate(X):
        if i in bad_at:
            lines.append(bad[k % 4])
            expected.append(reasons[k % 4])
            k += 1
        lines.append(json.dumps({"id": f"r{i}", "amount": a, "latency_ms": lat,
                                 "sensor": {"temp": t}}))
        expected.append(None)
        if i == 10:
            lines.append("")  # blank lines are not records
    path.write_text("\n".join(lines) + "\n")
    return expected


def write_csv(path, X, bad_at=()):
    rows = ["id,amount,latency_ms,sensor.temp"]
    expected = []
    for i, (a, lat, t) in enumerate(X):
        if i in bad_at:
            rows.append(f"bad{i},lots,1,2")
            expected.append("non_numeric")
        rows.append(f"r{i},{float(a)!r},{float(lat)!r},{float(t)!r}")
        expected.append(None)
    path.write_text("\n".join(rows) + "\n")
    return expected


def write_config(path, **records):
    path.write_text(yaml.safe_dump({
        "source": {"type": "stdin"},
        "sink": {"type": "stdout"}, "dead_letter": {"type": "stdout"},
        "records": {"features": FEATURES, **records},
        "detector": {"n_components": 3, "max_components": 3, "warmup_records": 500,
                     "threshold": {"percentile": 1.0}},
        "metrics": {"enabled": False},
    }))
    return path


def read_jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_fit_inspect_score_round_trip(tmp_path, fmt):
    X, planted = make_data()
    data = tmp_path / f"train.{fmt}"
    bad_at = (50, 700, 900, 1200)
    if fmt == "jsonl":
        expected = write_jsonl(data, X, bad_at)
        cfg = write_config(tmp_path / "c.yaml", key_field="id")
    else:
        expected = write_csv(data, X, bad_at)
        cfg = write_config(tmp_path / "c.yaml", key_field="id")
    model = tmp_path / "model.npz"

    r = cli("fit", "--config", cfg, "--input", data, "--output", model, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert model.is_file()
    assert "skipped 4 of" in r.stderr  # bad records reported, not fatal

    r = cli("inspect", model)
    assert r.returncode == 0, r.stderr
    assert "amount" in r.stdout and "sensor.temp" in r.stdout and "components" in r.stdout
    r = cli("inspect", "--json", model)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["feature_names"] == FEATURES
    assert info["n_components"] == 3 and len(info["weights"]) == 3
    assert sum(info["weights"]) == pytest.approx(1.0, abs=1e-4)
    means = np.array(info["means"])
    for c in ([10.0, 100.0, 20.0], [60.0, 40.0, 25.0], [30.0, 300.0, 15.0]):
        assert np.min(np.abs(means - c).max(axis=1) / np.array([5, 20, 1]).max()) < 1.0

    out = tmp_path / "scores.jsonl"
    r = cli("score", "--model", model, "--input", data, "--output", out, "--config", cfg)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out.read_text())
    assert len(rows) == len(expected)  # one line per record, blank lines skipped
    lines = [row["line"] for row in rows]
    assert lines == sorted(lines)
    got = [row.get("error") for row in rows]
    assert got == expected
    good = [row for row in rows if "error" not in row]
    assert len(good) == len(X)
    for row in good:
        assert set(row) >= {"score", "anomaly", "threshold", "component", "key"}
        assert isinstance(row["anomaly"], bool) and row["component"] in (0, 1, 2)
    assert [row["key"] for row in good] == [f"r{i}" for i in range(len(X))]
    flagged = {i for i, row in enumerate(good) if row["anomaly"]}
    assert set(planted.tolist()) <= flagged
    assert len(flagged) <= 0.03 * len(X)  # about the 1% percentile plus the planted ones
    bad_rows = [row for row in rows if "error" in row]
    assert all(row["score"] is None and row["message"] for row in bad_rows)

    # the same scores on stdout, without a config (features come from the model)
    r = cli("score", "--model", model, "--input", data, "--output", "-")
    assert r.returncode == 0, r.stderr
    rows2 = read_jsonl(r.stdout)
    assert [row.get("score") for row in rows2] == [row.get("score") for row in rows]
    assert "key" not in rows2[-1]


@pytest.mark.parametrize("fmt,name", [("jsonl", "d.jsonl.gz"), ("csv", "d.csv.gz"),
                                      ("jsonl", "d.jsonl")])
def test_gzip_inputs_are_read_like_plain_ones(tmp_path, fmt, name):
    """fit and score read gzip-compressed files (recognised by content, so also a gzip file
    whose name does not end in .gz) and give the same scores as the plain file."""
    import gzip

    X, _ = make_data(800)
    plain = tmp_path / f"plain.{fmt}"
    (write_jsonl if fmt == "jsonl" else write_csv)(plain, X, bad_at=(40,))
    packed = tmp_path / name
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    cfg = write_config(tmp_path / "c.yaml", key_field="id")
    fmt_args = ("--format", "csv") if fmt == "csv" and not name.endswith(".csv.gz") else ()
    scores = []
    for data in (plain, packed):
        model = tmp_path / f"{data.name}.npz"
        r = cli("fit", "-c", cfg, "-i", data, "-o", model, *fmt_args)
        assert r.returncode == 0, r.stderr
        assert "skipped 1 of" in r.stderr
        r = cli("score", "-m", model, "-i", data, "-o", "-", "-c", cfg, *fmt_args)
        assert r.returncode == 0, r.stderr
        rows = read_jsonl(r.stdout)
        assert len(rows) == len(X) + 1 and sum("error" in row for row in rows) == 1
        scores.append([row.get("score") for row in rows])
    assert scores[0] == scores[1]


def test_score_from_stdin(tmp_path):
    X, _ = make_data(600)
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    model = tmp_path / "m.npz"
    cfg = write_config(tmp_path / "c.yaml")
    assert cli("fit", "-c", cfg, "-i", data, "-o", model).returncode == 0
    r = subprocess.run([sys.executable, "-m", "streamgmm", "score", "-m", str(model), "-i", "-",
                        "-o", "-"], input=data.read_text(), capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(X)


@pytest.mark.parametrize("kind", ["gzip jsonl", "gzip csv", "bom csv", "bom jsonl"])
def test_stdin_is_read_like_a_file(tmp_path, kind):
    """gzip by content and a UTF-8 byte-order mark, on stdin as in a named file."""
    import gzip

    X, _ = make_data(600)
    fmt = kind.split()[1]
    data = tmp_path / f"d.{fmt}"
    (write_jsonl if fmt == "jsonl" else write_csv)(data, X)
    body = data.read_bytes()
    body = gzip.compress(body) if kind.startswith("gzip") else b"\xef\xbb\xbf" + body
    cfg = write_config(tmp_path / "c.yaml", key_field="id")
    model = tmp_path / "m.npz"
    assert cli("fit", "-c", cfg, "-i", data, "-o", model).returncode == 0
    r = subprocess.run([sys.executable, "-m", "streamgmm", "score", "-m", str(model), "-i", "-",
                        "-o", "-", "-c", str(cfg), "-f", fmt], input=body,
                       capture_output=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(r.stdout.decode())
    assert len(rows) == len(X) and all("score" in row for row in rows)
    assert [row["key"] for row in rows] == [f"r{i}" for i in range(len(X))]


def test_csv_piped_as_json_lines_gets_the_format_hint(tmp_path):
    X, _ = make_data(600)
    data = tmp_path / "d.csv"
    write_csv(data, X)
    model = tmp_path / "m.npz"
    assert cli("fit", "-c", write_config(tmp_path / "c.yaml"), "-i", data,
               "-o", model).returncode == 0
    r = subprocess.run([sys.executable, "-m", "streamgmm", "score", "-m", str(model), "-i", "-",
                        "-o", "-"], input=data.read_text(), capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 1
    assert "pass --format csv" in r.stderr


def test_bytes_that_are_not_utf8_in_a_csv_do_not_stop_fit_or_score(tmp_path):
    """One Latin-1 byte in a column that is not a feature: every row is still read (as the
    daemon reads it: the byte replaced)."""
    X, _ = make_data(600)
    data = tmp_path / "d.csv"
    write_csv(data, X)
    lines = data.read_bytes().split(b"\n")
    lines[251] = lines[251].replace(b"r250", b"Z\xfcrich")
    data.write_bytes(b"\n".join(lines))
    cfg = write_config(tmp_path / "c.yaml", key_field="id")
    model = tmp_path / "m.npz"
    r = cli("fit", "-c", cfg, "-i", data, "-o", model)
    assert r.returncode == 0, r.stderr
    assert "600 records" in r.stderr
    r = cli("score", "-m", model, "-i", data, "-o", "-", "-c", cfg)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(r.stdout)
    assert len(rows) == 600 and rows[250]["key"] == "Z\ufffdrich"


def test_score_refuses_to_write_over_its_input(tmp_path):
    X, data, model = _fitted(tmp_path, 600)
    before = data.read_bytes()
    r = cli("score", "-m", model, "-i", data, "-o", data)
    assert r.returncode == 2 and "is the input file" in r.stderr
    assert data.read_bytes() == before
    link = tmp_path / "link.jsonl"  # the same file by another name
    link.symlink_to(data)
    assert cli("score", "-m", model, "-i", data, "-o", link).returncode == 2
    assert data.read_bytes() == before


def test_fit_and_score_both_make_a_missing_output_directory(tmp_path):
    X, data, _ = _fitted(tmp_path, 600)
    model = tmp_path / "models" / "m.npz"
    assert cli("fit", "-c", tmp_path / "c.yaml", "-i", data, "-o", model).returncode == 0
    out = tmp_path / "scores" / "day1" / "s.jsonl"
    r = cli("score", "-m", model, "-i", data, "-o", out)
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(out.read_text())) == len(X)


def test_fit_output_gets_the_umask_mode_and_errors_name_the_output(tmp_path):
    X, data, model = _fitted(tmp_path, 600)
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "shared.npz"
    r = subprocess.run(["sh", "-c", f'umask 022 && "$0" -m streamgmm fit -c {cfg} -i {data} '
                        f'-o {out}', sys.executable], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)  # readable by the daemon's user
    out.chmod(0o640)  # an existing file keeps its mode
    assert cli("fit", "-c", cfg, "-i", data, "-o", out).returncode == 0
    assert oct(out.stat().st_mode & 0o777) == oct(0o640)
    r = cli("fit", "-c", cfg, "-i", data, "-o", tmp_path)
    assert r.returncode == 1
    assert f"{tmp_path}: Is a directory" in r.stderr and ".tmp" not in r.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".ckpt"))]


def _fitted(tmp_path, n: int):
    """(X, its JSON-lines file, a model fitted on it with write_config's settings)."""
    X, _ = make_data(n)
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    model = tmp_path / "m.npz"
    assert cli("fit", "-c", write_config(tmp_path / "c.yaml"), "-i", data, "-o",
               model).returncode == 0
    return X, data, model


def test_score_with_a_config_of_other_features_exits_2(tmp_path):
    _, data, model = _fitted(tmp_path, 600)
    other = tmp_path / "o.yaml"
    other.write_text("records: {features: [amount, latency_ms]}\n")
    r = cli("score", "-m", model, "-i", data, "-o", tmp_path / "s.jsonl", "-c", other)
    assert r.returncode == 2 and "records.features" in r.stderr and "Traceback" not in r.stderr


def _sklearn_pipeline_file(tmp_path, X, names=None):
    """A scikit-learn StandardScaler + GaussianMixture Pipeline saved with joblib."""
    import joblib
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(X)
    if names is not None:  # what fitting on a DataFrame leaves
        pipe[0].feature_names_in_ = np.array(names, dtype=object)
    path = tmp_path / "sk.joblib"
    joblib.dump(pipe, path)
    return pipe, path


def test_score_names_a_positional_scikit_learn_model_from_the_config(tmp_path):
    """A scikit-learn model fitted on a bare array knows its columns by position: the
    config's records.features name them in order, and the scores are scikit-learn's."""
    X, _ = make_data(600)
    pipe, model = _sklearn_pipeline_file(tmp_path, X)
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    out = tmp_path / "s.jsonl"
    r = cli("score", "-m", model, "--trusted", "-i", data, "-o", out,
            "-c", write_config(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr
    scores = np.array([o["score"] for o in read_jsonl(out.read_text())])
    assert_allclose(scores, pipe[1].score_samples(pipe[0].transform(X)), rtol=1e-9, atol=1e-9)
    r = cli("score", "-m", model, "--trusted", "-i", data, "-o", out)
    assert r.returncode == 2 and "by position only" in r.stderr and "Traceback" not in r.stderr


def test_scikit_learn_model_keeps_the_names_it_was_fitted_with(tmp_path):
    X, _ = make_data(600)
    _, model = _sklearn_pipeline_file(tmp_path, X, names=FEATURES)
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    out = tmp_path / "s.jsonl"
    assert cli("score", "-m", model, "--trusted", "-i", data, "-o", out).returncode == 0
    assert len(read_jsonl(out.read_text())) == len(X)
    other = tmp_path / "o.yaml"
    other.write_text(yaml.safe_dump({"records": {"features": ["a", "b", "c"]}}))
    r = cli("score", "-m", model, "--trusted", "-i", data, "-o", out, "-c", other)
    assert r.returncode == 2 and "records.features" in r.stderr


def test_daemon_runs_a_positional_scikit_learn_model(tmp_path):
    X, planted = make_data(1500)
    _, model = _sklearn_pipeline_file(tmp_path, X[:600])
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"type": "file", "path": str(data), "follow": False},
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "emit": "all"},
        "dead_letter": {"type": "stdout"},
        "records": {"features": FEATURES, "key_field": "id"},
        "model": {"path": str(model), "trusted": True},
        "checkpoint": {"path": None}, "metrics": {"enabled": False},
    }))
    r = cli("run", "-c", cfg, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "by position only" in r.stderr
    out = read_jsonl((tmp_path / "out.jsonl").read_text())
    assert len(out) == len(X)
    flagged = {o["key"] for o in out if o["anomaly"]}
    assert {f"r{i}" for i in planted if i >= 600} <= flagged  # those not fitted on


def test_score_a_cut_gzip_file_scores_the_records_before_the_cut_and_names_the_file(tmp_path):
    import gzip

    _, data, model = _fitted(tmp_path, 3000)
    packed = gzip.compress(data.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    out = tmp_path / "s.jsonl"
    r = cli("score", "-m", model, "-i", cut, "-o", out)
    assert r.returncode == 1 and str(cut) in r.stderr and "cut short" in r.stderr
    scored = read_jsonl(out.read_text())
    assert 100 < len(scored) < 3000 and all(o["score"] is not None for o in scored)


def test_score_names_the_whole_size_of_an_over_long_record(tmp_path):
    _, data, model = _fitted(tmp_path, 600)
    big = json.dumps({"amount": 1, "latency_ms": 2, "sensor": {"temp": 3}, "pad": "x" * 3_000_000})
    data.write_text(big + "\n" + data.read_text())
    out = tmp_path / "s.jsonl"
    assert cli("score", "-m", model, "-i", data, "-o", out).returncode == 0
    first = read_jsonl(out.read_text())[0]
    assert first["error"] == "too_large" and f"record is {len(big) + 1} bytes" in first["message"]


def test_a_csv_header_naming_a_feature_twice_is_refused(tmp_path):
    X, _ = make_data(600)
    data = tmp_path / "d.csv"
    write_csv(data, X)
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0] + ",amount"] + [ln + ",0" for ln in lines[1:]]) + "\n")
    r = cli("fit", "-c", write_config(tmp_path / "c.yaml"), "-i", data, "-o", tmp_path / "m.npz")
    assert r.returncode == 1 and "more than one column 'amount'" in r.stderr
    assert "Traceback" not in r.stderr


def test_fit_failures_are_one_line_exit_1(tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    csv_missing = tmp_path / "d.csv"
    csv_missing.write_text("amount,latency_ms\n1,2\n")
    r = cli("fit", "-c", cfg, "-i", csv_missing, "-o", tmp_path / "m.npz")
    assert r.returncode == 1 and "sensor.temp" in r.stderr and "Traceback" not in r.stderr
    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_text("nope\n[1]\n")
    r = cli("fit", "-c", cfg, "-i", all_bad, "-o", tmp_path / "m.npz")
    assert r.returncode == 1 and "no valid records" in r.stderr
    r = cli("fit", "-c", cfg, "-i", tmp_path / "absent.jsonl", "-o", tmp_path / "m.npz")
    assert r.returncode == 1 and "absent.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.npz").exists()


def test_fit_with_a_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("records: {features: [a]}\ndetector: {covariance_type: wobbly}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"a": 1}\n')
    r = cli("fit", "-c", cfg, "-i", data, "-o", tmp_path / "m.npz")
    assert r.returncode == 2 and "detector.covariance_type" in r.stderr


def test_progress_line_only_on_a_tty(monkeypatch, tmp_path):
    import streamgmm.service.cli.commands as cli_mod

    class TTY(io.StringIO):
        def isatty(self):
            return True

    data = tmp_path / "d.jsonl"
    write_jsonl(data, make_data(300)[0])
    monkeypatch.setattr(cli_mod, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(cli_mod, "CHUNK_RECORDS", 100)
    err = TTY()
    monkeypatch.setattr(sys, "stderr", err)
    X, n, counts, _ = cli_mod._read_all(str(data), "auto", {"features": FEATURES})
    assert X.shape == (300, 3) and n == 300 and counts == {}
    assert "\rreading" in err.getvalue() and "100.0%" in err.getvalue()
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    cli_mod._read_all(str(data), "auto", {"features": FEATURES})
    assert plain.getvalue() == ""


# ------------------------------------------------------------------------------------ demo

def test_demo_runs_without_kafka_from_any_directory(tmp_path):
    r = cli("run", "--demo", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = read_jsonl(r.stdout)
    dead = [o for o in out if "reason" in o]
    scored = [o for o in out if "score" in o]
    assert sorted(o["reason"] for o in dead) == ["invalid_json", "missing_field", "non_finite",
                                                 "non_numeric", "not_object"]
    assert len(dead) + len(scored) == len(out)
    assert all(o["anomaly"] for o in scored)  # emit: anomalies
    assert 20 <= len(scored) <= 200  # ~1% of 5,995 plus the 60 planted anomalies
    assert "Traceback" not in r.stderr


def test_run_stops_cleanly_when_its_stdout_reader_goes_away(tmp_path):
    """`streamgmm run ... | head`: the reader closes the pipe; exit 0, no error logged."""
    X, _ = make_data(3000)
    data = tmp_path / "d.jsonl"
    write_jsonl(data, X)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"type": "file", "path": str(data), "follow": False},
        "sink": {"type": "stdout", "emit": "all"}, "dead_letter": {"type": "stdout"},
        "records": {"features": FEATURES},
        "detector": {"warmup_records": 500}, "checkpoint": {"path": None},
        "metrics": {"enabled": False}}))
    proc = subprocess.Popen([sys.executable, "-m", "streamgmm", "run", "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # gone before the first line (the daemon is still importing)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err[-3000:]
    assert "warmup_done" in err and "closed by its reader" in err
    assert " ERROR " not in err and "Traceback" not in err


# --------------------------------------------------------------------------------- logging

def _capture(fmt, level="INFO"):
    from streamgmm.service.runtime.logs import setup_logging

    buf = io.StringIO()
    setup_logging(level, fmt, stream=buf)
    return buf


def test_json_logs_are_one_object_per_line_with_extras():
    buf = _capture("json")
    try:
        log = logging.getLogger("streamgmm.test")
        log.info("hello %s", "world", extra={"topic": "events", "offset": 42})
        log.debug("hidden")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        _reset_logging()
    lines = buf.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["msg"] == "hello world" and first["level"] == "INFO"
    assert first["logger"] == "streamgmm.test" and first["topic"] == "events"
    assert first["offset"] == 42 and first["ts"].endswith("Z")
    second = json.loads(lines[1])  # the debug line was filtered; the traceback stays inside
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]
    assert len(lines) == 2


def test_plain_logs_and_setup_is_idempotent():
    _capture("plain")
    buf = _capture("plain", "DEBUG")  # replaces the first handler
    try:
        logging.getLogger("streamgmm.x").debug("msg here", extra={"k": "a b"})
        ours = [h for h in logging.getLogger().handlers
                if getattr(h, "_streamgmm_handler", False)]
        assert len(ours) == 1
    finally:
        _reset_logging()
    line = buf.getvalue().strip()
    assert " DEBUG streamgmm.x: msg here" in line and 'k="a b"' in line
    with pytest.raises(ValueError):
        _capture("xml")


def _reset_logging():
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_streamgmm_handler", False):
            root.removeHandler(h)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
