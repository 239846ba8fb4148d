"""The core's layout rules: sub-packages in data-flow order, one job per module, no import circles,
a test file per module.

README's Architecture section lists the sub-packages of ``gramx/`` and the modules of each
in the order data flows through them; the import graph must agree: a module imports only
modules listed before it (so there is no circle), module-level and function-level imports
alike (imports under ``if TYPE_CHECKING:`` are annotations, not dependencies).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "gramx").rglob("*.py"))
MODALITY_LIBRARIES = {"torchaudio", "av", "open3d", "transformers", "PIL", "soundfile", "srt", "webvtt", "cv2",
                      "librosa"}
MAX_LINES = 410
#: Core modules whose own test file is not ``tests/<folder>/test_<module>.py``, and why.
MIRROR_EXCEPTIONS = {
    "gramx/__main__.py": None,  # `python -m gramx` calls gramx.cli.main; run by tests/cli/test_plugin_commands.py
    # test_config.py is losses/config.py's: pytest cannot import two test modules of one basename
    "gramx/train/config.py": "tests/train/test_run_config.py",
    # test_app.py is cli/app.py's; the service's app is tested through its API
    "gramx/serve/app.py": "tests/serve/test_api.py",
}


def dotted(path: Path) -> str:
    """``gramx/data/manifest.py`` -> ``gramx.data.manifest``; a package's face is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {dotted(p): p for p in CORE}
PACKAGES = {dotted(p) for p in CORE if p.name == "__init__.py"}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``path`` outside ``if TYPE_CHECKING:`` blocks, at any depth."""
    found, todo = [], [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if _type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def gramx_imports(path: Path) -> set[str]:
    """The gramx modules ``path`` imports (a name taken from a package's face counts as the face)."""
    out = set()
    for node in imports(path):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "gramx"}
        elif (node.module or "").split(".")[0] == "gramx":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out & set(MODULES)


def architecture() -> list[str]:
    """The modules README's Architecture section lists, in its order, as dotted names."""
    section = (ROOT / "README.md").read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    listed, folders = [], []
    for line in block.splitlines():
        m = re.match(r"^( *)([a-z_]+/|[a-z_]+\.py)(\s|$)", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        folders = folders[:depth]
        name = m.group(2)
        if name.endswith("/"):
            folders.append(name[:-1])
        else:
            listed.append(".".join([*folders, name[:-3]]))
    return listed


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT / "gramx")))
def test_each_module_says_its_job_and_stays_small(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path.name} has no module docstring"
    assert docstring.splitlines()[0].strip(), f"{path.name}: the first docstring line must say the module's job"
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name} is over {MAX_LINES} lines"


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT / "gramx")))
def test_imports_take_modules_not_package_faces_nor_private_names(path):
    """Inside the core, a name comes from the module that defines it: a package's face is for users."""
    face = path.name == "__init__.py"
    for node in imports(path):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("gramx"):
            continue
        for alias in node.names:
            if node.module in PACKAGES and not face:
                assert f"{node.module}.{alias.name}" in MODULES, (
                    f"{path.name}: `from {node.module} import {alias.name}` (import it from its module)")
            assert not alias.name.startswith("_") or alias.name == "__version__" and node.module == "gramx.version", (
                f"{path.name}: imports the private name {alias.name} from {node.module}")


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT / "gramx")))
def test_the_core_never_imports_a_modality_library(path):
    for node in imports(path):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            assert name.split(".")[0] not in MODALITY_LIBRARIES, f"{path.name} imports {name}"


def test_the_readme_architecture_lists_every_core_module_once():
    listed = architecture()
    modules = {m.removeprefix("gramx.") for m in MODULES if m not in PACKAGES and not m.endswith("__main__")}
    assert len(listed) == len(set(listed)), "README's Architecture section lists a module twice"
    assert set(listed) == modules, (f"README's Architecture section is stale: missing {sorted(modules - set(listed))}, "
                                    f"gone {sorted(set(listed) - modules)}")


