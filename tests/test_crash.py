"""The quick version of benchmarks/crash.py: `llamavid encode` killed with SIGKILL at 3 points, then rerun.

The full run (20 kill points each for `encode` and `ask --batch`, evenly spaced in time) is
``python benchmarks/crash.py``; this one kills encode right after 2, 4 and 5 of its 7 chunks are on disk,
so that every rerun really resumes, and checks that each result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "crash.py"

pytestmark = pytest.mark.slow  # kills processes; about 20 s


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_encode_killed_at_three_points_resumes_bit_identical(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--keep", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["summary"] == {"encode": {"points": 3, "killed_mid_run": 3, "survived": 3, "failed": 0,
                                            "finished_before_kill": 0}}
    points = report["points"]
    assert [p["kill_at"] for p in points] == ["chunk 2", "chunk 4", "chunk 5"]
    for goal, point in zip((2, 4, 5), points):
        on_disk = int(point["at_kill"].split()[0])  # the kill lands within milliseconds of the goal
        assert goal <= on_disk < 7, point
        assert point["rerun"] == f"resumed from frame {64 * on_disk}", point  # every whole chunk was kept
        assert point["ok"] and point["problem"] == "", point
