"""Checkpoints: whole-state round trip, atomic writes, refusal of bad files, joblib, sklearn."""
import json
import os
import tempfile
import textwrap
import zipfile

import joblib
import numpy as np
import pytest

from streamgmm import Detector
from streamgmm.persistence.checkpoint import (FORMAT_VERSION, MANIFEST_KEY, CheckpointError,
                                            load_state, save_state)


def stream(seed=0, d=5, k=3):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (k, d))

    def draw(n):
        return means[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    return draw


@pytest.fixture
def trained():
    draw = stream()
    det = Detector({"n_components": 3, "warmup_records": 1000,
                    "drift": {"reference_records": 1000}}, background_refit=False,
                   feature_names=list("abcde"))
    det.process(draw(1000))
    for _ in range(10):
        det.process(draw(333))  # leaves partial learn buffer and drift block remainder
    return det, draw


def test_round_trip_restores_the_whole_state(tmp_path, trained):
    """With the recent records (checkpoint.include_recent_records) nothing is lost at all."""
    det, draw = trained
    path = tmp_path / "ckpt.npz"
    det.save(path, include_recent_records=True)
    back = Detector.load(path)
    assert back.model_version == det.model_version
    assert back.counters == det.counters
    assert back.feature_names == list("abcde")
    assert back.threshold_ == det.threshold_
    assert back.model_.n_steps_ == det.model_.n_steps_
    assert back.monitor_.record_ == det.monitor_.record_
    np.testing.assert_array_equal(back.monitor_.S_, det.monitor_.S_)
    # Continuing both on the same data gives identical decisions: nothing was lost.
    for _ in range(5):
        X = draw(400)
        a, b = det.process(X), back.process(X)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(a.is_anomaly, b.is_anomaly)
    assert back.model_.n_steps_ == det.model_.n_steps_


def test_checkpoint_loads_without_pickle(tmp_path, trained):
    det, _ = trained
    path = tmp_path / "ckpt.npz"
    det.save(path)
    with np.load(path, allow_pickle=False) as npz:   # would raise on any object array
        manifest = json.loads(npz[MANIFEST_KEY].tobytes())
        assert manifest["format_version"] == FORMAT_VERSION
        assert all(npz[k].dtype != object for k in npz.files)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, trained):
    det, _ = trained
    path = tmp_path / "state" / "ckpt.npz"
    det.save(path)
    first = path.read_bytes()
    det.save(path)  # overwrite in place
    assert sorted(os.listdir(path.parent)) == ["ckpt.npz"]
    assert len(first) > 1000


