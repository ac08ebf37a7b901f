from __future__ import annotations

import subprocess
import sys
import types

import embedstack


def test_all_matches_exports() -> None:
    public = {
        name
        for name in dir(embedstack)
        if not name.startswith("_") and not isinstance(getattr(embedstack, name), types.ModuleType)
    }
    exported_modules = {"vectors"}
    assert set(embedstack.__all__) - exported_modules - {"__version__"} == public - {
        "annotations",
        "logging",
    }


def test_import_is_light() -> None:
    code = (
        "import sys, embedstack; heavy = {'torch', 'onnxruntime', 'transformers', "
        "'sentence_transformers', 'fastapi', 'matplotlib', 'faiss', 'pytrec_eval', 'tokenizers'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree() -> None:
    assert issubclass(embedstack.DimensionMismatch, embedstack.InvalidInput)
    assert issubclass(embedstack.MissingDependency, ImportError)
    for name in ("ModelNotFound", "IndexCorrupt", "IndexLocked", "ModelMismatch", "InvalidInput"):
        assert issubclass(getattr(embedstack, name), embedstack.EmbedstackError)
