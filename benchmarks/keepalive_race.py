"""The keep-alive race behind the soak's ``httpx.ReadError('')``: a client reuses a pooled
connection just as the server's keep-alive timer closes it.

A uvicorn server (a one-line ASGI app, its event loop kept busy ``--busy-ms`` per turn as
under load) closes connections idle for ``--server-keep-alive`` seconds; each trial opens an
``httpx.AsyncClient`` whose pool keeps idle connections ``--client-keep-alive`` seconds,
sends one request (reading its response ``--client-lag-ms`` late, as a client whose event
loop serves other requests too), waits a random time up to ``--window`` seconds short of the
client's expiry, and sends a second request on the pooled connection. With equal
keep-alives (uvicorn 5 s, httpx 5 s; scaled down here to 1 s so a trial takes a second) the
server's timer, which started when the server finished writing the response (before the
client's), closes the connection in the event-loop turn that has not yet read the second
request, and the kernel answers it with a reset: ``ReadError('')``. With the server's
keep-alive above the client's, no trial fails.

Example:
    .venv/bin/python benchmarks/keepalive_race.py --trials 80
    .venv/bin/python benchmarks/keepalive_race.py --trials 80 --server-keep-alive 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import threading
import time
from typing import Any


async def _busy_loop(seconds: float) -> None:
    """Other work on the server's event loop: ``seconds`` of it per turn."""
    while True:
        time.sleep(seconds)
        await asyncio.sleep(0)


def _app(busy_s: float) -> Any:
    started: list[asyncio.Task[None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not started and busy_s > 0:
            started.append(asyncio.get_running_loop().create_task(_busy_loop(busy_s)))
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _trials(url: str, args: argparse.Namespace) -> dict[str, int]:
    import httpx

    errors: dict[str, int] = {}
    limits = httpx.Limits(keepalive_expiry=args.client_keep_alive)

    async def busy_client(response: Any) -> None:  # the client's loop serves others too
        time.sleep(args.client_lag_ms / 1000)

    hooks = {"response": [busy_client]}
    for _ in range(args.trials):
        async with httpx.AsyncClient(base_url=url, limits=limits, event_hooks=hooks) as client:
            await client.get("/")
            await asyncio.sleep(args.client_keep_alive - random.uniform(0, args.window))
            try:
                await client.get("/")
            except httpx.HTTPError as exc:
                errors[repr(exc)] = errors.get(repr(exc), 0) + 1
    return errors


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client-keep-alive", type=float, default=1.0)
    parser.add_argument("--server-keep-alive", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=80)
    parser.add_argument("--window", type=float, default=0.04)
    parser.add_argument("--busy-ms", type=float, default=30.0)
    parser.add_argument("--client-lag-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(_app(args.busy_ms / 1000), host="127.0.0.1", port=port,
                            log_level="error",
                            timeout_keep_alive=args.server_keep_alive)  # fmt: skip
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        errors = asyncio.run(_trials(f"http://127.0.0.1:{port}", args))
    finally:
        server.should_exit = True
    report = {**vars(args), "errors": sum(errors.values()), "by_error": errors}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
