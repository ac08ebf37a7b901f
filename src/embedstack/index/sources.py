"""Read documents for an index from files: folders of .txt/.md, JSONL, BEIR corpus.jsonl.

Reading is two-pass so a batch can be refused atomically: :func:`scan_documents` validates
every file and line first and reports every problem with its file and line number; only then
does :func:`iter_documents` stream the documents. With ``skip_invalid=True`` the valid
documents are kept and the invalid lines are reported instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput

__all__ = ["Problem", "SourceScan", "iter_documents", "scan_documents"]

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Problem:
    """One invalid input: where it is and what is wrong."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


@dataclass
class SourceScan:
    """What a scan found: document count, problems, and the files to read."""

    files: list[Path] = field(default_factory=list)
    n_documents: int = 0
    problems: list[Problem] = field(default_factory=list)


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInput(f"{path}: no such file or folder")
    return files


def _json_doc(record: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(record, dict):
        return None, "not a JSON object"
    doc_id = record.get("id", record.get("_id"))
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or not str(doc_id).strip():
        return None, "missing 'id' (or '_id')"
    text = record.get("text")
    title = record.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        return None, "'text' (and 'title', if given) must be strings"
    if not text.strip() and not title.strip():
        return None, "empty document: 'text' is blank"
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        return None, "'metadata' must be an object"
    return {"id": str(doc_id), "title": title, "text": text or title, "metadata": metadata}, None


def _text_doc(path: Path, root: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    if not text.strip():
        return None, "empty document"
    title = path.stem
    for line in text.splitlines()[:20]:
        match = _HEADING.match(line)
        if match:
            title = match.group(1)
            break
    doc_id = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    meta = {"path": str(path), "suffix": path.suffix.lower()}
    return {"id": doc_id, "title": title, "text": text, "metadata": meta}, None


def _walk(
    paths: Sequence[Path],
) -> Iterator[tuple[Path, int | None, dict[str, Any] | None, str | None]]:
    for path in paths:
        root = path if path.is_dir() else path.parent
        for file in _files([path]):
            if file.suffix.lower() == ".jsonl":
                with file.open(encoding="utf-8") as handle:
                    for number, line in enumerate(handle, start=1):
                        if not line.strip():
                            continue
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as exc:
                            yield file, number, None, f"malformed JSON ({exc.msg})"
                            continue
                        doc, problem = _json_doc(record)
                        yield file, number, doc, problem
            elif file.suffix.lower() in TEXT_SUFFIXES:
                doc, problem = _text_doc(file, root)
                yield file, None, doc, problem
            else:
                yield file, None, None, "unsupported file type (use .txt, .md or .jsonl)"


def scan_documents(paths: Sequence[Path]) -> SourceScan:
    """Validate every input without keeping documents in memory."""
    scan = SourceScan(files=_files(paths))
    seen: dict[str, tuple[Path, int | None]] = {}
    for file, line, doc, problem in _walk(paths):
        if problem is not None or doc is None:
            scan.problems.append(Problem(file, line, problem or "invalid"))
            continue
        if doc["id"] in seen:
            first = seen[doc["id"]]
            where = f"{first[0]}:{first[1]}" if first[1] else str(first[0])
            scan.problems.append(
                Problem(file, line, f"duplicate id {doc['id']!r} (first at {where})")
            )
            continue
        seen[doc["id"]] = (file, line)
        scan.n_documents += 1
    return scan


def iter_documents(
    paths: Sequence[Path], *, skip_invalid: bool = False
) -> Iterator[dict[str, Any]]:
    """Stream the valid documents. Call :func:`scan_documents` first to refuse bad input.

    Raises:
        InvalidInput: on the first invalid input, unless ``skip_invalid``.
    """
    seen: set[str] = set()
    for file, line, doc, problem in _walk(paths):
        if doc is None or problem is not None or doc["id"] in seen:
            if skip_invalid:
                continue
            raise InvalidInput(str(Problem(file, line, problem or "duplicate id")))
        seen.add(doc["id"])
        yield doc
