"""The reference docs stay in step with the code."""
from pathlib import Path

from streamgmm.service.config import iter_keys

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented_with_its_default():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for key in iter_keys():
        assert f"| `{key}` |" in text, f"{key} missing from docs/configuration.md"


def test_readme_gives_the_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in readme and "python3 -m pytest -q" in ci
    for doc in ("docs/configuration.md", "docs/operations.md", "docs/architecture.md"):
        assert doc in readme and (ROOT / doc).exists()


def test_every_exported_metric_family_is_documented():
    from prometheus_client.exposition import generate_latest

    from streamgmm.service.runtime.metrics import DaemonMetrics

    text = (ROOT / "docs" / "metrics.md").read_text()
    page = generate_latest(DaemonMetrics().registry).decode()
    names = {line.split()[2] for line in page.splitlines()
             if line.startswith("# TYPE") and not line.split()[2].endswith("_created")}
    assert len(names) >= 20
    for name in names:
        suffix = "_total" if f"# TYPE {name} counter" in page else ""
        assert f"`{name}{suffix}`" in text or f"`{name}`" in text, name