def test_a_write_killed_half_way_leaves_a_temp_file_the_next_writes_remove(tmp_path,
                                                                            trained):
    """kill -9 (or an OOM kill, a power cut) between creating the temp file and renaming it
    leaves the temp file behind; a daemon that crashes again and again must not fill its
    volume with them. The next successful write of the same file removes those older than
    STALE_TEMP_SECONDS; a younger one may be another writer's, in progress, and is kept."""
    import signal
    import subprocess
    import sys
    import time

    from streamgmm.persistence import checkpoint

    det, _ = trained
    path = tmp_path / "ckpt.npz"
    child = textwrap.dedent(f"""
        import os, sys, time
        from streamgmm.persistence.checkpoint import atomic_write_bytes
        def stuck(fd):  # a disk that stalls in fsync: the write is caught half-way
            print("writing", flush=True)
            time.sleep(600)
        os.fsync = stuck
        atomic_write_bytes({str(path)!r}, b"x" * 100_000)
        """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"writing\n"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    stale = [n for n in os.listdir(tmp_path) if n != "ckpt.npz"]
    assert len(stale) == 1 and not path.exists(), stale  # what the crash left behind
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 5
    os.utime(tmp_path / stale[0], (old, old))
    legacy = tmp_path / ".tmp-abc123.ckpt"  # the temp names of earlier versions
    legacy.write_bytes(b"x")
    os.utime(legacy, (old, old))
    fd, fresh = tempfile.mkstemp(prefix=checkpoint._temp_prefix(path),
                                 suffix=checkpoint.TEMP_SUFFIX, dir=tmp_path)
    os.close(fd)  # another writer's, in progress
    others = [tmp_path / ".other.npz.x1.tmp",  # other files' temps: not ours to remove
              tmp_path / ".ckpt.npz.position.x2.tmp"]
    for other in others:
        other.write_bytes(b"x")
        os.utime(other, (old, old))
    det.save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ckpt.npz", os.path.basename(fresh), *(o.name for o in others)])
    assert Detector.load(path).ready


def test_stale_temps_are_looked_for_once_per_target_and_after_a_failed_write(tmp_path,
                                                                            monkeypatch):
    """The directory is listed at a process's first write of a target, not at every one (a
    file source writes its position at each commit); a failed write (a full disk) looks
    again, and removes what crashes left."""
    import errno
    import time

    from streamgmm.persistence import checkpoint

    listed = []
    listdir = os.listdir
    monkeypatch.setattr(checkpoint.os, "listdir", lambda d: listed.append(d) or listdir(d))
    path = tmp_path / "p.position"
    for i in range(3):
        checkpoint.atomic_write_bytes(path, b"%d" % i)
    assert len(listed) == 1 and path.read_bytes() == b"2"
    stale = tmp_path / f"{checkpoint._temp_prefix(path)}x1{checkpoint.TEMP_SUFFIX}"
    stale.write_bytes(b"x")
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 5
    os.utime(stale, (old, old))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(OSError, match=str(path)):
        checkpoint.atomic_write_bytes(path, b"3")
    assert len(listed) == 2 and listdir(tmp_path) == ["p.position"]
    assert path.read_bytes() == b"2"


def test_truncated_checkpoint_is_refused(tmp_path, trained):
    det, _ = trained
    path = tmp_path / "ckpt.npz"
    det.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        Detector.load(path)


def test_corrupted_array_fails_the_checksum(tmp_path):
    path = tmp_path / "c.npz"
    save_state(path, {"x": 1}, {"a": np.arange(1000.0)})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    raw = bytearray(members["a.npy"])
    raw[-8:] = np.float64(-1.0).tobytes()       # flip the last value
    members["a.npy"] = bytes(raw)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match="checksum"):
        load_state(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    manifest = {"format": "streamgmm-detector", "format_version": FORMAT_VERSION + 1,
                "arrays": [], "sha256": "", "meta": {}}
    np.savez(path, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    with pytest.raises(CheckpointError, match="newer"):
        load_state(path)


def test_foreign_npz_and_missing_file_are_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a streamgmm checkpoint"):
        Detector.load(path)
    with pytest.raises(CheckpointError, match="no such"):
        Detector.load(tmp_path / "missing.npz")


def test_joblib_export_needs_trust_to_load(tmp_path, trained):
    det, draw = trained
    path = tmp_path / "model.joblib"
    det.export_joblib(path)
    with pytest.raises(CheckpointError, match="trusted=True"):
        Detector.load(path)
    back = Detector.load(path, trusted=True)
    X = draw(200)
    np.testing.assert_allclose(back.score(X).scores, det.score(X).scores)
    # The file holds only plain dicts and arrays (the seeds' joblib workflow).
    obj = joblib.load(path)
    assert set(obj) == {"format", "format_version", "meta", "arrays"}
    assert all(isinstance(v, np.ndarray) for v in obj["arrays"].values())


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_import_sklearn_gaussian_mixture_and_scaler(tmp_path, covariance_type):
    from sklearn.mixture import GaussianMixture as SkGMM
    from sklearn.preprocessing import StandardScaler as SkScaler
    draw = stream(seed=2)
    X = draw(3000) * [1, 10, 100, 0.1, 5] + 50
    scaler = SkScaler().fit(X)
    gmm = SkGMM(3, covariance_type=covariance_type, random_state=0).fit(scaler.transform(X))
    joblib.dump(gmm, tmp_path / "gmm_model.joblib")
    joblib.dump({"model": gmm, "scaler": scaler}, tmp_path / "bundle.joblib")
    with pytest.raises(CheckpointError, match="trusted"):
        Detector.load(tmp_path / "bundle.joblib")
    det = Detector.load(tmp_path / "bundle.joblib", trusted=True)
    Y = draw(500) * [1, 10, 100, 0.1, 5] + 50
    np.testing.assert_allclose(det.score(Y).scores,
                               gmm.score_samples(scaler.transform(Y)), rtol=1e-8, atol=1e-8)
    # The model-only file works too (no scaler: identity scaling).
    det2 = Detector.load(tmp_path / "gmm_model.joblib", trusted=True)
    Z = scaler.transform(Y)
    np.testing.assert_allclose(det2.score(Z).scores, gmm.score_samples(Z), rtol=1e-8)
    # The threshold came from the model's own samples: about p% of its data is flagged.
    if covariance_type == "full":  # (a spherical model misfits this data, so not for all)
        flagged = det.score(X).is_anomaly.mean()
        assert 0.003 < flagged < 0.02
    # and it saves as a safe checkpoint
    det.save(tmp_path / "c.npz")
    assert Detector.load(tmp_path / "c.npz").model_version == det.model_version


def test_from_sklearn_with_fit_data_sets_threshold_from_it():
    from sklearn.mixture import GaussianMixture as SkGMM
    X = stream(seed=4)(2000)
    gmm = SkGMM(3, random_state=0).fit(X)
    det = Detector.from_sklearn(gmm, percentile=2.0, X_fit=X)
    assert det.threshold_ == pytest.approx(np.percentile(gmm.score_samples(X), 2.0))
    assert det.train_info_["threshold_source"] == "X_fit"


def _heavy_tailed(n, seed=5):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.standard_t(3, n), rng.standard_t(3, n) * 4 + 10,
                            rng.normal(size=n)])


