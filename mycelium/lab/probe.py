"""Run inside a test namespace: one request or one tiny server, result as one JSON line.

The test process never opens a socket to the namespaces' addresses; it runs this script
there with ``Network.run(host, [sys.executable, PROBE, ...])`` and reads the answer.

    probe.py get URL [--ca FILE] [--timeout S]     HTTP(S) GET -> {"status", "body"} or {"error"}
    probe.py health URL [--ca FILE]                RegistryClient.health() -> {"healthy"}
    probe.py tcp HOST PORT [--timeout S]           -> {"open": bool}
    probe.py cert HOST:PORT [--timeout S]          -> {"sha256"} of the presented certificate
    probe.py port HOST                             -> {"port"} free on HOST right now
    probe.py serve --host H --port P [--cert F --key F]   a one-route ASGI app on uvicorn
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _get(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    verify: object = args.ca if args.ca else True
    try:
        response = httpx.get(args.url, verify=verify, timeout=args.timeout)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"status": response.status_code, "body": response.text}


def _health(args: argparse.Namespace) -> dict[str, Any]:
    from mycelium.client import RegistryClient

    with RegistryClient(args.url, ca_file=args.ca, timeout=args.timeout) as client:
        return {"healthy": client.health()}


def _tcp(args: argparse.Namespace) -> dict[str, Any]:
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout):
            return {"open": True}
    except OSError as exc:
        return {"open": False, "error": str(exc)}


def _cert(args: argparse.Namespace) -> dict[str, Any]:
    from mycelium.net.certs import CertificateError, fingerprint, presented_certificate

    try:
        return {"sha256": fingerprint(presented_certificate(args.address, timeout=args.timeout))}
    except CertificateError as exc:
        return {"error": str(exc)}


async def _hello(scope: dict[str, Any], receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"hello": "mycelium", "scheme": scope.get("scheme")}).encode()
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def _port(args: argparse.Namespace) -> dict[str, Any]:
    with socket.socket() as sock:
        sock.bind((args.host, 0))
        return {"port": sock.getsockname()[1]}


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn

    uvicorn.run(
        _hello,
        host=args.host,
        port=args.port,
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        log_level="warning",
        lifespan="off",
    )
    return {"stopped": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    get = sub.add_parser("get")
    get.add_argument("url")
    get.add_argument("--ca")
    health = sub.add_parser("health")
    health.add_argument("url")
    health.add_argument("--ca")
    tcp = sub.add_parser("tcp")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    cert = sub.add_parser("cert")
    cert.add_argument("address")
    for p in (get, health, tcp, cert):
        p.add_argument("--timeout", type=float, default=3.0)
    port = sub.add_parser("port")
    port.add_argument("host")
    serve = sub.add_parser("serve")
    serve.add_argument("--host", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--cert")
    serve.add_argument("--key")
    args = parser.parse_args()
    handler = {
        "get": _get,
        "health": _health,
        "tcp": _tcp,
        "cert": _cert,
        "port": _port,
        "serve": _serve,
    }[args.cmd]
    sys.stdout.write(json.dumps(handler(args)) + "\n")


if __name__ == "__main__":
    main()
