"""RegistryClient failover and writes that are safe to retry, against the real registry app
in-process (TestClient).

Several registry URLs are simulated by one httpx transport: ``live-*`` hosts forward to the
one app (registry processes sharing one database), ``dead`` refuses connections, ``hung``
times out, ``broken`` answers 503, and ``lossy`` forwards the request (the registry applies
it) and then loses the answer. The failover logic and the registry are real.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mycelium.client import (
    Conflict,
    EndpointError,
    Failover,
    NotFound,
    RegistryClient,
    RegistryEndpoints,
    RegistryUnavailable,
)
from mycelium.client.backoff import Backoff
from mycelium.client.registry import IDEMPOTENCY_HEADER, new_idempotency_key
from tests.conftest import OPERATOR_TOKEN, auth, create_group, register_node, registry_app


class Network:
    """Routes each request by host; records the hosts in the order they were tried."""

    def __init__(self, app: TestClient) -> None:
        self.app = app
        self.tried: list[str] = []
        self.lose_next = 0  # ``lossy``: how many more answers to lose
        self.dead: set[str] = {"dead"}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.tried.append(host)
        if host in self.dead:
            raise httpx.ConnectError("connection refused", request=request)
        if host == "hung":
            raise httpx.ReadTimeout("timed out", request=request)
        if host == "broken":
            return httpx.Response(503, json={"detail": "down"}, request=request)
        answer = self.app.request(
            request.method,
            request.url.raw_path.decode(),
            content=request.content,
            headers=dict(request.headers),
        )
        if host == "lossy" and self.lose_next:
            self.lose_next -= 1
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


@pytest.fixture
def app(database: Path | str) -> Iterator[TestClient]:
    """The registry on each database: a retried create makes one record on both."""
    with registry_app(database) as client:
        yield client


@pytest.fixture
def net(app: TestClient) -> Network:
    return Network(app)


def client(net: Network, *hosts: str, token: str | None = None, **kwargs: object) -> RegistryClient:
    """A client of ``hosts`` over ``net`` that records its backoff waits in ``.waits``."""
    waits: list[float] = []
    endpoints = RegistryEndpoints(tuple(f"http://{h}" for h in hosts))
    made = RegistryClient(
        endpoints,
        token=token,
        http=httpx.Client(transport=httpx.MockTransport(net)),
        sleep=waits.append,
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )
    made.waits = waits  # type: ignore[attr-defined]
    return made


# -- endpoints --------------------------------------------------------------------------------


def test_endpoints_parse_once_and_print_back() -> None:
    parsed = RegistryEndpoints.parse(" http://a:8000/ , https://b.example:8443/api ")
    assert parsed.urls == ("http://a:8000", "https://b.example:8443/api")
    assert str(parsed) == "http://a:8000,https://b.example:8443/api"
    assert RegistryEndpoints.parse(str(parsed)) == parsed and parsed.hosts == ("a", "b.example")
    assert RegistryEndpoints.of(parsed) is parsed and len(parsed) == 2


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no registry URL"),
        ("http://a,", "empty entry"),
        ("ftp://a", "http(s)://HOST"),
        ("a:8000", "http(s)://HOST"),
        ("http://a:99999", "not a URL"),
        ("http://a?x=1", "base URL"),
        ("http://a,http://a/", "twice"),
    ],
)
def test_endpoints_refuse_what_is_not_a_list_of_urls(text: str, says: str) -> None:
    with pytest.raises(EndpointError, match=says.replace("(", r"\(").replace(")", r"\)")):
        RegistryEndpoints.parse(text)


# -- failover ---------------------------------------------------------------------------------


def test_tries_in_order_then_keeps_to_the_one_that_answered(net: Network) -> None:
    reader = client(net, "dead", "live-a", "live-b")
    assert reader.list_groups() == [] and net.tried == ["dead", "live-a"]
    assert reader.base_url == "http://live-a"
    reader.list_groups()
    reader.list_nodes()
    assert net.tried == ["dead", "live-a", "live-a", "live-a"]  # sticky: no retry of dead
    net.dead.add("live-a")
    net.tried.clear()
    reader.list_groups()
    reader.list_groups()
    assert net.tried == ["live-a", "live-b", "live-b"] and reader.base_url == "http://live-b"
    assert len(reader.waits) == 2  # type: ignore[attr-defined]  # one before each move


def test_a_refusal_is_an_answer_not_a_failure(net: Network) -> None:
    reader = client(net, "live-a", "live-b")
    with pytest.raises(NotFound):
        reader.get_group(999)
    assert net.tried == ["live-a"] and reader.base_url == "http://live-a"


def test_timeouts_and_5xx_move_on(net: Network) -> None:
    reader = client(net, "hung", "broken", "live-a")
    assert reader.health() and net.tried == ["hung", "broken", "live-a"]


def test_no_registry_answered_after_bounded_tries_with_backoff(net: Network) -> None:
    failover = Failover(passes=3, backoff=Backoff(first=0.2, cap=0.5))
    node = register_node("http://live-a", http=httpx.Client(transport=httpx.MockTransport(net)))
    lost = client(net, "dead", "hung", token=node.creds.token, failover=failover)
    with pytest.raises(RegistryUnavailable) as caught:
        lost.heartbeat(node.node_id, group_id=None)
    assert net.tried[1:] == ["dead", "hung"] * 3  # each URL ``passes`` times, in order
    waits = lost.waits  # type: ignore[attr-defined]
    assert len(waits) == 5  # before every try but the first
    for attempt, wait in enumerate(waits):  # half to all of min(cap, first * 2**n)
        step = min(0.5, 0.2 * 2**attempt)
        assert step / 2 <= wait <= step
    message = str(caught.value)
    assert "no registry answered" in message and "http://dead (ConnectError)" in message
    assert "http://hung (ReadTimeout)" in message and node.creds.token not in message
    assert caught.value.maybe_applied  # the timed-out heartbeat may have arrived


def test_refused_connections_alone_were_not_applied(net: Network) -> None:
    lost = client(net, "dead")
    with pytest.raises(RegistryUnavailable) as caught:
        lost.register_node(name="n", num_samples=1)
    assert not caught.value.maybe_applied
    assert net.tried == ["dead"] and lost.waits == []  # type: ignore[attr-defined]  # a lone URL: once


# -- writes whose answer was lost, tried again on the next registry -------------------------


def test_group_creation_retried_after_a_lost_answer_makes_one_group(
    net: Network, app: TestClient
) -> None:
    operator = client(net, "lossy", "live-b", token=OPERATOR_TOKEN)
    net.lose_next = 1
    created = operator.create_group(
        name="g", fleet_address="127.0.0.1:9092", join_policy="invite-only"
    )
    assert net.tried == ["lossy", "live-b"]
    groups = app.get("/groups", params={"include_dead": "true"}).json()
    assert [g["group_id"] for g in groups] == [created.group_id]
    # The answer of the retry holds the group's working token and invite code.
    host = client(net, "live-b", token=created.group_token)
    host.group_heartbeat(created.group_id)
    node = register_node("http://live-b", http=host._http)
    node.client.join_group(created.group_id, node.node_id, invite_code=created.invite_code)


def test_node_registration_retried_after_a_lost_answer_makes_one_node(
    net: Network, app: TestClient
) -> None:
    joiner = client(net, "lossy", "live-b")
    net.lose_next = 1
    creds = joiner.register_node(name="n", num_samples=5)
    assert [n["node_id"] for n in app.get("/nodes").json()] == [creds.node_id]
    joiner.heartbeat(creds.node_id, group_id=None)  # the token of the answer works


def test_join_migrate_leave_delete_retried_after_lost_answers(
    net: Network, app: TestClient
) -> None:
    plain = httpx.Client(transport=httpx.MockTransport(net))
    first, _ = create_group("http://live-b", http=plain)
    second, _ = create_group("http://live-b", http=plain)
    node = register_node("http://live-b", http=plain)
    member = client(net, "lossy", "live-b", token=node.creds.token)
    for call in (
        lambda: member.join_group(first.group_id, node.node_id),
        lambda: member.migrate(
            node.node_id, to_group_id=second.group_id, reason="r", expected_gain=0.1
        ),
        lambda: member.leave_group(second.group_id, node.node_id),
    ):
        member._endpoints.restart()  # back to the lossy registry
        net.lose_next = 1
        answer = call()
        assert net.tried[-2:] == ["lossy", "live-b"], answer
    kinds = [e["type"] for e in app.get("/events").json()["events"]]
    assert kinds.count("joined") == 1 and kinds.count("migrated") == 1
    assert kinds.count("left") == 1
    assert app.get(f"/nodes/{node.node_id}").json()["group_id"] is None
    member._endpoints.restart()
    net.lose_next = 1
    member.delete_node(node.node_id)
    assert app.get(f"/nodes/{node.node_id}").status_code == 404


def test_a_conflict_without_a_lost_answer_is_still_a_conflict(net: Network) -> None:
    plain = httpx.Client(transport=httpx.MockTransport(net))
    group, _ = create_group("http://live-a", http=plain)
    node = register_node("http://live-a", http=plain)
    member = client(net, "live-a", token=node.creds.token)
    member.join_group(group.group_id, node.node_id)
    with pytest.raises(Conflict):  # already there, and no attempt of ours did it
        member.migrate(node.node_id, to_group_id=group.group_id, reason="", expected_gain=0.0)


def test_round_report_retried_after_a_lost_answer_is_recorded_once(
    net: Network, app: TestClient
) -> None:
    group, _ = create_group("http://live-b", http=httpx.Client(transport=httpx.MockTransport(net)))
    host = client(net, "lossy", "live-b", token=group.group_token)
    net.lose_next = 1
    host.report_round(group.group_id, round=1, accuracy=0.5, loss=1.0, num_nodes=2, num_examples=9)
    host.report_round(group.group_id, round=2, accuracy=0.6, loss=0.9, num_nodes=2, num_examples=9)
    rounds = app.get(f"/groups/{group.group_id}").json()["rounds"]
    assert sorted(r["round"] for r in rounds) == [1, 2]


# -- the registry's side of idempotency keys -----------------------------------------------


def test_a_key_answers_its_own_request_only(app: TestClient) -> None:
    key = new_idempotency_key()
    body = {"name": "g", "fleet_address": "127.0.0.1:9092"}
    headers = {**auth(OPERATOR_TOKEN), IDEMPOTENCY_HEADER: key}
    first = app.post("/groups", json=body, headers=headers).json()
    again = app.post("/groups", json=body, headers=headers).json()
    assert again == first
    other = app.post("/groups", json={**body, "name": "h"}, headers=headers)
    assert other.status_code == 409 and key not in other.text
    node = app.post("/nodes", json={"name": "n", "num_samples": 1}).json()
    stolen = app.post("/groups", json=body, headers={**auth(node["token"]), "Idempotency-Key": key})
    assert stolen.status_code == 409  # another creator's key never returns that group
    short = app.post("/groups", json=body, headers={**headers, IDEMPOTENCY_HEADER: "short"})
    assert short.status_code == 422 and "short" not in short.text.replace("too_short", "")
    plain = app.post("/groups", json=body, headers=auth(OPERATOR_TOKEN)).json()
    assert plain["group_id"] != first["group_id"]  # without a key every create is new