def test_the_files_readme_names_exist():
    """README points readers at files (`gramx/plugins/hookspecs.py`, `tests/data/test_shards.py`): none may be stale."""
    named = set(re.findall(r"`((?:gramx|tests|benchmarks|scripts)/[\w/.-]+\.(?:py|sh))`", (ROOT / "README.md").read_text()))
    gone = sorted(p for p in named if not (ROOT / p).is_file())
    assert named and not gone, f"README names files that are gone: {gone}"


def test_every_module_imports_only_modules_listed_before_it():
    """The data-flow order of README is the import order: no later stage is imported, so no circle exists."""
    order = {f"gramx.{name}": i for i, name in enumerate(architecture())}
    late = []
    for module, path in MODULES.items():
        if module not in order:
            continue
        for imported in gramx_imports(path) - PACKAGES - {module}:
            if order.get(imported, -1) > order[module]:
                late.append(f"{module} imports {imported}, which README lists after it")
    assert not late, "\n".join(late)


def test_no_import_circles_through_package_faces():
    """A package's face imports its own modules; none of those may need the face back (a hidden circle)."""
    graph = {module: gramx_imports(path) for module, path in MODULES.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = [f"{face} -> {mod} -> ... -> {face}" for face in PACKAGES - {"gramx"}
               for mod in graph[face] if mod.startswith(face + ".") and reaches(mod, face)]
    assert not circles, "\n".join(circles)


def mirror_test(path: Path) -> Path | None:
    """The test file of a core module's own contract: ``gramx/a/b.py`` -> ``tests/a/test_b.py``."""
    module = path.relative_to(ROOT).as_posix()
    if module in MIRROR_EXCEPTIONS:
        return MIRROR_EXCEPTIONS[module] and ROOT / MIRROR_EXCEPTIONS[module]
    inner = path.relative_to(ROOT / "gramx")
    return ROOT / "tests" / inner.parent / f"test_{inner.name}"


def test_every_core_module_has_its_own_test_file():
    """tests/ mirrors gramx/: a module's contract is tested in its own file, beside end-to-end tests."""
    tests = {p: mirror_test(p) for p in CORE if p.name != "__init__.py" and mirror_test(p) is not None}
    missing = [f"{p.relative_to(ROOT)}: {test.relative_to(ROOT)}" for p, test in tests.items() if not test.is_file()]
    assert not missing, "core modules without their test file:\n" + "\n".join(missing)
    basenames = Counter(test.name for test in tests.values())
    clashes = sorted(name for name, count in basenames.items() if count > 1)
    assert not clashes, (f"two test files named {clashes} (pytest imports one module of a name): give one module's "
                         "test another name in MIRROR_EXCEPTIONS")
    stale = [name for name in MIRROR_EXCEPTIONS if not (ROOT / name).is_file()]
    assert not stale, f"MIRROR_EXCEPTIONS names modules that are gone: {stale}"


def test_multiprocess_and_subprocess_tests_are_marked_slow():
    """`-m "not slow"` gives a quick run; `make test` runs everything (subprocesses, process groups, DataLoader
    workers: the test's own code names them; a worker count given as a parameter is marked with ``pytest.param``)."""
    suites = [ROOT / "tests", *ROOT.glob("plugins/*/tests"), *ROOT.glob("examples/*/tests")]
    spawning = re.compile(r"mp\.spawn|start_processes|subprocess\.(run|Popen|check)"  # processes, torchrun
                          r"|(?<![.\w])gramx\("  # fixture_digits' gramx subprocess (torchrun with launcher=)
                          r"|(?<![.\w])(num_)?workers=[1-9]|\"workers\": [1-9]")  # DataLoader worker processes
    unmarked = []
    for path in (p for suite in suites for p in suite.rglob("test_*.py") if p != Path(__file__).resolve()):
        source = path.read_text()
        tree = ast.parse(source)
        module_slow = any(isinstance(node, ast.Assign) and "pytestmark" in ast.unparse(node) and "slow" in
                          ast.unparse(node) for node in tree.body)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            spawns = spawning.search(ast.get_source_segment(source, node))
            if spawns and not module_slow and not any("slow" in ast.unparse(d) for d in node.decorator_list):
                unmarked.append(f"{path.relative_to(ROOT)}::{node.name}")
    assert not unmarked, "multi-process or subprocess tests without @pytest.mark.slow:\n" + "\n".join(unmarked)
