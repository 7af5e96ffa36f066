"""The PostgreSQL store's heartbeat batches (group commit): the batcher with a plain
function as its database, then the real statement on the session's PostgreSQL server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from mycelium.registry.store.pgbeats import NODE_ID, Beat, BeatBatcher
from tests.conftest import auth, registry_app
from tests.postgres import PgServer, query


def beat(node_id: int, token: str = "t", group: int | None = None, at: float = 1.0) -> Beat:
    return (at, None, None, 1, None, None, None, node_id, token, group)


class Table:
    """Stands for the nodes table: writes the beats whose token is ``t``; can be held."""

    def __init__(self) -> None:
        self.batches: list[list[Beat]] = []
        self.release = threading.Event()
        self.release.set()

    def write(self, beats: Sequence[Beat]) -> set[int]:
        self.release.wait(10)
        self.batches.append(list(beats))
        return {b[NODE_ID] for b in beats if b[8] == "t"}


def test_beats_arriving_during_a_write_go_together_in_the_next() -> None:
    table = Table()

    async def run() -> list[bool]:
        batcher = BeatBatcher(table.write)
        table.release.clear()
        first = asyncio.create_task(batcher.submit(beat(1)))
        await asyncio.sleep(0.05)  # the first batch (node 1 alone) is being written
        rest = [asyncio.create_task(batcher.submit(beat(i))) for i in range(2, 52)]
        await asyncio.sleep(0.05)
        table.release.set()
        return [await first, *[await task for task in rest]]

    assert asyncio.run(run()) == [True] * 51
    assert [len(batch) for batch in table.batches] == [1, 50]


def test_each_caller_learns_its_own_answer_and_a_later_beat_wins() -> None:
    table = Table()

    async def run() -> list[bool]:
        batcher = BeatBatcher(table.write)
        return list(
            await asyncio.gather(
                batcher.submit(beat(1, at=1.0)),
                batcher.submit(beat(2, token="wrong")),
                batcher.submit(beat(1, at=2.0)),  # same node, same token: replaces the first
                batcher.submit(beat(3, group=7)),
                batcher.submit(beat(3, group=8)),  # same node, another group: after
            )
        )

    assert asyncio.run(run()) == [True, False, True, True, True]
    first, second = table.batches
    assert [b[0] for b in first if b[NODE_ID] == 1] == [2.0]
    assert [(b[NODE_ID], b[9]) for b in second] == [(3, 8)]


def test_an_error_of_the_database_is_every_waiting_callers() -> None:
    def broken(beats: Sequence[Beat]) -> set[int]:
        raise ConnectionError("database gone")

    async def run() -> list[BaseException | bool]:
        batcher = BeatBatcher(broken)
        beats = [batcher.submit(beat(i)) for i in range(5)]
        return list(await asyncio.gather(*beats, return_exceptions=True))

    answers = asyncio.run(run())
    assert all(isinstance(a, ConnectionError) for a in answers), answers


def test_concurrent_heartbeats_are_each_written_or_refused(pg_server: PgServer) -> None:
    """60 nodes beat at once through the real store (batched); a wrong token and a wrong
    group among them are refused as single beats are; the rows hold each node's own beat."""
    from concurrent.futures import ThreadPoolExecutor

    url = pg_server.create_database()
    try:
        with registry_app(url) as api:
            nodes = [
                api.post("/nodes", json={"name": f"n{i}", "num_samples": 1}).json()
                for i in range(60)
            ]

            def send(i: int) -> int:
                node = nodes[i]
                token = "x" * 43 if i == 7 else node["token"]
                body = {"group_id": 99 if i == 9 else None, "num_samples": 100 + i, "round": i}
                path = f"/nodes/{node['node_id']}/heartbeat"
                return api.post(path, json=body, headers=auth(token)).status_code

            with ThreadPoolExecutor(30) as pool:
                codes = list(pool.map(send, range(60)))
        assert codes[7] == 403 and codes[9] == 409
        assert [c for i, c in enumerate(codes) if i not in (7, 9)] == [200] * 58
        rows = dict(query(url, "SELECT name, num_samples FROM nodes"))
        assert rows == {f"n{i}": 1 if i in (7, 9) else 100 + i for i in range(60)}
    finally:
        pg_server.drop_database(url)
