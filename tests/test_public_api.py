"""The public surface of ``embedstack``: ``__all__`` against the real exports, lazy loading
(PEP 562) that keeps ``import embedstack`` light, ``__version__`` from package metadata, and
the names mypy sees."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import embedstack
import embedstack.errors

# What the README and issue 15 promise users, and the public module each comes from.
PROMISED = {
    "Index": "embedstack.index",
    "Hit": "embedstack.index",
    "SearchOptions": "embedstack.index.protocols",
    "Pipeline": "embedstack.pipeline",
    "Encoder": "embedstack.encoders",
    "SparseEncoder": "embedstack.encoders",
    "LateInteractionEncoder": "embedstack.encoders",
    "HashEncoder": "embedstack.encoders",
    "TextEncoder": "embedstack.encoders",
    "ModelSpec": "embedstack.encoders",
    "DEFAULT_MODEL": "embedstack.encoders",
    "get_model": "embedstack.encoders",
    "list_models": "embedstack.encoders",
    "load_encoder": "embedstack.encoders",
    "register_model": "embedstack.encoders",
    "unregister_model": "embedstack.encoders",
    "CrossEncoder": "embedstack.rerank",
    "load_reranker": "embedstack.rerank",
}
MODULES = {"fusion", "vectors"}
# Reachable as ``embedstack.eval`` but kept out of ``__all__``: a star import would shadow
# the builtin ``eval``.
ATTRIBUTE_MODULES = {"eval"}

# Never loaded by `import embedstack` (nor by resolving its names: see below).
HEAVY = {
    "torch",
    "transformers",
    "sentence_transformers",
    "faiss",
    "fastapi",
    "starlette",
    "uvicorn",
    "matplotlib",
    "onnxruntime",
    "onnx",
    "tokenizers",
    "huggingface_hub",
    "pytrec_eval",
    "scipy",
}


def _modules_after(code: str) -> set[str]:
    """Modules present in a fresh interpreter after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_every_promised_name_is_exported_from_its_home() -> None:
    for name, home in PROMISED.items():
        assert name in embedstack.__all__, name
        assert getattr(embedstack, name) is getattr(importlib.import_module(home), name), name
    for name in MODULES:
        assert name in embedstack.__all__, name
        assert getattr(embedstack, name) is importlib.import_module(f"embedstack.{name}")
    for name in ATTRIBUTE_MODULES:
        assert getattr(embedstack, name) is importlib.import_module(f"embedstack.{name}")


def test_star_import_shadows_no_builtin() -> None:
    """``from embedstack import *`` binds no name of :mod:`builtins` (``eval`` was one),
    while ``embedstack.eval`` stays the subpackage and ``dir`` lists it."""
    import builtins

    assert set(embedstack.__all__) & set(dir(builtins)) == set()
    script = (
        "import builtins, json\n"
        "from embedstack import *\n"
        "print(json.dumps([eval is builtins.eval, 'vectors' in dir(), 'Index' in dir()]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [True, True, True], out.stderr
    assert ATTRIBUTE_MODULES <= set(dir(embedstack))


def test_every_error_is_exported() -> None:
    assert set(embedstack.errors.__all__) <= set(embedstack.__all__)
    for name in embedstack.errors.__all__:
        assert getattr(embedstack, name) is getattr(embedstack.errors, name)


def test_all_matches_exports() -> None:
    """Every name of ``__all__`` resolves, and every public attribute is in ``__all__``
    (besides subpackages that Python binds on the package when they are imported)."""
    assert len(embedstack.__all__) == len(set(embedstack.__all__))
    for name in embedstack.__all__:
        getattr(embedstack, name)
    unlisted = {
        name
        for name, value in vars(embedstack).items()
        if not name.startswith("_") and name not in embedstack.__all__
    }
    for name in unlisted:
        value = getattr(embedstack, name)
        assert isinstance(value, types.ModuleType), f"{name} is public but not in __all__"
        assert value.__name__ == f"embedstack.{name}", name
    assert set(embedstack.__all__) <= set(dir(embedstack))


def test_dir_lists_lazy_names_before_they_load() -> None:
    script = "import json, embedstack; print(json.dumps(dir(embedstack)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert set(embedstack.__all__) <= set(json.loads(out.stdout))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Indx'"):
        embedstack.Indx  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(embedstack, "Indx")


def test_import_is_light() -> None:
    """``import embedstack`` adds only the standard library and ``embedstack.errors``."""
    baseline = _modules_after("")
    added = _modules_after("import embedstack") - baseline
    ours = {m for m in added if m.split(".")[0] == "embedstack"}
    assert ours == {"embedstack", "embedstack.errors"}
    third_party = {m for m in added - ours if m.split(".")[0] not in sys.stdlib_module_names}
    assert third_party == set()


def test_resolving_every_name_loads_no_heavy_dependency() -> None:
    """Classes are importable without torch, faiss, FastAPI, ONNX Runtime or matplotlib: those
    load when a model is built or a feature is used. ``eval`` needs pytrec_eval (its metrics)."""
    loaded = _modules_after(
        "import embedstack\nfor n in embedstack.__all__:\n    getattr(embedstack, n)"
    )
    roots = {m.split(".")[0] for m in loaded}
    assert (HEAVY - {"pytrec_eval"}) & roots == set()
    assert "numpy" in roots  # sanity: the names did resolve in the child


def test_version_comes_from_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedstack.__version__ == importlib.metadata.version("embedstack")

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delitem(vars(embedstack), "__version__", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert embedstack.__version__ == "0+unknown"


def test_mypy_sees_every_lazy_name() -> None:
    """Each lazily exported name is also imported under ``if TYPE_CHECKING:``, so mypy and
    IDEs type ``embedstack.Index`` as the class rather than as ``__getattr__``'s ``object``."""
    source = Path(embedstack.__file__).read_text(encoding="utf-8")
    typed: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    typed |= {alias.asname or alias.name for alias in stmt.names}
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    typed.add(stmt.target.id)
    eager = set(embedstack.errors.__all__)
    assert set(embedstack.__all__) - eager <= typed, sorted(set(embedstack.__all__) - eager - typed)


@pytest.mark.slow
def test_mypy_types_the_lazy_names(tmp_path: Path) -> None:
    snippet = tmp_path / "use.py"
    snippet.write_text(
        "import embedstack\n"
        "reveal_type(embedstack.Index)\n"
        "reveal_type(embedstack.load_reranker)\n"
        "reveal_type(embedstack.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    index, load_reranker, version = out.splitlines()[:3]
    assert re.search(r"-> embedstack\.index\.[\w.]*Index\"$", index), out
    assert re.search(r"-> embedstack\.rerank\.[\w.]*Reranker\"$", load_reranker), out
    assert re.search(r'Revealed type is "(builtins\.)?str"$', version), out


def test_error_tree() -> None:
    assert issubclass(embedstack.DimensionMismatch, embedstack.InvalidInput)
    assert issubclass(embedstack.IndexNotFound, embedstack.InvalidInput)
    assert issubclass(embedstack.MissingDependency, ImportError)
    for name in (
        "ModelNotFound",
        "IndexCorrupt",
        "IndexLocked",
        "IndexNotFound",
        "ModelMismatch",
        "InvalidInput",
    ):
        assert issubclass(getattr(embedstack, name), embedstack.EmbedstackError)
