"""The reference docs stay in step with the code."""
from pathlib import Path

from streamgmm.service.config import iter_keys

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented_with_its_default():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for key in iter_keys():
        assert f"| `{key}` |" in text, f"{key} missing from docs/configuration.md"


def test_configuration_tables_are_derived_from_the_schema():
    """Each row (key, default, meaning) is what the schema declares, and no stale key is left:
    `python -m streamgmm.service.config.reference --write docs/configuration.md` fixes it."""
    from streamgmm.service.config.reference import rewrite, rows

    text = (ROOT / "docs" / "configuration.md").read_text()
    regenerated, stale, missing = rewrite(text)
    assert not stale and not missing, (stale, missing)
    assert regenerated == text
    assert rows()["detector.threshold.percentile"] == (
        "| `detector.threshold.percentile` | `1.0` | flag the lowest p% of log-densities, "
        "0 < p < 50 |")


def test_detector_defaults_are_declared_once():
    """The Detector, the YAML schema and the drift tests share one declaration."""
    import inspect

    from streamgmm.detection.config import DetectorConfig
    from streamgmm.detection.drift import DriftMonitor
    from streamgmm.service.config import config_from_dict

    cfg = config_from_dict({"records": {"features": ["a"]}}, environ={})
    assert cfg.detector == DetectorConfig()
    assert type(cfg.detector) is DetectorConfig
    params = inspect.signature(DriftMonitor).parameters
    shared = {"percentile", "expected_run_length", "feature_tests", "reference_records",
              "block_size"} & set(params)
    assert len(shared) >= 4
    assert all(params[p].default is inspect.Parameter.empty for p in shared), \
        "DriftMonitor must take its settings from the config, not defaults of its own"


def test_readme_gives_the_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in readme and "python3 -m pytest -q" in ci
    for doc in ("docs/configuration.md", "docs/operations.md", "docs/architecture.md"):
        assert doc in readme and (ROOT / doc).exists()


def test_every_exported_metric_family_is_documented():
    from prometheus_client.exposition import generate_latest

    from streamgmm.service.runtime.metrics import DaemonMetrics

    from streamgmm.service.fleet.status import FleetStatus

    text = (ROOT / "docs" / "metrics.md").read_text()
    metrics = DaemonMetrics()
    metrics.observe_fleet(FleetStatus(group="g"))  # a fleet member: its series too
    page = generate_latest(metrics.registry).decode()
    names = {line.split()[2] for line in page.splitlines()
             if line.startswith("# TYPE") and not line.split()[2].endswith("_created")}
    assert len(names) >= 27 and "streamgmm_fleet_model_version" in names
    for name in names:
        suffix = "_total" if f"# TYPE {name} counter" in page else ""
        assert f"`{name}{suffix}`" in text or f"`{name}`" in text, name
