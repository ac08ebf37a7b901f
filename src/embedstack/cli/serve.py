"""``embedstack serve``: the HTTP server (extra ``server``) under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from embedstack.cli.app import app, err
from embedstack.encoders.backends import avoid_ort_spinning
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import EmbedstackError, InvalidInput, require

if TYPE_CHECKING:
    from embedstack.server import ServerSettings

__all__ = ["index_dirs", "serve", "uvicorn_config"]


def index_dirs(entries: list[str]) -> dict[str, Path | str]:
    """``["DIR", "NAME=DIR", "NAME=URI", "URI", ...]`` → ``{name: target}``.

    A target is an index directory (a ``Path``; the name defaults to the folder name) or
    an engine URI kept as a ``str`` (``postgresql://USER@HOST/DB?index=NAME``,
    ``milvus:///abs/file.db?index=NAME``; the name defaults to its ``index`` parameter).
    A URI's engine is reached when the server opens the index, before it listens.

    Raises:
        InvalidInput: a folder that is not an index, a URI of an unknown scheme or without a
            name, or a name given twice.
    """
    from urllib.parse import parse_qs, urlsplit

    from embedstack.index import manifest
    from embedstack.index.backends import scheme_of, store_class
    from embedstack.server.settings import redact

    out: dict[str, Path | str] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        if not (sep and name and target and "/" not in name and "\\" not in name):
            name, target = "", entry
        scheme = scheme_of(target)
        if scheme is not None:
            store_class(scheme)  # InvalidInput naming the known schemes
            name = name or parse_qs(urlsplit(target).query).get("index", [""])[-1]
            if not name:
                raise InvalidInput(
                    f"--index {redact(target)}: name the index: --index NAME={redact(target)}"
                )
            found: Path | str = target
        else:
            path = Path(target).expanduser()
            name = name or Path(target).name or Path(target).resolve().name
            if not (path / manifest.FILE).is_file():
                raise InvalidInput(
                    f"--index {entry}: {path} is not an embedstack index (no {manifest.FILE}); "
                    f"create one with `embedstack index create {path}`"
                )
            found = path
        if name in out:
            raise InvalidInput(
                f"--index: two indexes are named {name!r}; name them with --index NAME=DIR"
            )
        out[name] = found
    return out


def uvicorn_config(application: Any, settings: ServerSettings, host: str, port: int,
                   log_level: str = "info") -> Any:  # fmt: skip
    """The ``uvicorn.Config`` that ``embedstack serve`` runs ``application`` with: the
    address, the log level and ``settings.keep_alive_s`` as uvicorn's
    ``timeout_keep_alive``.

    Raises:
        MissingDependency: uvicorn is not installed (extra ``server``).
    """
    uvicorn = require("uvicorn", "server", "embedstack serve")
    return uvicorn.Config(application, host=host, port=port, log_level=log_level,
                          timeout_keep_alive=settings.keep_alive_s)  # fmt: skip


def _settings(**values: Any) -> Any:
    from pydantic import ValidationError

    from embedstack.server.settings import ServerSettings

    try:
        return ServerSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"invalid server settings: {where}: {first['msg']}") from exc


@app.command()
def serve(
    index: Annotated[
        list[str] | None,
        typer.Option(
            "--index",
            help="Index to serve: a directory (name = folder name), an engine URI "
            "(postgresql://USER@HOST/DB?index=NAME, milvus:///abs/file.db?index=NAME; name = "
            "its index), or NAME=DIR / NAME=URI.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help=f"Embedding model to serve (default {DEFAULT_MODEL})."),
    ] = None,
    reranker: Annotated[
        list[str] | None,
        typer.Option(
            "--reranker",
            help="Reranker name or folder to serve (a folder is served under its folder name; "
            "NAME=DIR names it). The first is the cross-encoder of index-search pipelines "
            "that rerank (hybrid-rerank, three-stage); loaded once, at start.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accepted bearer key (default: $EMBEDSTACK_API_KEYS)."),
    ] = None,
    batching: Annotated[
        bool, typer.Option(help="Merge concurrent embedding requests into one model call.")
    ] = True,
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest wait of a request for a batch to fill.")
    ] = 5.0,
    group_commit: Annotated[
        bool,
        typer.Option(
            help="Apply the index writes waiting for the writer together (fewer commits; "
            "each request answered as if applied alone, in arrival order)."
        ),
    ] = True,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Origin allowed by CORS.")
    ] = None,
    keep_alive: Annotated[
        int,
        typer.Option(
            "--keep-alive",
            min=1,
            max=3600,
            help="Seconds an idle connection stays open; keep it above the idle timeouts of "
            "your clients' pools and load balancers (see ServerSettings.keep_alive_s).",
        ),
    ] = 75,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve embeddings (OpenAI API), rerank (Cohere/Jina API) and index search over HTTP.

    Models and indexes are loaded before the server listens; options may be repeated.
    """
    require("fastapi", "server", "embedstack serve")
    uvicorn = require("uvicorn", "server", "embedstack serve")
    from pydantic import SecretStr

    from embedstack.server import create_app

    settings = _settings(
        models=tuple(model or (DEFAULT_MODEL,)),
        rerankers=tuple(reranker or ()),
        indexes=index_dirs(index or []),
        api_keys=tuple(SecretStr(k) for k in api_key) if api_key else None,
        micro_batching=batching,
        max_wait_ms=max_wait_ms,
        group_commit=group_commit,
        cors_origins=tuple(cors_origin or ()),
        keep_alive_s=keep_alive,
    )
    # Spinning ONNX Runtime threads would compete with the event loop for the cores.
    avoid_ort_spinning()
    application = create_app(settings)
    err.print("loading models and indexes …")
    application.state.embedstack.load_all()
    served = ", ".join(settings.model_sources()) or "no models"
    auth = "API keys required" if settings.api_keys else "no authentication"
    err.print(f"serving {served} on http://{host}:{port} ({auth}; API docs at /docs)")
    server = uvicorn.Server(uvicorn_config(application, settings, host, port, log_level))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    if not server.started:
        raise EmbedstackError(f"the server did not start on {host}:{port}; see the log above")
    err.print("stopped")
