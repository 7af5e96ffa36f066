"""Registry benchmark: heartbeats and discovery next to a bare endpoint, measured with wrk.

``python mycelium_net.py bench registry`` starts the REAL registry (uvicorn subprocess),
loads ``nodes`` nodes into ``groups`` groups over HTTP, then runs Debian's ``wrk`` (a
compiled load generator, installed here with apt-get if missing) against:

* ``GET /ping`` of a bare FastAPI app served the same way (uvicorn, uvloop + httptools,
  one worker, no access log), the ceiling;
* ``POST /nodes/{id}/heartbeat`` cycling through every node with its own token;
* ``GET /groups?has_capacity=true&limit=20``.

It reports req/s, p50/p99 latency and the ratio to the bare endpoint. Figures, not asserts.

``--db postgresql://...`` measures the PostgreSQL store (give an empty database);
``--processes N`` (PostgreSQL only) runs N registry processes over it, loaded through the
first, each measured by its own wrk at once (1/N of the connections): req/s are summed,
latencies are the worst process's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from bench import BenchError
from mycelium.api import GroupCreated, NodeCreated, NodePublic
from mycelium.client import RegistryClient, RegistryEndpoints, write_token_file
from mycelium.client.registry import IDEMPOTENCY_HEADER, new_idempotency_key
from mycelium.launch import registry_command
from mycelium.procs import DeadlineExceeded, ManagedProcess, free_port, wait_for

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"heartbeat": 0.45, "discovery": 0.30}
P99_TARGET_MS = 50.0
LOAD_CONCURRENCY = 32
LOAD_TRIES = 3  # per loading request, on transport errors only
LOAD_TTL = 3600.0
ROUNDS = 3

bare_app = FastAPI()


@bare_app.get("/ping")
async def ping() -> JSONResponse:
    """The bare endpoint: no storage, no validation, small JSON."""
    return JSONResponse({"status": "ok"})


@dataclass(frozen=True)
class Figure:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


# -- wrk -------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """Path of ``wrk``; installs Debian's package with apt-get when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    logger.warning("wrk not found: installing it with apt-get (Debian package 'wrk')")
    install = ["apt-get", "install", "-y", "wrk"]
    _apt(install)
    if not shutil.which("wrk"):
        _apt(["apt-get", "update"])
        _apt(install)
    found = shutil.which("wrk")
    if found:
        return found
    raise BenchError(
        "the load generator wrk is missing and 'apt-get install -y wrk' did not work; "
        "install wrk (Debian/Ubuntu package 'wrk') and run again"
    )


