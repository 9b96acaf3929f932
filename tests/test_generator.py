"""Scenario generator: reproducibility, anomaly rate and placement, drift timing, labels, Kafka."""
from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from streamgmm.tools import generator as g
from streamgmm.tools.generator import (
    BLOCK, DriftSpecError, Scenario, ScenarioGenerator, generate, generate_arrays, parse_drift,
)


def run_cli(argv, capsys=None) -> int:
    """Parse argv with the generator's own options and run main()."""
    parser = argparse.ArgumentParser(prog="streamgmm generate")
    g.add_arguments(parser)
    return g.main(parser.parse_args(argv))


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- drift spec syntax -------------------------------------------------------------------------

def test_parse_drift_specs():
    d = parse_drift("shift@50000:feature=0,size=3")
    assert (d.kind, d.start, d.end, d.features, d.size) == ("shift", 50000, None, (0,), 3.0)
    d = parse_drift("slow@20k-60k:feature=1+amount,size=4")
    assert (d.kind, d.start, d.end, d.features, d.size) == ("slow", 20000, 60000, (1, "amount"), 4)
    d = parse_drift("variance@1.5M:factor=2.5")
    assert (d.kind, d.start, d.features, d.factor) == ("scale", 1_500_000, None, 2.5)
    d = parse_drift("new-component@100:weight=0.3,distance=9")
    assert (d.kind, d.weight, d.distance) == ("component", 0.3, 9.0)
    assert parse_drift("shift@10:feature=all").features is None


@pytest.mark.parametrize("spec", [
    "shift", "shift@", "teleport@100", "shift@100:size", "shift@100:size=big",
    "shift@100:factor=2", "slow@100", "shift@200-100", "scale@5:factor=0",
    "component@5:weight=1.5", "shift@1.5", "shift@10:size=nan",
])
def test_parse_drift_rejects_bad_specs(spec):
    with pytest.raises(DriftSpecError):
        parse_drift(spec)


def test_unknown_or_out_of_range_feature_is_rejected():
    with pytest.raises(DriftSpecError, match="unknown feature"):
        Scenario(d=2, drifts=["shift@10:feature=nope"])
    with pytest.raises(DriftSpecError, match="out of range"):
        Scenario(d=2, drifts=["shift@10:feature=2"])
    sc = Scenario(feature_names=("a", "b.c"), drifts=["shift@10:feature=b.c"])
    assert sc.drifts[0].features == (1,)


def test_cli_rejects_bad_drift_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["--drift", "shift@x"])
    assert exc.value.code == 2
    assert "record index" in capsys.readouterr().err
    assert run_cli(["--count", "5", "--drift", "shift@1:feature=9", "-o", "-"]) == 2


def test_help_documents_drift_syntax():
    parser = argparse.ArgumentParser(prog="streamgmm generate")
    g.add_arguments(parser)
    text = parser.format_help()
    for word in ("KIND@START[-END]", "shift@50000:feature=0,size=3", "slow", "scale",
                 "component", "--labels", "--label-field", "--rate", "--bootstrap-servers"):
        assert word in text


# -- reproducibility --------------------------------------------------------------------------

def _records(n, **kw):
    return [ev.record for ev in generate(n, start_time=1_700_000_000.0, **kw)]


def test_same_seed_same_stream_and_different_seed_differs():
    kw = dict(d=4, k=3, anomaly_rate=0.05, drifts=["shift@3000:feature=1,size=2"])
    a = _records(6000, seed=11, **kw)
    b = _records(6000, seed=11, **kw)
    c = _records(6000, seed=12, **kw)
    assert a == b
    assert a != c
    assert json.dumps(a) == json.dumps(b)


def test_prefix_and_resume_are_consistent():
    """A shorter run is a prefix of a longer one; --start-index resumes the same stream."""
    full = _records(BLOCK + 500, seed=3)
    assert _records(700, seed=3) == full[:700]
    tail = [ev.record for ev in generate(600, seed=3, start=BLOCK - 100,
                                         start_time=1_700_000_000.0)]
    assert tail == full[BLOCK - 100:BLOCK + 500]


def test_arrays_match_records():
    X, lab = generate_arrays(2000, seed=5, d=3)
    recs = list(generate(2000, seed=5, d=3, decimals=None, id_field="id", timestamp_field=None))
    got = np.array([[r.record[f"f{j}"] for j in range(3)] for r in recs])
    np.testing.assert_array_equal(got, X)
    assert [r.record["id"] for r in recs] == list(range(2000))
    assert np.array_equal(lab["is_anomaly"], [r.label["label"] == 1 for r in recs])


