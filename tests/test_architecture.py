"""The shape of the code base (STYLE.md "layers that only point down", issue 15 "Must show"),
and the hygiene of the test suite itself.

- No import cycle between the packages of ``src/embedstack``: every module's imports are read
  with :mod:`ast` (function-level and ``TYPE_CHECKING`` imports included) and folded into a
  graph whose nodes are the subpackages (``embedstack.index``, ``embedstack.pipeline``, …) and
  the top-level modules (``embedstack.fusion``, ``embedstack.errors``, …).
- No module in ``src/`` over 450 lines.
- The test session keeps its caches in its own temporary folder and removes it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "embedstack"
MAX_LINES = 450

Edges = dict[str, dict[str, list[str]]]  # node → imported node → ["file:line", ...]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _node(module: str) -> str:
    """``embedstack.index.core`` → ``embedstack.index``; ``embedstack.fusion`` stays."""
    return ".".join(module.split(".")[:2])


def _imported_modules(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """Every embedstack module ``path`` imports, anywhere in the file, with its line."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "embedstack"]


def package_graph() -> Edges:
    modules = _modules()
    known = set(modules)
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for module, path in modules.items():
        for target, line in _imported_modules(path, module, known):
            src, dst = _node(module), _node(target)
            if src != dst:
                edges[src][dst].append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def find_cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components of two or more nodes (Tarjan's algorithm): each is a
    set of packages that import one another in a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    nodes = sorted(set(edges) | {w for targets in edges.values() for w in targets})
    for v in nodes:
        if v not in index:
            strongconnect(v)
    return sorted(components)


def describe(component: list[str], edges: Edges) -> str:
    """The packages of a cycle and every import between them, with where it is written."""
    hops = [
        f"  {a} -> {b}: {', '.join(dict.fromkeys(edges[a][b]))}"
        for a in component
        for b in component
        if b in edges.get(a, {})
    ]
    return "cycle between " + ", ".join(component) + "\n" + "\n".join(hops)


def long_modules(limit: int = MAX_LINES) -> dict[str, int]:
    lengths = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted(SRC.rglob("*.py"))
    }
    return {path: n for path, n in lengths.items() if n > limit}


# --- the checks work: each detects what it should on a made-up example --------------------


def test_cycle_finder_reports_a_cycle_and_only_a_cycle() -> None:
    def graph(pairs: list[tuple[str, str]]) -> Edges:
        edges: Edges = defaultdict(lambda: defaultdict(list))
        for a, b in pairs:
            edges[a][b].append("x.py:1")
        return edges

    assert find_cycles(graph([("a", "b"), ("b", "c"), ("a", "c")])) == []
    assert find_cycles(graph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])) == [["a", "b", "c"]]
    two = graph([("i", "p"), ("p", "i"), ("x", "y"), ("y", "x"), ("p", "x")])
    assert find_cycles(two) == [["i", "p"], ["x", "y"]]
    assert describe(["i", "p"], two) == "cycle between i, p\n  i -> p: x.py:1\n  p -> i: x.py:1"


def test_import_reader_sees_function_level_relative_and_submodule_imports(
    tmp_path: Path,
) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from embedstack import vectors\n"
        "if TYPE_CHECKING:\n"
        "    from embedstack.index import Index\n"
        "def f():\n"
        "    from ..pipeline.run import Pipeline\n"
        "    import embedstack.fusion\n"
    )
    known = {"embedstack.vectors", "embedstack.index", "embedstack.pipeline.run"}
    found = _imported_modules(source, "embedstack.index.core", known)
    assert found == [
        ("embedstack.vectors", 3),
        ("embedstack.index", 5),
        ("embedstack.pipeline.run", 7),
        ("embedstack.fusion", 8),
    ]


def test_the_graph_holds_the_real_packages() -> None:
    edges = package_graph()
    assert "embedstack.errors" in edges["embedstack.index"]
    assert "embedstack.encoders" in edges["embedstack.index"]
    assert "embedstack.index" in edges["embedstack.cli"]


# --- the code base ------------------------------------------------------------------------


def test_no_import_cycle_between_packages() -> None:
    edges = package_graph()
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between packages:\n" + "\n".join(
        describe(c, edges) for c in cycles
    )


def test_no_module_over_450_lines() -> None:
    assert long_modules() == {}, f"modules over {MAX_LINES} lines (split them)"


# --- the test suite -----------------------------------------------------------------------

INNER_TEST = """
import json, os
from pathlib import Path
from embedstack.settings import cache_dir

def test_writes_into_caches():
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "artifact").write_text("x")
    hf = Path(os.environ["HF_HOME"])
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "artifact").write_text("x")
    Path(os.environ["REPORT"]).write_text(json.dumps([str(cache), str(hf)]))


def test_onnxruntime_writes_its_device_id_into_the_session():
    import onnxruntime  # noqa: F401  (the import writes Microsoft/DeveloperTools/.onnxruntime)
"""


def test_session_uses_its_own_caches_and_removes_them(tmp_path: Path) -> None:
    """A pytest session with this conftest never touches the user's EMBEDSTACK_CACHE_DIR,
    HF_HOME or home folder (onnxruntime writes a device id under ``$XDG_CACHE_HOME``, else
    ``~/.cache/Microsoft``), and leaves nothing behind in its temporary cache."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (suite / "test_inner.py").write_text(INNER_TEST)
    (suite / "pytest.ini").write_text("[pytest]\n")
    user_cache, user_hf, report = tmp_path / "user-cache", tmp_path / "user-hf", tmp_path / "r"
    home = tmp_path / "home"
    for folder in (user_cache, user_hf, home):
        folder.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"},
        "HOME": str(home),
        "EMBEDSTACK_CACHE_DIR": str(user_cache),
        "HF_HOME": str(user_hf),
        "HF_HUB_CACHE": str(user_hf / "hub"),
        "REPORT": str(report),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    used = [Path(p) for p in json.loads(report.read_text())]
    assert list(user_cache.iterdir()) == [] and list(user_hf.iterdir()) == []
    assert list(home.rglob("*")) == []
    for path in used:
        assert not path.exists(), f"{path} left behind after the session"
        assert user_cache not in path.parents and user_hf not in path.parents


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_for_tests() -> set[str]:
    """Distributions ``pip install -e .[dev]`` installs directly: the core dependencies and
    the ``dev`` extra, following ``embedstack[...]`` references to other extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    requirements, todo, seen = list(project["dependencies"]), ["dev"], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in extras[extra]:
            match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement)
            assert match, requirement
            if _canonical(match.group(1)) == "embedstack":
                todo += [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            else:
                requirements.append(requirement)
    return {_canonical(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


def _third_party_imports() -> dict[str, str]:
    """Top-level module → a file importing it, over tests/ and benchmarks/ (``import``,
    ``from``, and ``pytest.importorskip("...")``)."""
    local = {p.stem for folder in ("tests", "benchmarks") for p in (ROOT / folder).glob("*.py")}
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("importorskip")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local | {"embedstack"}:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_test_dependency_is_declared() -> None:
    """What tests/ and benchmarks/ import is installed by ``pip install -e .[dev]``."""
    declared = _declared_for_tests()
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in _third_party_imports().items():
        distributions = {_canonical(d) for d in providers.get(module, [])}
        if not distributions & declared:
            missing[module] = f"{where} (distribution: {sorted(distributions) or 'not installed'})"
    assert missing == {}, "declare these in [project.optional-dependencies] dev"
