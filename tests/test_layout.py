"""The core's layout rules: one job per module, no import loops, no private names across modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "gramx").glob("*.py"))
MODULES = {p.stem for p in CORE}
MODALITY_LIBRARIES = {"torchaudio", "av", "open3d", "transformers", "PIL", "soundfile", "srt", "webvtt", "cv2",
                      "librosa"}
MAX_LINES = 420


def imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import | ast.ImportFrom)]


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_each_module_says_its_job_and_stays_small(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path.name} has no module docstring"
    assert docstring.splitlines()[0].strip(), f"{path.name}: the first docstring line must say the module's job"
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name} is over {MAX_LINES} lines"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_imports_take_modules_not_package_attributes_nor_private_names(path):
    """``from gramx import __version__`` inside the package is a hidden loop through ``gramx/__init__``."""
    for node in imports(path):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("gramx"):
            continue
        for alias in node.names:
            if node.module == "gramx" and path.name != "__init__.py":
                assert alias.name in MODULES, f"{path.name}: `from gramx import {alias.name}` (use its module)"
            assert not alias.name.startswith("_") or alias.name == "__version__" and node.module == "gramx.version", (
                f"{path.name}: imports the private name {alias.name} from {node.module}")


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_never_imports_a_modality_library(path):
    for node in imports(path):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            assert name.split(".")[0] not in MODALITY_LIBRARIES, f"{path.name} imports {name}"


def test_the_readme_architecture_lists_every_core_module():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\s*([a-z_]+)\.py\b", section, flags=re.MULTILINE)
    assert sorted(listed) == sorted(MODULES - {"__init__", "__main__"}), "README's Architecture section is stale"
