"""The guides work as written: their commands, copied from the Markdown, run in a copy of the checkout elsewhere.

The README's quickstart, extension and "Start from CLIP" walk-throughs and the glyph
plugin's guide are run command by command in a fresh copy of the repository's files (what a
clone holds) in a temporary folder. Only the budget is cut (``--set optim.max_steps=2``, a
bridge of 10 steps, 5 shapes per class) and downloads (``hf download``) are left to the
user: tiny random checkpoints stand in for CLIP and CLAP. Paths, file names and the order of
the commands are the guides' own. The "Start from CLIP" commands run in the test's own
process, so that they share one start-up.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET = {"gramx train": " --set optim.max_steps=2", "gramx extend add": " --set optim.max_steps=2",
          "gramx extend bridge": " --set steps=10", "gramx-shapes": " --per-class 5 --points 64"}


def blocks(markdown: Path, heading: str, language: str) -> list[str]:
    """The ``language`` code blocks of one section (``## heading``) of a Markdown file."""
    text = markdown.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined; comments, the venv activation, installs and
    downloads dropped."""
    joined = block.replace("\\\n", " ")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith(("source ", "pip install", "pytest ", "hf "))]


def with_budget(command: str) -> str:
    for prefix, extra in BUDGET.items():
        if command.startswith(prefix):
            return command + extra
    return command


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) copied to a new folder."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    target = tmp_path_factory.mktemp("anywhere") / "gramx-clone"
    for name in listing.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(checkout: Path, command: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GRAMX_DISABLE_PLUGINS", None)
    proc = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_readme_quickstart_and_extension_walkthrough(checkout):
    readme = checkout / "README.md"
    steps = [with_budget(c) for block in blocks(readme, "Quickstart (5 minutes)", "bash") for c in commands(block)]
    steps += [with_budget(c) for block in blocks(readme, "Extending trained models", "bash")
              for c in commands(block)]
    assert len(steps) >= 9 and any(s.startswith("gramx extend bridge") for s in steps)
    for command in steps:
        run(checkout, command)
    assert (checkout / "runs" / "digits-bridged" / "model" / "config.json").is_file()
    python = blocks(readme, "Quickstart (5 minutes)", "python")[0]
    run(checkout, f"{sys.executable} - <<'EOF'\n{python}\nEOF")


@pytest.mark.slow
def test_glyph_plugin_guide(checkout):
    guide = checkout / "examples" / "glyph_plugin" / "README.md"
    steps = [with_budget(c) for heading in ("2. Install and check it", "3. Add data and train")
             for block in blocks(guide, heading, "bash") for c in commands(block)]
    assert any(s.startswith("gramx train runs/glyph/run.yaml") for s in steps)
    for command in steps:
        run(checkout, command)
    assert (checkout / "runs" / "glyph" / "run" / "model" / "config.json").is_file()


def run_here(checkout: Path, command: str) -> None:
    """Run a ``gramx`` or ``gramx-shapes`` command in this process, in ``checkout``: the guide's
    commands then share one start-up (importing transformers costs seconds per process)."""
    from gramx_pointcloud.shapes import main as shapes

    from gramx.cli.app import main as gramx

    argv = shlex.split(command)
    entry = {"gramx": lambda args: gramx(["--debug", *args]), "gramx-shapes": shapes}[argv[0]]
    assert entry(argv[1:]) == 0, command


@pytest.mark.slow
def test_readme_start_from_clip(checkout, monkeypatch, one_thread):
    from gramx_hf.testing import save_tiny_clap, save_tiny_clip

    save_tiny_clip(checkout / "models" / "clip")  # stand-ins for the downloaded checkpoints
    save_tiny_clap(checkout / "models" / "clap")
    readme = checkout / "README.md"
    steps = [with_budget(c) for block in blocks(readme, "Start from CLIP", "bash") for c in commands(block)]
    assert any(s.startswith("gramx import models/clap") for s in steps)
    assert any(s.startswith("gramx extend bridge examples/bridge-clap-clip.yaml") for s in steps)
    monkeypatch.chdir(checkout)
    for command in steps:
        run_here(checkout, command)
    for model in ("clip", "clip-depth", "clip-clap", "digits-a-lora"):
        assert (checkout / "runs" / model / "model" / "config.json").is_file()
    assert (checkout / "shared" / "clip-clap" / "pretrained").is_dir()
