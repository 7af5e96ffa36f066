"""Measurements for the fault tests, run INSIDE a namespace (``network.run(host, [python,
meter.py, ...])`` or in the background): the test process never sends to the lab's
addresses. Standard library only, so each run starts in a few tens of milliseconds. Each
command prints JSON lines; a server's first line says it is ready.

    meter.py udp-echo BIND PORT                     echo datagrams until killed
    meter.py udp-probe HOST PORT COUNT              COUNT numbered datagrams 5 ms apart;
                                                    -> {"sent", "answered"} (distinct echoes)
    meter.py udp-sink BIND PORT SECONDS             -> {"received"} after SECONDS
    meter.py udp-send HOST PORT COUNT               COUNT datagrams -> {"sent"}
    meter.py tcp-sink BIND PORT                     one connection read to its end
                                                    -> {"bytes", "seconds"} first byte to end
    meter.py tcp-send HOST PORT BYTES               -> {"sent"}
    meter.py get HOST PORT COUNT [--timeout S]      COUNT HTTP GETs, a new connection each
                                                    -> {"seconds": [...]} or {"error"}
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time


def _say(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def udp_echo(bind: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    _say({"ready": True})
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def udp_probe(host: str, port: int, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    answered: set[int] = set()

    def drain() -> None:
        while True:
            try:
                answered.add(int(sock.recv(2048)))
            except BlockingIOError:
                return

    for seq in range(count):
        sock.sendto(str(seq).encode(), (host, port))
        time.sleep(0.005)
        drain()
    time.sleep(0.3)  # the last echoes' way back
    drain()
    _say({"sent": count, "answered": len(answered)})


def udp_sink(bind: str, port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    sock.settimeout(0.05)
    _say({"ready": True})
    received, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.recv(2048)
            received += 1
        except TimeoutError:
            pass
    _say({"received": received})


def udp_send(host: str, port: int, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for seq in range(count):
        sock.sendto(str(seq).encode(), (host, port))
        time.sleep(0.002)
    _say({"sent": count})


def tcp_sink(bind: str, port: int) -> None:
    with socket.create_server((bind, port)) as server:
        _say({"ready": True})
        conn, _ = server.accept()
        with conn:
            total, first = 0, None
            while data := conn.recv(1 << 16):
                first = first if first is not None else time.monotonic()
                total += len(data)
            elapsed = time.monotonic() - first if first is not None else 0.0
    _say({"bytes": total, "seconds": elapsed})


def tcp_send(host: str, port: int, size: int) -> None:
    chunk = b"x" * (1 << 16)
    with socket.create_connection((host, port), timeout=30) as sock:
        left = size
        while left > 0:
            sock.sendall(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the sink's close: everything arrived
    _say({"sent": size})


def get(host: str, port: int, count: int, timeout: float) -> None:
    seconds = []
    for _ in range(count):
        start = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
        except OSError as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            conn.close()
        seconds.append(time.monotonic() - start)
    _say({"seconds": seconds, "status": response.status})


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "get":
        timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 3.0
        get(args[0], int(args[1]), int(args[2]), timeout)
        return
    handlers = {
        "udp-echo": lambda a: udp_echo(a[0], int(a[1])),
        "udp-probe": lambda a: udp_probe(a[0], int(a[1]), int(a[2])),
        "udp-sink": lambda a: udp_sink(a[0], int(a[1]), float(a[2])),
        "udp-send": lambda a: udp_send(a[0], int(a[1]), int(a[2])),
        "tcp-sink": lambda a: tcp_sink(a[0], int(a[1])),
        "tcp-send": lambda a: tcp_send(a[0], int(a[1]), int(a[2])),
    }
    handlers[cmd](args)


if __name__ == "__main__":
    main()
