"""The suite's own rules (tests/conftest.py): under CI the data and the bundled model are required,
so that a CI run cannot pass with the tests that need them skipped."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def _pytest(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--collect-only", "tests/test_collate.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ci_without_the_glue_data_fails_instead_of_skipping(tmp_path):
    env = {**os.environ, "CI": "true", "MTDNN_GLUE_DIR": str(tmp_path / "no-glue")}
    proc = _pytest(env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"CI run without the GLUE data ({tmp_path / 'no-glue'}/RTE/train.tsv; set " \
           "MTDNN_GLUE_DIR)" in proc.stdout + proc.stderr
    # Outside CI the same run collects (the tests that need the data skip themselves).
    env["CI"] = "false"
    assert _pytest(env).returncode == 0
