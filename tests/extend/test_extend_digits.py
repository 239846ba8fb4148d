"""The extension benchmark on the digits data, shortened: bridged audio finds images far above chance."""

import pytest
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bridged_audio_retrieves_images_of_its_class(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_extend.py"), "--quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    # chance is 10%; the exact figures of the full run are in BENCHMARKS.md. At this short
    # budget the paired models' P@1 still swings by several points, so they are held to mAP.
    assert results["bridged (no audio-image pairs)"]["P@1"] > 25
    assert results["added to frozen A (paired)"]["mAP"] > 18
    assert results["joint training (paired upper bound)"]["mAP"] > 18