def _apt(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("%s failed: %s", " ".join(cmd), exc)


HEARTBEAT_LUA = """
local lines = {}
for line in io.lines("%(beats)s") do
  local id, group, token = line:match("(%%d+) (%%d+) (%%S+)")
  lines[#lines + 1] = {
    "/nodes/" .. id .. "/heartbeat",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token},
    '{"group_id": ' .. group .. ', "accuracy": 0.5, "loss": 0.7, "num_samples": 100, "round": 3}'
  }
end
local counter = 1
function setup(thread)
  thread:set("offset", counter)
  counter = counter + 7919
end
local i = 0
function init(args)
  i = tonumber(wrk.thread:get("offset")) or 0
end
function request()
  i = i + 1
  local b = lines[(i %% #lines) + 1]
  return wrk.format("POST", b[1], b[2], b[3])
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise BenchError(f"wrk printed no {percentile}% latency:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(name: str, text: str) -> Figure:
    """Figures from ``wrk --latency`` output (req/s, p50, p99, non-2xx + socket errors)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if not rps or not total:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Figure(
        name=name,
        requests_per_s=float(rps.group(1)),
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
        errors=errors,
        requests=int(total.group(1)),
    )


def run_wrk(
    wrk: str, name: str, url: str, *, connections: int, duration: float, script: Path | None
) -> Figure:
    args = [wrk, "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "--timeout", "5s"]
    if script is not None:
        args += ["-s", str(script)]
    logger.info("wrk %s: %s", name, " ".join(args + [url]))
    done = subprocess.run(
        args + [url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed for {name}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(name, done.stdout)


def run_wrk_on(
    wrk: str,
    name: str,
    urls: list[str],
    *,
    connections: int,
    duration: float,
    script: Path | None,
) -> Figure:
    """wrk against every url at once, ``connections`` split among them; one figure: req/s
    and requests summed, latencies the worst url's."""
    if len(urls) == 1:
        return run_wrk(
            wrk, name, urls[0], connections=connections, duration=duration, script=script
        )
    share = max(connections // len(urls), 1)
    with ThreadPoolExecutor(len(urls)) as pool:
        figures = list(
            pool.map(
                lambda u: run_wrk(
                    wrk, name, u, connections=share, duration=duration, script=script
                ),
                urls,
            )
        )
    return Figure(
        name=name,
        requests_per_s=sum(f.requests_per_s for f in figures),
        p50_ms=max(f.p50_ms for f in figures),
        p99_ms=max(f.p99_ms for f in figures),
        errors=sum(f.errors for f in figures),
        requests=sum(f.requests for f in figures),
    )


# -- servers ---------------------------------------------------------------------------------


@contextmanager
def _server(
    name: str,
    args: list[str],
    port: int,
    workdir: Path,
    started: list[ManagedProcess] | None = None,
) -> Iterator[str]:
    proc = ManagedProcess(name, args, log_path=workdir / f"{name}.log", cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    if started is not None:
        started.append(proc)
    try:
        proc.start()
        try:
            wait_for(
                lambda: not proc.is_running() or _answers(f"{url}/openapi.json"),
                timeout=60,
                what=f"{name} at {url}",
            )
        except DeadlineExceeded as exc:
            raise BenchError(f"{exc}\n{proc.read_log()[-2000:]}") from None
        if not proc.is_running():
            raise BenchError(f"{name} exited at start-up:\n{proc.read_log()[-2000:]}")
        yield url
    finally:
        proc.stop()


def _log_tails(workdir: Path) -> str:
    """The last lines of each registry's log (they go with the temporary folder)."""
    tails = []
    for log in sorted(workdir.glob("registry*.log")):
        lines = log.read_text(errors="replace").strip().splitlines()[-8:]
        tails.append(f"\n-- {log.stem} (last lines):\n" + "\n".join(lines))
    return "".join(tails)


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code == 200


def registry_server(workdir: Path, db: Path | str) -> tuple[list[str], int, str]:
    """argv, port and operator token (the bench creates its groups as the operator)."""
    port = free_port()
    token_file = workdir / "operator.token"
    token = (
        write_token_file(token_file) if not token_file.exists() else token_file.read_text().strip()
    )
    # Long TTLs: loading 10,000 nodes on busy shared cores can outlast the default 120 s,
    # and the figures are about request cost, not about groups expiring mid-run.
    args = registry_command(
        port=port,
        db=db,
        node_ttl=LOAD_TTL,
        group_ttl=LOAD_TTL,
        operator_token_file=token_file,
    )
    return args, port, token


def bare_server() -> tuple[list[str], int]:
    """The bare app under the same uvicorn settings as the registry."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "bench.registry_bench:bare_app"]
    args += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    return args + ["--no-access-log", "--log-level", "warning"], port


# -- loading 10,000 nodes into 1,000 groups ----------------------------------------------------


async def _load(
    url: str, operator: str, nodes: int, groups: int, seed: int = 0
) -> list[tuple[int, int, str]]:
    """Register groups (as the operator) and nodes, report a round per group, join every
    node to its group."""
    rng = random.Random(seed)
    limit = asyncio.Semaphore(LOAD_CONCURRENCY)
    limits = httpx.Limits(max_connections=LOAD_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:

        async def call(method: str, path: str, body: dict, token: str | None = None) -> bytes:
            # A keep-alive connection the server closes as it is reused is a transport
            # error: tried again (creates carry an Idempotency-Key, joins are idempotent).
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            headers[IDEMPOTENCY_HEADER] = new_idempotency_key()
            for attempt in range(LOAD_TRIES):
                try:
                    async with limit:
                        r = await http.request(method, path, json=body, headers=headers)
                    break
                except httpx.TransportError:
                    if attempt == LOAD_TRIES - 1:
                        raise
                    await asyncio.sleep(0.1 * 2**attempt * random.uniform(0.5, 1.5))
            if r.status_code >= 300:
                raise BenchError(f"loading: {method} {path} -> {r.status_code} {r.text[:200]}")
            return r.content

        async def node(i: int, gid: int) -> tuple[int, int, str]:
            answer = await call("POST", "/nodes", {"name": f"n{i}", "num_samples": 100})
            made = NodeCreated.model_validate_json(answer)
            await call("POST", f"/groups/{gid}/join", {"node_id": made.node_id}, made.token)
            return made.node_id, gid, made.token

        async def group(i: int) -> list[tuple[int, int, str]]:
            # Half the groups end up exactly full, so has_capacity filters for real.
            members = range(i, nodes, groups)
            capacity = len(members) if i % 2 == 0 else 2 * max(len(members), 1)
            body: dict[str, object] = {
                "name": f"g{i}",
                "fleet_address": f"10.0.{i // 250}.{i % 250}:9092",
            }
            body["max_capacity"] = max(capacity, 1)
            made = GroupCreated.model_validate_json(await call("POST", "/groups", body, operator))
            metrics = {"round": 1, "accuracy": rng.random(), "loss": 1.0}
            metrics |= {"num_nodes": len(members), "num_examples": 100 * len(members)}
            await call("POST", f"/groups/{made.group_id}/rounds", metrics, made.group_token)
            return [await node(j, made.group_id) for j in members]

        per_group = await asyncio.gather(*(group(i) for i in range(groups)))
        return [entry for entries in per_group for entry in entries]


# -- the run ---------------------------------------------------------------------------------


def run(
    *,
    nodes: int,
    groups: int,
    connections: int,
    duration: float,
    json_path: Path | None,
    rounds: int = ROUNDS,
    db: str | None = None,
    processes: int = 1,
) -> str:
    """Run the whole benchmark and return the report text (also JSON to ``json_path``).

    Both servers stay up; each round measures bare, heartbeat and discovery back to back,
    so a ratio compares figures taken seconds apart on the shared cores. The report gives
    each endpoint's median round.
    """
    if processes > 1 and not (db or "").startswith("postgresql://"):
        raise BenchError("several registry processes share PostgreSQL: give --db postgresql://")
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        bare_args, bare_port = bare_server()
        bare_url = stack.enter_context(_server("bare", bare_args, bare_port, workdir))
        urls, registries = [], list[ManagedProcess]()
        for i in range(processes):
            reg_args, reg_port, operator = registry_server(workdir, db or workdir / "bench.db")
            name = f"registry{i}"
            urls.append(stack.enter_context(_server(name, reg_args, reg_port, workdir, registries)))
        url = urls[0]
        try:
            loaded = asyncio.run(_load(url, operator, nodes, groups))
        except httpx.HTTPError as exc:
            raise BenchError(f"loading the registry failed: {exc!r}{_log_tails(workdir)}") from None
        beats = workdir / "beats.txt"
        beats.write_text("".join(f"{n} {g} {t}\n" for n, g, t in loaded))
        script = workdir / "heartbeat.lua"
        script.write_text(HEARTBEAT_LUA % {"beats": beats})
        targets = [
            ("bare", [f"{bare_url}/ping"], None),
            ("heartbeat", [f"{u}/" for u in urls], script),
            ("discovery", [f"{u}/groups?has_capacity=true&limit=20" for u in urls], None),
        ]
        for name, where, lua in targets:
            run_wrk(
                wrk, f"warm-up {name}", where[0], connections=connections, duration=2, script=lua
            )
        measured: list[list[Figure]] = []
        for _ in range(rounds):
            measured.append(
                [
                    run_wrk_on(
                        wrk, name, where, connections=connections, duration=duration, script=lua
                    )
                    for name, where, lua in targets
                ]
            )
        _check_after(url, loaded)
        failover = _failover(urls, registries[0], loaded[0]) if processes > 1 else None
    report = _report(measured, nodes=nodes, groups=groups, connections=connections)
    if failover is not None:
        report += (
            f"\nfailover: registry0 killed (-9); the next heartbeat of a client given every"
            f" URL was accepted by {failover[1]} {failover[0]:.1f} ms later"
        )
    store = "PostgreSQL" if db and db.startswith("postgresql://") else "SQLite"
    report = f"store: {store}, {processes} registry process(es)\n" + report
    if json_path is not None:
        json_path.write_text(json.dumps(_as_json(measured, nodes, groups, connections), indent=2))
    return report


def _failover(
    urls: list[str], first: ManagedProcess, node: tuple[int, int, str]
) -> tuple[float, str]:
    """kill -9 the first registry process, then heartbeat at once through a client given
    every URL: milliseconds from the kill to the beat accepted (by which process)."""
    node_id, group_id, token = node
    with RegistryClient(RegistryEndpoints(tuple(urls)), token=token, timeout=2.0) as client:
        client.heartbeat(node_id, group_id=group_id, num_samples=100)
        if client.base_url != urls[0]:
            raise BenchError(f"the first heartbeat went to {client.base_url}, not {urls[0]}")
        first.kill()
        killed = time.monotonic()
        client.heartbeat(node_id, group_id=group_id, num_samples=100)
        return (time.monotonic() - killed) * 1000, client.base_url


def _check_after(url: str, loaded: list[tuple[int, int, str]]) -> None:
    """After the load every node is still registered, alive and in its group."""
    answer = httpx.get(f"{url}/nodes", params={"alive": "true"}, timeout=60)
    placed = {
        n.node_id: n.group_id for n in TypeAdapter(list[NodePublic]).validate_json(answer.content)
    }
    missing = [n for n, g, _ in loaded if placed.get(n) != g]
    if missing:
        raise BenchError(f"after the run {len(missing)} nodes are not alive in their group")


def _ratio(figure: Figure, bare: Figure) -> float:
    return figure.requests_per_s / bare.requests_per_s if bare.requests_per_s else 0.0


def _median_round(measured: list[list[Figure]], column: int) -> tuple[Figure, float]:
    """The round whose ratio to its own bare figure is the median, and that ratio."""
    ranked = sorted((_ratio(r[column], r[0]), i) for i, r in enumerate(measured))
    ratio, index = ranked[len(ranked) // 2]
    return measured[index][column], ratio


def _report(measured: list[list[Figure]], *, nodes: int, groups: int, connections: int) -> str:
    lines = [
        f"registry benchmark: {nodes} nodes in {groups} groups, wrk -t2 -c{connections}, "
        "one uvicorn worker (uvloop + httptools), load generator on the same cores, "
        f"median of {len(measured)} rounds",
        f"{'endpoint':<12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'vs bare':>9}  target",
    ]
    for column in range(len(measured[0])):
        f, ratio = _median_round(measured, column)
        target = TARGETS.get(f.name)
        verdict = "" if target is None else f"{target:.0%} " + _verdict(f, ratio, target)
        lines.append(
            f"{f.name:<12}{f.requests_per_s:>10.0f}{f.p50_ms:>9.2f}{f.p99_ms:>9.2f}"
            f"{f.errors:>8}{ratio:>9.0%}  {verdict}"
        )
    per_round = [
        " ".join(f"{r[c].name} {_ratio(r[c], r[0]):.0%}" for c in range(1, len(r)))
        for r in measured
    ]
    lines.append("per round (vs that round's bare): " + "; ".join(per_round))
    return "\n".join(lines)


def _verdict(figure: Figure, ratio: float, target: float) -> str:
    ok = ratio >= target and figure.errors == 0
    if figure.name == "heartbeat":
        ok = ok and figure.p99_ms < P99_TARGET_MS
    return "met" if ok else "MISSED"


def _as_json(measured: list[list[Figure]], nodes: int, groups: int, connections: int) -> dict:
    return {
        "nodes": nodes,
        "groups": groups,
        "connections": connections,
        "rounds": [[asdict(f) | {"ratio_to_bare": _ratio(f, r[0])} for f in r] for r in measured],
    }
