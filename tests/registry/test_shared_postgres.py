"""Two REAL registry processes (uvicorn on free ports) over one REAL PostgreSQL database:
whatever one process writes, the other sees and enforces at once (issue 23)."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from mycelium import launch
from mycelium.client.registry import IDEMPOTENCY_HEADER, new_idempotency_key
from mycelium.procs import wait_for
from tests.conftest import OPERATOR_TOKEN, auth, operator_token_file
from tests.postgres import PgServer, query

TIMEOUT = 30.0


@pytest.fixture
def shared_db(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("shared")
    try:
        yield url
    finally:
        pg_server.drop_database(url)


class Registries:
    """Registry processes over one database, stopped at the end of the test."""

    def __init__(self, tmp_path: Path, db: str, stack: ExitStack, **options: float) -> None:
        self.tmp_path, self.db, self.options = tmp_path, db, options
        self.token_file = operator_token_file(tmp_path)
        self._stack = stack
        self._count = 0

    def start(self) -> launch.RegistryProcess:
        self._count += 1
        name = f"registry{self._count}"
        started = launch.start_registry(
            db=self.db,
            log_path=self.tmp_path / f"{name}.log",
            name=name,
            operator_token_file=self.token_file,
            **self.options,  # type: ignore[arg-type]
        )
        self._stack.callback(started.process.stop)
        return started


@pytest.fixture
def two(tmp_path: Path, shared_db: str) -> Iterator[tuple[str, str]]:
    with ExitStack() as stack:
        registries = Registries(tmp_path, shared_db, stack)
        yield registries.start().url, registries.start().url


def _node(url: str, name: str = "n") -> tuple[int, str]:
    r = httpx.post(f"{url}/nodes", json={"name": name, "num_samples": 1}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["node_id"], r.json()["token"]


def _group(url: str, capacity: int) -> tuple[int, str]:
    body = {"name": "g", "fleet_address": "127.0.0.1:9092", "max_capacity": capacity}
    r = httpx.post(f"{url}/groups", json=body, headers=auth(OPERATOR_TOKEN), timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["group_id"], r.json()["group_token"]


def test_hundred_joins_over_two_processes_fill_ten_places_exactly(
    two: tuple[str, str], shared_db: str
) -> None:
    urls = list(two)
    group_id, _ = _group(urls[0], 10)
    nodes = [_node(urls[i % 2], f"n{i}") for i in range(100)]

    def join(i: int) -> int:
        node_id, token = nodes[i]
        url = urls[i % 2]
        body = {"node_id": node_id}
        r = httpx.post(
            f"{url}/groups/{group_id}/join", json=body, headers=auth(token), timeout=TIMEOUT
        )
        return r.status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(join, range(100)))
    assert codes.count(200) == 10 and codes.count(409) == 90, codes
    members = query(shared_db, "SELECT COUNT(*) FROM nodes WHERE group_id = ?", (group_id,))
    assert members[0][0] == 10
    for url in urls:
        assert httpx.get(f"{url}/groups/{group_id}").json()["num_members"] == 10


def test_150_concurrent_migrations_leave_every_node_in_exactly_one_group(
    two: tuple[str, str], shared_db: str
) -> None:
    urls = list(two)
    groups = [_group(urls[0], 150)[0] for _ in range(3)]
    nodes = [_node(urls[i % 2], f"n{i}") for i in range(150)]
    homes = {}
    for i, (node_id, token) in enumerate(nodes):
        homes[node_id] = groups[i % 3]
        r = httpx.post(
            f"{urls[i % 2]}/groups/{homes[node_id]}/join",
            json={"node_id": node_id},
            headers=auth(token),
            timeout=TIMEOUT,
        )
        assert r.status_code == 200, r.text
    rng = random.Random(23)

    def migrate(i: int) -> tuple[int, int, int]:
        node_id, token = nodes[i]
        to = rng.choice([g for g in groups if g != homes[node_id]])
        body = {"to_group_id": to, "reason": "test", "expected_gain": 0.1}
        r = httpx.post(
            f"{urls[(i + 1) % 2]}/nodes/{node_id}/migrate",
            json=body,
            headers=auth(token),
            timeout=TIMEOUT,
        )
        return node_id, to, r.status_code

    with ThreadPoolExecutor(50) as pool:
        moves = list(pool.map(migrate, range(150)))
    assert all(code == 200 for _, _, code in moves), moves
    rows = dict(query(shared_db, "SELECT id, group_id FROM nodes"))
    assert len(rows) == 150 and all(rows[node_id] == to for node_id, to, _ in moves)
    counts = query(shared_db, "SELECT COUNT(*) FROM nodes WHERE group_id IS NULL")
    assert counts[0][0] == 0


def test_a_token_holds_on_every_process_and_a_deleted_one_nowhere(two: tuple[str, str]) -> None:
    a, b = two
    node_id, token = _node(a)
    beat = {"group_id": None, "num_samples": 1}
    r = httpx.post(f"{b}/nodes/{node_id}/heartbeat", json=beat, headers=auth(token))
    assert r.status_code == 200, r.text
    r = httpx.delete(f"{a}/nodes/{node_id}", headers=auth(token))
    assert r.status_code in (200, 204), r.text
    r = httpx.post(f"{b}/nodes/{node_id}/heartbeat", json=beat, headers=auth(token))
    assert r.status_code == 404, r.text  # at once: no cache of the other process lets it in
    other_id, other_token = _node(b)
    r = httpx.post(f"{a}/nodes/{other_id}/heartbeat", json=beat, headers=auth(token))
    assert r.status_code == 403, r.text


def test_a_model_uploaded_through_one_downloads_identical_through_the_other(
    two: tuple[str, str],
) -> None:
    a, b = two
    group_id, group_token = _group(a, 5)
    data = random.Random(7).randbytes(300_000)
    digest = hashlib.sha256(data).hexdigest()
    headers = {**auth(group_token), "X-Model-SHA256": digest}
    r = httpx.put(f"{a}/groups/{group_id}/model", content=data, headers=headers)
    assert r.status_code in (200, 201, 204), r.text
    got = httpx.get(f"{b}/groups/{group_id}/model")
    assert got.status_code == 200 and got.content == data
    assert hashlib.sha256(got.content).hexdigest() == digest


def test_the_event_stream_of_one_delivers_what_the_other_wrote(two: tuple[str, str]) -> None:
    a, b = two
    first_id, _ = _node(a, "before")
    after = httpx.get(f"{b}/events").json()["next_since"]
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        headers = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
        with httpx.stream("GET", f"{b}/events/stream", headers=headers, timeout=TIMEOUT) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and '"type"' in line and '"node_id"' in line:
                    seen.append(line)
                    if '"late"' in line:
                        done.set()
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    late_id, _ = _node(a, "late")  # written through A, streamed by B
    assert done.wait(TIMEOUT), seen
    assert f'"node_id":{late_id}' in seen[-1].replace(" ", "")
    page = httpx.get(f"{b}/events", params={"since": 0}).json()["events"]
    ids = [event["id"] for event in page]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert any(e["node_id"] == first_id for e in page)


def test_one_idempotency_key_raced_through_two_processes_makes_one_record(
    two: tuple[str, str], shared_db: str
) -> None:
    """A client failing over resends its create to the other process, perhaps while the first
    is still answering: every answer names the same node (group) and token, one row each."""
    urls = list(two)
    node_key, group_key = new_idempotency_key(), new_idempotency_key()
    group = {"name": "raced", "fleet_address": "127.0.0.1:9092", "max_capacity": 3}

    def create(i: int) -> tuple[int, dict[str, object]]:
        url = urls[i % 2]
        if i % 4 < 2:
            headers = {IDEMPOTENCY_HEADER: node_key}
            body: dict[str, object] = {"name": "raced", "num_samples": 1}
            r = httpx.post(f"{url}/nodes", json=body, headers=headers, timeout=TIMEOUT)
        else:
            headers = {**auth(OPERATOR_TOKEN), IDEMPOTENCY_HEADER: group_key}
            r = httpx.post(f"{url}/groups", json=group, headers=headers, timeout=TIMEOUT)
        return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(32)))
    assert all(code in (200, 201) for code, _ in answers), answers
    nodes = {(a["node_id"], a["token"]) for i, (_, a) in enumerate(answers) if i % 4 < 2}
    groups = {(a["group_id"], a["group_token"]) for i, (_, a) in enumerate(answers) if i % 4 >= 2}
    assert len(nodes) == 1 and len(groups) == 1, (nodes, groups)
    assert query(shared_db, "SELECT COUNT(*) FROM nodes WHERE name = 'raced'")[0][0] == 1
    assert query(shared_db, "SELECT COUNT(*) FROM groups WHERE name = 'raced'")[0][0] == 1


def test_kill_9_five_times_loses_no_acknowledged_write(tmp_path: Path, shared_db: str) -> None:
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    with ExitStack() as stack:
        registries = Registries(tmp_path, shared_db, stack)
        stable, victim = registries.start(), registries.start()
        urls = [stable.url, victim.url]

        def writer(k: int) -> None:
            with httpx.Client(timeout=5.0) as client:
                i = 0
                while not stop.is_set():
                    url = urls[(i + k) % 2]
                    i += 1
                    try:
                        r = client.post(f"{url}/nodes", json={"name": f"w{k}", "num_samples": 1})
                    except httpx.HTTPError:
                        continue  # the killed process: not acknowledged
                    if r.status_code == 201:
                        with lock:
                            acked.append(r.json()["node_id"])

        with ThreadPoolExecutor(4) as pool:
            for k in range(4):
                pool.submit(writer, k)
            try:  # a registry that fails to start beside busy ones fails the test, not hangs
                for _ in range(5):
                    time.sleep(0.3)  # writes flow through both before the kill
                    victim.process.kill()
                    victim = registries.start()
                    urls[1] = victim.url
                time.sleep(0.3)
            finally:
                stop.set()
        assert len(acked) > 50
        stored = {row[0] for row in query(shared_db, "SELECT id FROM nodes")}
        assert set(acked) <= stored
        for node_id in random.Random(1).sample(acked, 20):
            assert httpx.get(f"{stable.url}/nodes/{node_id}").status_code == 200


def _sweeping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).headers.get("X-Registry-Sweeping") == "1"
    except httpx.HTTPError:
        return False


def test_the_other_process_takes_over_the_sweep(tmp_path: Path, shared_db: str) -> None:
    with ExitStack() as stack:
        registries = Registries(tmp_path, shared_db, stack, group_ttl=2.0)
        first, second = registries.start(), registries.start()
        wait_for(lambda: _sweeping(first.url) or _sweeping(second.url), timeout=TIMEOUT)
        assert _sweeping(first.url) != _sweeping(second.url)  # exactly one sweeps
        sweeper, other = (first, second) if _sweeping(first.url) else (second, first)
        sweeper.process.kill()
        wait_for(lambda: _sweeping(other.url), timeout=TIMEOUT, what="the other sweeps")
        # The sweep runs there: a group whose host stays silent fails.
        group_id, _ = _group(other.url, 5)

        def failed() -> bool:
            group = httpx.get(f"{other.url}/groups/{group_id}").json()
            return group["status"] in ("failed", "dissolved")

        wait_for(failed, timeout=TIMEOUT, what="the silent group failed by the new sweeper")
