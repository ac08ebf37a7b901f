"""schemathesis against the served ``/openapi.json`` of a real uvicorn with ``--checks all``:
no 5xx, responses that match the documented schemas, statuses, headers and content types,
schema-invalid requests refused, schema-valid requests accepted, and the stateful checks.

The served document states every constraint the server enforces (non-blank pipeline
names, token ids within the vocabulary and not all blank, no token-id forms when no
served model has a tokenizer, distinct retrievers, ``sparse`` only where an index has
it), so schemathesis' own expectation holds: a schema-valid request is never a 400. Two
operations are the documented exception (:data:`REFUSING`, run separately), because what they
refuse is a language or a relation JSON Schema cannot state: search (the filter language
and the pipeline grammar: ``{"year": {"$gte": "x"}}``, ``"pipeline": "bm25(top=0)"``) and
upsert (an id repeated within one batch). The error body of every 400 is still checked
against the schema. :func:`test_constraints_once_refused_with_400_are_in_the_schema` pins
the three requests the issue found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")

from embedstack.index import Index  # noqa: E402
from embedstack.server import ServerSettings, create_app  # noqa: E402
from test_server_helpers import RERANKER, ServerThread, tier0_models  # noqa: E402

ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default
# What JSON Schema cannot state: the filter language and pipeline grammar, a repeated id.
REFUSING = ("POST /v1/indexes/{name}/search", "POST /v1/indexes/{name}/documents")


def _config(statuses: list[str]) -> str:
    return f"[checks.positive_data_acceptance]\nexpected-statuses = {json.dumps(statuses)}\n"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with tier0_models() as model:
        path = tmp_path_factory.mktemp("fuzz") / "papers"
        with Index.create(path, encoder=model) as index:
            index.add([{"id": "a", "text": "cats purr", "metadata": {"year": 2020}}])
        settings = ServerSettings(
            models=(model,),
            rerankers=(RERANKER,),
            indexes={"papers": path},
            api_keys=(),
            preload=True,
            max_inputs_per_request=64,
            max_chars_per_input=2_000,
            max_k=50,
            max_top_n=50,
            max_body_bytes=1 << 20,
        )
        with ServerThread(create_app(settings)) as server:
            yield server


def _run(server: ServerThread, workdir: Path, config: str, *options: str) -> dict[str, Any]:
    workdir.mkdir(exist_ok=True)
    path = workdir / "schemathesis.toml"
    path.write_text(config, encoding="utf-8")
    report = workdir / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(path), "--no-color",
        "run", f"{server.url}/openapi.json", "--checks", "all", "--report", "json",
        "--report-json-path", str(report), *options,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert report.is_file(), done.stdout[-4000:] + done.stderr[-4000:]
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    assert done.returncode == 0, done.stdout[-8000:]
    assert result["failures"] == [] and result["errors"] == [], done.stdout[-8000:]
    assert result["test_cases"]["generated"] > 0 and result["complete"]
    return result


def _schemathesis(server: ServerThread, workdir: Path, *options: str) -> list[dict[str, Any]]:
    """Every operation but the two in :data:`REFUSING` with schemathesis' own expectation
    (a schema-valid request is never a 400), then those two with 400 allowed."""
    others = [arg for name in REFUSING for arg in ("--exclude-name", name)]
    only = [arg for name in REFUSING for arg in ("--include-name", name)]
    return [
        _run(server, workdir / "strict", _config(ACCEPTED), *others, *options),
        _run(server, workdir / "refusing", _config([*ACCEPTED, "400"]), *only, *options),
    ]


def test_schemathesis_quick(fuzzed: ServerThread, tmp_path: Path) -> None:
    """Every check over the coverage phase and a short fuzzing phase (default tier)."""
    results = _schemathesis(
        fuzzed, tmp_path, "--phases", "coverage,fuzzing", "--max-examples", "2", "--seed", "1"
    )
    for result in results:
        assert {p: v["status"] for p, v in result["phases"].items()}["coverage"] == "success"


@pytest.mark.slow
def test_schemathesis_default_run(fuzzed: ServerThread, tmp_path: Path) -> None:
    """schemathesis' default run (examples, coverage, fuzzing, stateful), fixed seed."""
    results = _schemathesis(fuzzed, tmp_path, "--seed", "20250101")
    assert sum(r["test_cases"]["generated"] for r in results) > 500
