"""Read documents for an index from files: text folders, JSONL, BEIR corpus folders.

Formats: ``.txt``, ``.md``/``.markdown``, ``.rst`` (plain text; the title is the first
heading), ``.html``/``.htm`` (tags stripped with the standard library's
:class:`html.parser.HTMLParser`; the title is ``<title>`` or the first ``<h1>``), ``.jsonl``
(one ``{"id"|"_id", "text", "title"?, "metadata"?}`` object per line) and BEIR folders (a
folder holding ``corpus.jsonl`` and ``queries.jsonl`` or ``qrels/``: only the corpus is read).

A folder walk skips hidden files and folders (``.git``, ``.venv``) and ``node_modules``,
files that ``--include``/``--exclude`` globs leave out, files of other types, and binary
files (a NUL byte). Nothing is skipped silently: :class:`SourceScan` counts every skip by
reason, and :func:`describe_skipped` says it in one line.

Document ids of files are ``<prefix>/<path relative to the folder given>``, the prefix
being the folder's own name (``index add IDX docs/`` gives ``docs/guide/intro.md``), or the
parent folder's name for a file given directly, so the same file gets the same id either
way, and ``a/README.md`` and ``b/README.md`` do not collide. Two folders with the same name
still could, so every file document records its absolute ``source`` in its metadata and
:func:`find_conflicts` refuses an id that the index already holds for another source.

Reading is two-pass so a batch can be refused atomically: :func:`scan_documents` validates
every file and line first and reports every problem with its file and line number; only then
does :func:`iter_documents` stream the documents.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Problem",
    "SourceOptions",
    "SourceScan",
    "describe_skipped",
    "find_conflicts",
    "find_earlier_ids",
    "html_to_text",
    "input_files",
    "json_doc",
    "iter_documents",
    "read_file",
    "scan_documents",
]

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm")
SUPPORTED_SUFFIXES: tuple[str, ...] = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".jsonl")
SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__"})
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")

Found = tuple[Path, int | None, dict[str, Any] | None, str | None]


@dataclass(frozen=True)
class SourceOptions:
    """How folders are walked and how file documents are named.

    Attributes:
        include: globs a file must match (its path relative to the folder given, or its
            name) to be read; empty reads every supported file.
        exclude: globs that leave a file out (matched the same way).
        id_prefix: the first part of file ids; None uses the folder's own name (the parent
            folder's name for a file given directly), ``""`` none at all.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    id_prefix: str | None = None


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
    """What a scan found: documents, problems, what was skipped and why, file ids."""

    n_documents: int = 0
    n_chars: int = 0
    problems: list[Problem] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    file_sources: dict[str, str] = field(default_factory=dict)
    earlier_ids: dict[str, str] = field(default_factory=dict)


def _matches(rel: str, globs: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch(rel, g) or fnmatch(name, g) for g in globs)


def _is_beir(folder: Path) -> bool:
    return (folder / "corpus.jsonl").is_file() and (
        (folder / "queries.jsonl").is_file() or (folder / "qrels").is_dir()
    )


def _folder_files(folder: Path, options: SourceOptions, skipped: Counter[str]) -> list[Path]:
    if _is_beir(folder):
        return [folder / "corpus.jsonl"]
    found: list[Path] = []
    for top, dirs, names in os.walk(folder):
        for name in sorted(dirs):
            if name.startswith(".") or name in SKIPPED_FOLDERS:
                skipped[f"folder {name}/ (hidden or vendored)"] += 1
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in SKIPPED_FOLDERS))
        for name in sorted(names):
            file = Path(top) / name
            rel = file.relative_to(folder).as_posix()
            suffix = file.suffix.lower()
            if name.startswith("."):
                skipped["hidden file"] += 1
            elif options.include and not _matches(rel, options.include):
                skipped["not matched by --include"] += 1
            elif options.exclude and _matches(rel, options.exclude):
                skipped["matched by --exclude"] += 1
            elif suffix not in SUPPORTED_SUFFIXES:
                skipped[f"unsupported type {suffix or '(no extension)'}"] += 1
            else:
                found.append(file)
    return found