def test_cli_output_is_reproducible(tmp_path):
    args = ["--count", "3000", "--seed", "9", "--start-time", "1000", "--anomaly-rate", "0.02",
            "--drift", "scale@1000:factor=2", "--labels"]
    assert run_cli(args + [str(tmp_path / "l1"), "-o", str(tmp_path / "a")]) == 0
    assert run_cli(args + [str(tmp_path / "l2"), "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "l1").read_bytes() == (tmp_path / "l2").read_bytes()


# -- anomalies ---------------------------------------------------------------------------------

def test_anomaly_rate_and_kinds():
    n, rate = 60_000, 0.02
    _, lab = generate_arrays(n, seed=1, d=3, k=4, anomaly_rate=rate, cluster_fraction=0.25)
    frac = lab["is_anomaly"].mean()
    sd = np.sqrt(rate * (1 - rate) / n)
    assert abs(frac - rate) < 4 * sd
    cl = (lab["kind"] == 2).sum() / lab["is_anomaly"].sum()
    assert 0.2 < cl < 0.3
    assert np.all(lab["component"][lab["is_anomaly"]] == -1)
    assert np.all(lab["component"][~lab["is_anomaly"]] >= 0)
    _, none = generate_arrays(10_000, seed=1, anomaly_rate=0.0)
    assert not none["is_anomaly"].any()


def _true_logpdf(gen: ScenarioGenerator, X):
    dens = sum(w * multivariate_normal(m, c).pdf(X)
               for w, m, c in zip(gen.weights, gen.means, gen.covariances))
    return np.log(np.maximum(dens, 1e-300))


def test_anomalies_are_far_and_clusters_are_tight():
    sc = Scenario(d=3, k=3, seed=4, anomaly_rate=0.02, cluster_fraction=0.4, cluster_size=10)
    gen = ScenarioGenerator(sc)
    X, lab = generate_arrays(40_000, scenario=sc)
    ld = _true_logpdf(gen, X)
    normal = ld[~lab["is_anomaly"]]
    # every planted anomaly is below the 0.1% quantile of the normal records' true density
    assert ld[lab["is_anomaly"]].max() < np.quantile(normal, 0.001)
    # cluster members: several per cluster, tightly packed, far from each other's clusters
    ids = lab["cluster"][lab["kind"] == 2]
    counts = np.bincount(ids)
    counts = counts[counts > 0]
    assert 5 <= counts.mean() <= 15
    big = np.argmax(np.bincount(ids))
    members = X[lab["cluster"] == big]
    assert members.std(axis=0).max() < 0.2
    # isolated points are not clumped together
    pts = X[lab["kind"] == 1]
    assert np.linalg.norm(pts.std(axis=0)) > 3


# -- drift timing -------------------------------------------------------------------------------

def test_abrupt_shift_starts_at_its_index():
    sc = Scenario(d=3, k=2, seed=2, anomaly_rate=0.0, drifts=["shift@20000:feature=0,size=3"])
    gen = ScenarioGenerator(sc)
    X, lab = generate_arrays(40_000, scenario=sc)
    base, _ = generate_arrays(40_000, seed=2, d=3, k=2, anomaly_rate=0.0)
    diff = X - base
    expected = 3 * gen.feature_std[0]
    assert np.all(diff[:20000] == 0)
    np.testing.assert_allclose(diff[20000:, 0], expected)
    assert np.all(diff[:, 1:] == 0)


def test_slow_drift_ramps_linearly():
    sc = Scenario(d=2, seed=2, anomaly_rate=0.0, drifts=["slow@10000-20000:feature=all,size=4"])
    gen = ScenarioGenerator(sc)
    off = gen.offsets(np.array([0, 10000, 15000, 20000, 30000]))
    full = 4 * gen.feature_std
    np.testing.assert_allclose(off, np.array([0 * full, 0 * full, 0.5 * full, full, full]))


def test_variance_change_and_new_component():
    sc = Scenario(d=2, k=2, seed=8, anomaly_rate=0.0,
                  drifts=["scale@10000:factor=3", "component@20000:weight=0.25"])
    X, lab = generate_arrays(40_000, scenario=sc)
    base, _ = generate_arrays(40_000, seed=8, d=2, k=2, anomaly_rate=0.0)
    gen = ScenarioGenerator(sc)
    comp = lab["component"]
    # before 10000 identical; between 10000 and 20000 deviations are 3x
    np.testing.assert_array_equal(X[:10000], base[:10000])
    mid = slice(10000, 20000)
    dev_new = X[mid] - gen.means[comp[mid]]
    dev_old = base[mid] - gen.means[comp[mid]]
    np.testing.assert_allclose(dev_new, 3 * dev_old, atol=1e-9)
    # the new component (index k) appears only from 20000, with about its weight
    assert not np.any(comp[:20000] == 2)
    share = np.mean(comp[20000:] == 2)
    assert abs(share - 0.25) < 0.02
    new_mu = gen.new_components[0][1]
    assert np.linalg.norm(X[20000:][comp[20000:] == 2].mean(axis=0) - new_mu) < 0.5


def test_anomalies_follow_a_shift():
    """After a shift the planted anomalies are still far from the (shifted) normal data."""
    sc = Scenario(d=3, seed=6, anomaly_rate=0.02, drifts=["shift@10000:feature=all,size=5"])
    gen = ScenarioGenerator(sc)
    X, lab = generate_arrays(20_000, scenario=sc)
    after = slice(10000, 20000)
    Xs = X[after] - gen.offsets(np.arange(10000, 20000))
    ld = _true_logpdf(gen, Xs)
    anom = lab["is_anomaly"][after]
    assert ld[anom].max() < np.quantile(ld[~anom], 0.001)


# -- labels -------------------------------------------------------------------------------------

def test_label_file_matches_records(tmp_path):
    out, labels = tmp_path / "ev.jsonl", tmp_path / "labels.jsonl"
    rc = run_cli(["--count", "5000", "--seed", "3", "--anomaly-rate", "0.03",
                  "--feature-names", "amount,latency_ms,sensor.temp",
                  "--drift", "shift@2500:feature=amount,size=3",
                  "--label-field", "_label", "-o", str(out), "--labels", str(labels)])
    assert rc == 0
    recs, labs = read_jsonl(out), read_jsonl(labels)
    assert len(recs) == len(labs) == 5000
    for i, (r, lab) in enumerate(zip(recs, labs)):
        assert r["id"] == lab["index"] == i
        assert set(r) == {"id", "ts", "amount", "latency_ms", "sensor", "_label"}
        assert set(r["sensor"]) == {"temp"}
        assert r["_label"] == {k: v for k, v in lab.items() if k != "index"}
        assert lab["label"] == (lab["kind"] != "normal")
        assert lab["scenario"] == ("stationary" if i < 2500 else "shift@2500:feature=amount,size=3")
        assert (lab["cluster"] is not None) == (lab["kind"] == "cluster")
    # ground truth agrees with the array API
    _, arr = generate_arrays(5000, seed=3, anomaly_rate=0.03,
                             feature_names=("amount", "latency_ms", "sensor.temp"),
                             drifts=["shift@2500:feature=amount,size=3"])
    assert [lab["label"] for lab in labs] == arr["is_anomaly"].astype(int).tolist()


def test_stdout_output_and_no_optional_fields(capsys):
    rc = run_cli(["--count", "3", "--id-field", "", "--timestamp-field", "", "-d", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert set(json.loads(lines[0])) == {"f0", "f1"}


def test_rate_paces_output():
    buf = io.StringIO()
    t0 = time.monotonic()
    n = g.write_jsonl(generate(600, seed=0), buf, rate=2000)
    took = time.monotonic() - t0
    assert n == 600 and len(buf.getvalue().splitlines()) == 600
    assert 0.25 <= took < 3.0


# -- Kafka --------------------------------------------------------------------------------------

def test_kafka_output_creates_topic_and_labels_offsets(bootstrap, tmp_path):
    from kafka_helpers import read_topic, unique
    from kafka import KafkaAdminClient

    topic = unique("gen")
    labels = tmp_path / "labels.jsonl"
    rc = run_cli(["--count", "300", "--seed", "5", "--start-time", "1000", "--anomaly-rate", "0.05",
                  "--bootstrap-servers", bootstrap, "--topic", topic, "--partitions", "2",
                  "--key-field", "id", "--labels", str(labels)])
    assert rc == 0
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()
    msgs = read_topic(bootstrap, topic, min_records=300)
    assert len(msgs) == 300
    expected = {ev.record["id"]: ev.record
                for ev in generate(300, seed=5, anomaly_rate=0.05, start_time=1000.0)}
    got = {}
    for m in msgs:
        rec = json.loads(m.value)
        assert m.key == str(rec["id"]).encode()
        got[rec["id"]] = (rec, m.partition, m.offset)
    assert {i: r for i, (r, _, _) in got.items()} == expected
    labs = read_jsonl(labels)
    assert sorted(lab["index"] for lab in labs) == list(range(300))
    for lab in labs:
        rec, part, off = got[lab["index"]]
        assert (lab["topic"], lab["partition"], lab["offset"]) == (topic, part, off)
    # a second run into the existing topic is fine (no create error)
    assert run_cli(["--count", "10", "--bootstrap-servers", bootstrap, "--topic", topic]) == 0


# -- the CLI as a process ----------------------------------------------------------------------

def test_streamgmm_generate_command_stops_cleanly_on_sigterm(tmp_path):
    """`streamgmm generate` forever at a rate; SIGTERM ends it with complete lines, exit 0."""
    import signal
    import subprocess
    import sys

    out, labels = tmp_path / "ev.jsonl", tmp_path / "lab.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "streamgmm", "generate", "--count", "0",
                             "--rate", "2000", "-o", str(out), "--labels", str(labels)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (not out.exists() or out.stat().st_size < 10_000) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 0, err
    recs, labs = read_jsonl(out), read_jsonl(labels)
    assert len(recs) == len(labs) > 100
    assert [r["id"] for r in recs] == list(range(len(recs)))
    assert f"wrote {len(recs)} records" in err