def test_from_sklearn_threshold_is_the_percentile_of_heavy_tailed_fit_data():
    """The far-out fence must not set an imported model's threshold: X_fit holds no rows a
    fit dropped, so the threshold is its percentile even when its tail is long."""
    from sklearn.mixture import GaussianMixture as SkGMM
    X = np.random.RandomState(1).standard_t(3, size=(5000, 4))
    gmm = SkGMM(2, random_state=0).fit(X)
    det = Detector.from_sklearn(gmm, percentile=1.0, X_fit=X)
    assert det.threshold_ == pytest.approx(np.percentile(gmm.score_samples(X), 1.0))
    assert det.score(X).is_anomaly.mean() == pytest.approx(0.01, abs=0.001)


def test_from_sklearn_threshold_from_the_models_own_sample_flags_p():
    """Without X_fit the threshold is the percentile of a sample of the whole model (a
    sample comes grouped by component: none may be left out)."""
    from sklearn.mixture import GaussianMixture as SkGMM
    X = _heavy_tailed(3000)
    gmm = SkGMM(3, random_state=0).fit(X)
    det = Detector.from_sklearn(gmm, percentile=1.0)
    S, _ = gmm.sample(200_000)
    assert det.threshold_ == pytest.approx(np.percentile(gmm.score_samples(S), 1.0), abs=0.2)
    assert det.train_info_["n_records"] == det.config.threshold.window


@pytest.mark.parametrize("step", ["RobustScaler", "MinMaxScaler", "PCA", "StandardScaler"])
def test_a_pipeline_with_other_steps_than_a_standard_scaler_is_refused(tmp_path, step):
    import sklearn.decomposition
    import sklearn.preprocessing
    from sklearn.mixture import GaussianMixture as SkGMM
    from sklearn.pipeline import make_pipeline
    X = _heavy_tailed(1000)
    cls = getattr(sklearn.preprocessing, step, None) or getattr(sklearn.decomposition, step)
    pipe = make_pipeline(cls(), SkGMM(2, random_state=0)).fit(X)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    if step == "StandardScaler":
        det = Detector.load(tmp_path / "pipe.joblib", trusted=True)
        np.testing.assert_allclose(det.score(X).scores, pipe.score_samples(X), rtol=1e-8)
        return
    with pytest.raises(CheckpointError, match=f"step '{step.lower()}' is a {step}"):
        Detector.load(tmp_path / "pipe.joblib", trusted=True)


