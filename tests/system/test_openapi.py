"""The OpenAPI document tells the truth: schemathesis generates requests from it, valid and invalid, sends
them to a real 2-worker server and runs every check it has: no 5xx, every status, header and content type
documented, responses matching their schema, valid data accepted, invalid data rejected, the Allow header
of a 405, ... A fixed example budget and seed keep the run bounded (about 40 s here) and repeatable.

The schemathesis CLI runs in its own process (its pytest plugin does not work with pytest 9); settings
and the strategies for image and raw bodies are in tests/support/schemathesis.toml and
tests/support/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.liveserver import ROOT

EXAMPLES = 15  # per operation and phase
SEED = 0
ADMIN_KEY = "schemathesis-admin"  # so the model repository routes answer more than 403


def test_schemathesis_finds_nothing(server_factory, tmp_path: Path) -> None:
    with server_factory(workers=2, env={"MNIST_ADMIN_KEY": ADMIN_KEY}) as server:
        command = [
            Path(sys.executable).with_name("schemathesis"),
            "--no-color",
            "--config-file",
            ROOT / "tests" / "support" / "schemathesis.toml",
            "run",
            f"{server.url}/openapi.json",
            "--checks=all",
            f"--max-examples={EXAMPLES}",
            f"--seed={SEED}",
            "--workers=1",
            "--request-timeout=30",
            f"--header=Authorization: Bearer {ADMIN_KEY}",
            f"--report-dir={tmp_path}",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the hooks module is tests.support.schemathesis_hooks
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        metrics = httpx.get(f"{server.url}/metrics").text
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and counts[1] == counts[2], output
    assert int(counts[1]) > 500, output  # every operation was exercised, not skipped
    assert "Tested: 18" in output, output
    assert 'status="500"' not in metrics, "the server answered 500 (to a request schemathesis did not check)"
