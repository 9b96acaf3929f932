"""A model's life over restarts, as an operator changes the config between them: what the
daemon starts from (checkpoint before model.path), what it says when the config and the saved
model disagree, and how to get out of it (streamgmm/service/runtime/daemon.py, load_detector)."""
from __future__ import annotations

import logging
import os

import pytest

from kafka_helpers import FEATURES, mixture_rows
from streamgmm import Detector
from streamgmm.service.config import config_from_dict
from streamgmm.service.runtime.daemon import DaemonError, load_detector

DET = {"n_components": 2, "max_components": 2, "warmup_records": 300}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint and an older model file, both trained on FEATURES."""
    d = tmp_path_factory.mktemp("life")
    det = Detector(DET, feature_names=FEATURES, background_refit=False)
    det.process(mixture_rows(600, seed=1))
    det.save(d / "model.npz")
    det.process(mixture_rows(400, seed=2))
    det.save(d / "ck.npz")
    det.close()
    os.utime(d / "model.npz", (1e9, 1e9))  # older than the checkpoint
    return d


def _cfg(d, features=FEATURES, model=True, detector=None):
    return config_from_dict({
        "source": {"type": "file", "path": str(d / "in.jsonl")},
        "records": {"features": list(features)},
        "detector": {**DET, **(detector or {})},
        "model": {"path": str(d / "model.npz") if model else None},
        "checkpoint": {"path": str(d / "ck.npz")},
        "metrics": {"enabled": False}}, environ={})


def _load(cfg, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streamgmm.daemon"):
        det = load_detector(cfg)
    det.close()
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_a_checkpoint_wins_over_model_path_and_the_log_says_so(saved, caplog):
    """model.path is read only without a checkpoint: the restart says it did not load it,
    and warns when the model file is newer than the checkpoint (a model fitted since, that
    the operator meant to start from: it used to be ignored without a word)."""
    lines = _load(_cfg(saved), caplog)
    assert any(lv == "INFO" and "model.path" in m and "not loaded" in m for lv, m in lines)
    os.utime(saved / "model.npz")  # refitted now: newer than the checkpoint
    try:
        lines = _load(_cfg(saved), caplog)
    finally:
        os.utime(saved / "model.npz", (1e9, 1e9))
    warned = [m for lv, m in lines if lv == "WARNING" and "model.path" in m]
    assert warned and "newer than the checkpoint" in warned[0] and "move the checkpoint" \
        in warned[0], lines
    assert not any("model.path" in m for _, m in _load(_cfg(saved, model=False), caplog))


def test_structural_settings_are_said_to_wait_for_the_next_refit(saved, caplog):
    """A changed n_components or covariance_type does not change the restored model (it
    applies at the next refit, which may never come); the warning used to say 'using the
    config's' for them as for the settings that do apply at once."""
    lines = _load(_cfg(saved, detector={"n_components": 3, "covariance_type": "diag",
                                         "threshold": {"percentile": 5.0}}), caplog)
    (msg,) = [m for lv, m in lines if lv == "WARNING" and "differ" in m]
    now, _, later = msg.partition("from the next refit on")
    assert "detector.threshold.percentile 1.0 -> 5.0" in now
    assert "n_components" not in now and "covariance_type" not in now
    assert "detector.n_components 2 -> 3" in later and "covariance_type 'full' -> 'diag'" \
        in later and "streamgmm fit" in later


@pytest.mark.parametrize("features", [
    [FEATURES[1], FEATURES[0], *FEATURES[2:]],        # reordered
    [*FEATURES, "extra"],                             # one added
    [*FEATURES[:-1], "sensor.rpm2"],                  # one renamed
])
def test_a_checkpoint_on_other_features_is_refused_with_the_way_out(saved, features):
    """Never scored with the columns in another order: refused, naming both lists and what
    to do (move the checkpoint away to start from model.path or a warm-up)."""
    with pytest.raises(DaemonError) as e:
        load_detector(_cfg(saved, features=features))
    text = str(e.value)
    assert str(list(FEATURES)) in text and str(list(features)) in text
    assert f"move the checkpoint {saved / 'ck.npz'} away" in text


def test_a_float32_model_says_so(tmp_path, caplog):
    """A Detector(dtype=float32) saved from Python scores and refits in float32 in the daemon
    too: `inspect` and the restore line say so (nothing did)."""
    import subprocess
    import sys

    import numpy as np

    det = Detector(DET, feature_names=FEATURES, dtype=np.float32, background_refit=False)
    det.process(mixture_rows(600, seed=1))
    det.save(tmp_path / "model.npz")
    det.close()
    assert Detector.load(tmp_path / "model.npz").describe()["dtype"] == "float32"
    r = subprocess.run([sys.executable, "-m", "streamgmm", "inspect", str(tmp_path / "model.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "dtype" in r.stdout and "float32" in r.stdout, r.stderr
    lines = _load(_cfg(tmp_path), caplog)
    assert any("restored model" in m and "float32" in m for _, m in lines), lines


def test_check_config_warns_that_model_path_will_not_be_loaded(saved, capsys):
    """`check-config` says what the start will do: with a checkpoint on disk, model.path is
    not loaded (a warning, naming the key; louder when the model file is newer)."""
    import yaml

    from streamgmm.service import cli

    cfg = {"source": {"type": "file", "path": str(saved / "in.jsonl")},
           "records": {"features": list(FEATURES)}, "detector": DET,
           "model": {"path": str(saved / "model.npz")},
           "checkpoint": {"path": str(saved / "ck.npz")}, "metrics": {"enabled": False}}
    path = saved / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["check-config", "-q", "--offline", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: model.path:" in err and "will not be loaded" in err
    assert "newer" not in err
    os.utime(saved / "model.npz")
    try:
        assert cli.main(["check-config", "-q", "--offline", str(path)]) == 0
    finally:
        os.utime(saved / "model.npz", (1e9, 1e9))
    assert "although the model file is newer" in capsys.readouterr().err
    cfg["model"]["path"] = None
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["check-config", "-q", "--offline", str(path)]) == 0
    assert "model.path" not in capsys.readouterr().err
