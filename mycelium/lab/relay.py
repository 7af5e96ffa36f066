"""A TCP relay that delays and paces each direction: the lab's stand-in for ``tc netem``
where the kernel has none (:mod:`mycelium.lab.faults` starts it inside a namespace).

    relay.py --listen HOST:PORT --to HOST:PORT --delay S [--rate BYTES_PER_S]

Each accepted connection gets its own connection to ``--to``. Every chunk read from one
side is written to the other no earlier than ``delay`` seconds after it was read, in order,
so a request and its answer each arrive ``delay`` later (a round trip ``2 * delay``); with
``--rate`` each direction also leaves at most that many bytes a second. The TCP handshake
with the relay itself is not delayed. ``--listen HOST:0`` takes a free port; once it
accepts connections the relay prints one JSON line ``{"listening": "HOST:PORT"}``.
Standard library only: it runs under any interpreter, without the project's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

CHUNK = 64 * 1024
QUEUED = 1024  # chunks in flight per direction before the reader waits


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    rate: float | None,
) -> None:
    """Copy ``reader`` to ``writer``: each chunk ``delay`` after it was read, paced to
    ``rate`` bytes a second; the end of the stream is passed on as a half-close."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED)
    size = CHUNK if rate is None else max(1024, min(CHUNK, int(rate / 50)))

    async def read() -> None:
        try:
            while data := await reader.read(size):
                await queue.put((loop.time() + delay, data))
        except ConnectionError:
            pass
        await queue.put((loop.time() + delay, b""))

    async def write() -> None:
        free_at = 0.0  # when the pacing lets the next chunk leave
        while True:
            due, data = await queue.get()
            start = max(due, free_at)
            if (wait := start - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            if rate:
                free_at = start + len(data) / rate

    reading = asyncio.create_task(read())
    try:
        await write()
    finally:
        reading.cancel()


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    rate: float | None,
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _pump(client_reader, up_writer, delay, rate),
            _pump(up_reader, client_writer, delay, rate),
        )
    except (ConnectionError, OSError):
        pass
    finally:
        for writer in (client_writer, up_writer):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def relay(listen: str, to: str, delay: float, rate: float | None) -> None:
    host, port = _split(listen)
    target = _split(to)
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, target, delay, rate), host, port
    )
    bound = server.sockets[0].getsockname()
    sys.stdout.write(json.dumps({"listening": f"{bound[0]}:{bound[1]}"}) + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def listening_address(output: str) -> str | None:
    """The ``HOST:PORT`` a relay printed once it accepts connections, if it has yet."""
    for line in output.splitlines():
        if line.startswith("{"):
            return json.loads(line).get("listening") or None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--delay", type=float, required=True)
    parser.add_argument("--rate", type=float, default=None, help="bytes a second")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(relay(args.listen, args.to, args.delay, args.rate))


if __name__ == "__main__":
    main()
