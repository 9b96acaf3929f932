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