def test_a_fixed_component_count_may_exceed_max_components(tmp_path):
    """`max_components` bounds `auto` only: an imported 10-component model and a fixed
    `n_components: 10` are valid."""
    from sklearn.mixture import GaussianMixture as SkGMM
    X = stream(seed=3, k=10)(3000)
    gmm = SkGMM(10, random_state=0).fit(X)
    joblib.dump(gmm, tmp_path / "g10.joblib")
    det = Detector.load(tmp_path / "g10.joblib", trusted=True)
    np.testing.assert_allclose(det.score(X).scores, gmm.score_samples(X), rtol=1e-8)
    det = Detector({"n_components": 10, "warmup_records": 1000}, background_refit=False)
    det.process(X[:1000])
    assert det.ready and det.model_.n_components == 10


def test_warming_up_detector_saves_config_only(tmp_path):
    det = Detector({"warmup_records": 500})
    det.process(np.random.default_rng(0).normal(size=(100, 3)))
    det.save(tmp_path / "w.npz")
    back = Detector.load(tmp_path / "w.npz")
    assert not back.ready and back.pending == 0 and back.config.warmup_records == 500


# ------------------------------------------------------------ reconfigure a restored detector

def test_reconfigure_without_changes_keeps_everything(tmp_path, trained):
    det, _ = trained
    thr, mon = det.threshold_model_, det.monitor_
    assert det.reconfigure(det.config.to_dict()) == []
    assert det.threshold_model_ is thr and det.monitor_ is mon


def test_reconfigured_percentile_applies_at_once(tmp_path, trained):
    det, draw = trained
    det.save(tmp_path / "c.npz")
    back = Detector.load(tmp_path / "c.npz")
    cfg = back.config.to_dict()
    cfg["threshold"]["percentile"] = 10.0
    old = back.threshold_
    changes = back.reconfigure(cfg)
    assert ("threshold.percentile", 1.0, 10.0) in changes
    assert back.config.threshold.percentile == 10.0
    window = back.threshold_model_.recent()
    assert back.threshold_ > old
    kept = window[np.isfinite(window)]
    f = 1 - len(kept) / len(window)  # gross scores count towards the rate (threshold.py)
    assert back.threshold_ == pytest.approx(np.percentile(kept, 100 * (0.10 - f) / (1 - f)))
    assert back.monitor_.percentile == 10.0  # drift tests restarted for the new rate
    res = back.process(draw(5000))
    assert 0.07 < res.is_anomaly.mean() < 0.13


def test_reconfigured_windows_keep_the_most_recent_data(trained):
    det, _ = trained
    scores = det.threshold_model_.recent()
    records = det.scheduler_.ring.last(10**9)
    cfg = det.config.to_dict()
    cfg["threshold"]["window"] = 500
    cfg["refit"]["window"] = 800
    cfg["refit"]["min_records"] = 400
    det.reconfigure(cfg)
    assert np.array_equal(det.threshold_model_.recent(), scores[-500:])
    assert det.scheduler_.ring.buf.shape == (800, 5)
    assert np.array_equal(det.scheduler_.ring.last(800), records[-800:])
    assert det.scheduler_.cfg.min_records == 400


def test_reconfigured_online_and_drift_settings(trained):
    det, draw = trained
    cfg = det.config.to_dict()
    cfg["online"]["alpha"] = 0.9
    cfg["drift"]["expected_run_length"] = 1e6
    cfg["n_components"] = 4  # structural: for the next fit only
    changes = dict((k, (a, b)) for k, a, b in det.reconfigure(cfg))
    assert changes["online.alpha"] == (0.6, 0.9)
    assert det.model_.alpha == 0.9
    assert det.monitor_.expected_run_length == 1e6
    assert det.n_components == 3 and det.config.n_components == 4
    det.process(draw(1000))  # still works


def test_reconfigure_rejects_bad_settings(trained):
    det, _ = trained
    cfg = det.config.to_dict()
    cfg["threshold"]["percentile"] = 70
    with pytest.raises(ValueError, match="percentile"):
        det.reconfigure(cfg)
    assert det.config.threshold.percentile == 1.0
