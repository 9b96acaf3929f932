"""`run()` embedded in another program: after a clean stop the program lives on.

The signal handler starts a timer that kills the process (exit 1) if the graceful stop
overruns `shutdown_timeout_seconds`; it must be cancelled when `run()` returns.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kafka_helpers import FEATURES, mixture_rows, to_record

pytestmark = pytest.mark.timeout(60)


def test_embedding_process_outlives_shutdown_timeout_after_clean_stop(tmp_path):
    import json

    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps(to_record(i, x)) + "\n"
                            for i, x in enumerate(mixture_rows(200))))
    script = tmp_path / "embed.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        from streamgmm.service.config import config_from_dict
        from streamgmm.service.runtime.daemon import run

        cfg = config_from_dict({{
            "source": {{"type": "file", "path": {str(data)!r}, "follow": True}},
            "records": {{"features": {list(FEATURES)!r}}},
            "sink": {{"type": "file", "path": {str(tmp_path / "out.jsonl")!r}}},
            "dead_letter": {{"type": "file", "path": {str(tmp_path / "dead.jsonl")!r}}},
            "detector": {{"n_components": 3, "max_components": 3, "warmup_records": 100}},
            "metrics": {{"enabled": False}},
            "kafka": {{"poll_timeout_ms": 100}},
            "shutdown_timeout_seconds": 4,
        }}, environ={{}})
        if __name__ == "__main__":  # (the decode worker process re-imports this module)
            # the embedding program asks for a stop the usual way: SIGTERM to itself
            code = run(cfg, ready_callback=lambda d: os.kill(os.getpid(), signal.SIGTERM))
            print("run returned", code, flush=True)
            time.sleep(6)  # well past shutdown_timeout_seconds
            print("still alive", flush=True)
            sys.exit(0 if code == 0 else 3)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=45)
    assert "run returned 0" in r.stdout, r.stderr
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "still alive" in r.stdout
    assert "did not finish in time" not in r.stderr