def _inputs(
    paths: Sequence[Path], options: SourceOptions, skipped: Counter[str]
) -> Iterator[tuple[Path, Path, str]]:
    """``(file, root, prefix)`` for every file to read: ids are ``prefix/relative-to-root``."""
    for path in paths:
        if path.is_dir():
            root = path
            files = _folder_files(path, options, skipped)
        elif path.is_file():
            root, files = path.parent, [path]
        else:
            raise InvalidInput(f"{path}: no such file or folder")
        prefix = root.resolve().name if options.id_prefix is None else options.id_prefix
        for file in files:
            yield file, root, prefix


def json_doc(record: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON record as a document, or ``(None, problem)``: the rules of ``.jsonl`` lines."""
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


class _HtmlText(HTMLParser):
    _HIDDEN = frozenset({"script", "style", "noscript", "template", "head"})
    _BLOCK = frozenset(
        "p div br li tr section article pre table h1 h2 h3 h4 h5 h6 ul ol blockquote hr".split()
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.h1 = ""
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")
        if tag not in ("br", "hr", "img", "meta", "link", "input"):
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if "title" in self._stack:
            self.title += data
        elif not self._HIDDEN.intersection(self._stack):
            if "h1" in self._stack:
                self.h1 += data
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: scripts and styles dropped, tags stripped.

    Example:
        >>> html_to_text("<title>T</title><p>a &amp; b</p><script>x()</script>")
        ('T', 'a & b')
    """
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    title = " ".join(parser.title.split()) or " ".join(parser.h1.split())
    return title, text


def _title(text: str, suffix: str) -> str | None:
    lines = text.splitlines()[:40]
    for i, line in enumerate(lines):
        if suffix == ".rst":
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if (
                line.strip()
                and not _RST_UNDERLINE.match(line)
                and _RST_UNDERLINE.match(nxt)
                and len(nxt.rstrip()) >= len(line.rstrip())
            ):
                return line.strip()
        elif suffix in (".md", ".markdown"):
            match = _HEADING.match(line)
            if match:
                return match.group(1)
    return None


def _file_doc(path: Path, root: Path, prefix: str) -> tuple[dict[str, Any] | None, str | None]:
    """A text or HTML file as one document; ``(None, "skip: reason")`` for binary files."""
    data = path.read_bytes()
    if b"\x00" in data:
        return None, "skip: binary file (NUL byte)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    suffix = path.suffix.lower()
    title: str | None
    if suffix in HTML_SUFFIXES:
        title, text = html_to_text(text)
    else:
        title = _title(text, suffix)
    if not text.strip():
        return None, "empty document"
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    doc_id = f"{prefix}/{rel}" if prefix else rel
    meta = {"path": str(path), "source": path.resolve().as_posix(), "suffix": suffix}
    return {"id": doc_id, "title": title or path.stem, "text": text, "metadata": meta}, None


def input_files(
    paths: Sequence[Path], options: SourceOptions | None = None
) -> list[tuple[Path, Path, str]]:
    """``(file, root, id prefix)`` of every file the paths name, in reading order (what
    :func:`read_file` reads one by one, on any machine).

    Raises:
        InvalidInput: a path that does not exist.
    """
    return list(_inputs(paths, options or SourceOptions(), Counter()))


def read_file(
    file: Path, root: Path, prefix: str, skipped: Counter[str] | None = None
) -> Iterator[Found]:
    """``(file, line, document, problem)`` for each document of one file (line None for a
    whole-file document), as :func:`scan_documents` and :func:`iter_documents` read it;
    binary files are counted in ``skipped`` and yield nothing."""
    skipped = Counter() if skipped is None else skipped
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield file, number, None, "not UTF-8 text"
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield file, number, None, f"malformed JSON ({exc.msg})"
                    continue
                doc, problem = json_doc(record)
                yield file, number, doc, problem
    elif suffix in TEXT_SUFFIXES + HTML_SUFFIXES:
        doc, problem = _file_doc(file, root, prefix)
        if problem is not None and problem.startswith("skip: "):
            skipped[problem[len("skip: ") :]] += 1
            return
        yield file, None, doc, problem
    else:
        kinds = ", ".join(SUPPORTED_SUFFIXES)
        yield file, None, None, f"unsupported file type (use {kinds} or a BEIR folder)"


def _walk(paths: Sequence[Path], options: SourceOptions, skipped: Counter[str]) -> Iterator[Found]:
    for file, root, prefix in _inputs(paths, options, skipped):
        yield from read_file(file, root, prefix, skipped)


def scan_documents(paths: Sequence[Path], options: SourceOptions | None = None) -> SourceScan:
    """Validate every input without keeping documents in memory.

    Raises:
        InvalidInput: a path that does not exist.
    """
    options = options or SourceOptions()
    scan = SourceScan()
    seen: dict[str, tuple[Path, int | None]] = {}
    for file, line, doc, problem in _walk(paths, options, scan.skipped):
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
        if "source" in doc["metadata"] and line is None:
            scan.file_sources[doc["id"]] = doc["metadata"]["source"]
            if options.id_prefix is None and "/" in doc["id"]:  # the id before the prefix
                scan.earlier_ids[doc["id"]] = doc["id"].split("/", 1)[1]
        scan.n_documents += 1
        scan.n_chars += len(doc["text"])
    return scan


def describe_skipped(scan: SourceScan) -> str:
    """One line saying what a scan skipped and why, or ``""`` when nothing was.

    Example:
        >>> s = SourceScan(skipped=Counter({"unsupported type .png": 3, "hidden file": 1}))
        >>> describe_skipped(s)
        'skipped 4: 3 unsupported type .png, 1 hidden file'
    """
    if not scan.skipped:
        return ""
    parts = [f"{n} {reason}" for reason, n in scan.skipped.most_common()]
    return f"skipped {sum(scan.skipped.values())}: " + ", ".join(parts)


def find_conflicts(index: Any, file_sources: Mapping[str, str]) -> dict[str, Problem]:
    """File documents whose id the index already holds for another source.

    Args:
        index: an open index (anything with ``get(doc_id)``).
        file_sources: ``{doc_id: absolute source path}``, as :func:`scan_documents` records.

    Returns:
        ``{doc_id: Problem}`` for every id that would overwrite a document read from another
        file (or one not read from a file at all).
    """
    problems: dict[str, Problem] = {}
    for doc_id, source in file_sources.items():
        existing = index.get(doc_id)
        if existing is None:
            continue
        held = (existing.get("metadata") or {}).get("source")
        if held != source:
            what = f"a document from {held}" if held else "a document not read from a file"
            problems[doc_id] = Problem(Path(source), None, f"id {doc_id!r} already holds {what}")
    return problems


def find_earlier_ids(index: Any, scan: SourceScan) -> list[str]:
    """Ids under which an index built by an earlier version holds these same files.

    Before ids carried the folder's name, ``index add IDX docs/`` stored ``README.md``; added
    again, the file is now ``docs/README.md`` and the old document would linger as a
    duplicate. Returns the old ids (metadata ``path`` naming the same file, no ``source``).
    """
    found = []
    for doc_id, earlier in scan.earlier_ids.items():
        existing = index.get(earlier)
        meta = (existing or {}).get("metadata") or {}
        if existing is None or "source" in meta or not isinstance(meta.get("path"), str):
            continue
        if Path(meta["path"]).resolve().as_posix() == scan.file_sources[doc_id]:
            found.append(earlier)
    return found


def iter_documents(
    paths: Sequence[Path],
    options: SourceOptions | None = None,
    *,
    skip_invalid: bool = False,
    skip_ids: frozenset[str] = frozenset(),
) -> Iterator[dict[str, Any]]:
    """Stream the valid documents. Call :func:`scan_documents` first to refuse bad input.

    Args:
        skip_ids: ids to leave out (for example those :func:`find_conflicts` reported).

    Raises:
        InvalidInput: on the first invalid input, unless ``skip_invalid``.
    """
    options = options or SourceOptions()
    seen: set[str] = set()
    for file, line, doc, problem in _walk(paths, options, Counter()):
        if doc is None or problem is not None or doc["id"] in seen:
            if skip_invalid:
                continue
            raise InvalidInput(str(Problem(file, line, problem or "duplicate id")))
        seen.add(doc["id"])
        if doc["id"] in skip_ids:
            continue
        yield doc
