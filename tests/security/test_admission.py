"""Admission: the registry's members are exactly the keys a group SuperLink accepts.

Unit tests drive :class:`Admission` against an in-memory SuperLink admin; the slow tests
use a real ``flower-superlink --enable-supernode-auth`` and real SuperNodes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mycelium import node_keys
from mycelium.procs import wait_for
from mycelium.security.admission import (
    Admission,
    AdmissionError,
    ControlApiAdmin,
    KeyAlreadyUsed,
    Member,
    NodeNotFound,
    Plan,
    Registration,
    plan,
)
from tests.security.conftest import Lab


class MemorySuperLink:
    """Flower's rules that matter here: a key registers once per SuperLink, ever."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.active: dict[int, str] = {}
        self.fail_next: int = 0
        self._next = 100

    def register(self, public_key: str) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise AdmissionError("superlink down")
        if public_key in self.seen:
            raise KeyAlreadyUsed("seen")
        self.seen.add(public_key)
        self._next += 1
        self.active[self._next] = public_key
        return self._next

    def unregister(self, flower_node_id: int) -> None:
        if self.active.pop(flower_node_id, None) is None:
            raise NodeNotFound("gone")


@pytest.fixture
def keys(tmp_path: Path) -> list[str]:
    return [node_keys.generate(tmp_path / f"k{i}").public_key for i in range(4)]


def test_plan_registers_new_members_and_unregisters_leavers(keys: list[str]) -> None:
    registered = {1: Registration(1, keys[0], 11), 2: Registration(2, keys[1], 12)}
    todo = plan([Member(1, keys[0]), Member(3, keys[2])], registered)
    assert todo == Plan(register=(Member(3, keys[2]),), unregister=(registered[2],))
    assert not plan([Member(1, keys[0]), Member(2, keys[1])], registered)


def test_plan_replaces_a_rotated_key(keys: list[str]) -> None:
    old = Registration(1, keys[0], 11)
    todo = plan([Member(1, keys[1])], {1: old})
    assert todo == Plan(register=(Member(1, keys[1]),), unregister=(old,))


def test_plan_skips_refused_keys_until_rotated(keys: list[str]) -> None:
    refused = frozenset({(1, keys[0])})
    assert not plan([Member(1, keys[0])], {}, refused=refused)
    assert plan([Member(1, keys[1])], {}, refused=refused).register == (Member(1, keys[1]),)


def test_sync_follows_the_member_list(keys: list[str]) -> None:
    link, members = MemorySuperLink(), [Member(1, keys[0]), Member(2, keys[1])]
    changes: list[dict[int, Registration]] = []
    adm = Admission(link, lambda: members, on_change=changes.append)
    adm.sync()
    assert set(link.active.values()) == {keys[0], keys[1]}
    assert adm.flower_node_id(1) in link.active and len(changes) == 1
    members = [Member(2, keys[1])]  # node 1 left / migrated out / was evicted
    adm.sync()
    assert set(link.active.values()) == {keys[1]} and adm.flower_node_id(1) is None
    assert not adm.sync() and len(changes) == 2  # nothing to do: no callback


def test_registry_outage_changes_nothing(keys: list[str]) -> None:
    link = MemorySuperLink()
    members: list[Member] | None = [Member(1, keys[0])]
    adm = Admission(link, lambda: members)
    adm.sync()
    members = None
    assert not adm.sync() and set(link.active.values()) == {keys[0]}


def test_a_reused_key_is_refused_once_and_a_rotated_key_admitted(keys: list[str]) -> None:
    link, members = MemorySuperLink(), [Member(1, keys[0])]
    adm = Admission(link, lambda: members)
    adm.sync()
    members = []
    adm.sync()  # left: unregistered
    members = [Member(1, keys[0])]  # came back with the same key: Flower refuses it
    adm.sync()
    assert adm.registered == {} and not adm.sync()  # not retried
    members = [Member(1, keys[1])]  # a fresh key for the new membership
    adm.sync()
    assert set(link.active.values()) == {keys[1]}


def test_failed_calls_are_retried_at_the_next_sync(keys: list[str]) -> None:
    link = MemorySuperLink()
    link.fail_next = 1
    adm = Admission(link, lambda: [Member(1, keys[0])])
    adm.sync()
    assert adm.registered == {}
    adm.sync()
    assert set(link.active.values()) == {keys[0]}


def test_members_with_bad_keys_are_skipped(keys: list[str]) -> None:
    link = MemorySuperLink()
    adm = Admission(link, lambda: [Member(1, "garbage"), Member(2, keys[0] + " c")])
    adm.sync()
    assert list(adm.registered) == [2] and adm.registered[2].public_key == keys[0]


def test_the_timer_admits_within_one_interval(keys: list[str]) -> None:
    link, members = MemorySuperLink(), []
    adm = Admission(link, lambda: members, interval=0.05).start()
    try:
        members = [Member(1, keys[0])]
        wait_for(lambda: link.active, timeout=2, what="admitted")
    finally:
        adm.stop()
    assert adm._thread is None


# -- real SuperLink -----------------------------------------------------------------------


@pytest.mark.slow
def test_only_registered_keys_connect_and_unregistered_ones_are_cut_off(
    lab: Lab, tmp_path: Path
) -> None:
    lab.start_superlink(auth=True)
    admin = ControlApiAdmin(lab.address, root_certificates=lab.certs.ca)
    try:
        member = node_keys.generate(tmp_path / "member.key")
        stranger = node_keys.generate(tmp_path / "stranger.key")
        members = [Member(1, member.public_key)]
        adm = Admission(admin, lambda: members)
        adm.sync()
        flower_id = adm.flower_node_id(1)
        node = lab.supernode("member", key=member.private_key_path)
        assert node.wait_connected() == flower_id  # the id Flower gave at registration

        refused = lab.supernode("stranger", key=stranger.private_key_path)
        wait_for(lambda: not refused.proc.is_running(), timeout=60, what="stranger exits")
        assert refused.proc.returncode() != 0
        assert "Failed to activate SuperNode" in refused.proc.read_log()

        members = []  # the member left the group
        started = time.monotonic()
        adm.sync()
        wait_for(lambda: not node.proc.is_running(), timeout=30, what="member cut off")
        assert time.monotonic() - started < 10  # next 3 s poll gets 401; well inside
        with pytest.raises(KeyAlreadyUsed):  # Flower never takes a key back
            admin.register(member.public_key)
    finally:
        admin.close()


@pytest.mark.slow
def test_control_api_errors_are_one_line(lab: Lab) -> None:
    lab.start_superlink(auth=True)
    admin = ControlApiAdmin(lab.address, root_certificates=lab.certs.ca)
    try:
        with pytest.raises(NodeNotFound):
            admin.unregister(12345)
    finally:
        admin.close()
    lab.superlink.stop()
    dead = ControlApiAdmin(lab.address, root_certificates=lab.certs.ca, timeout=2)
    with pytest.raises(AdmissionError) as err:
        dead.register(node_keys.generate(lab.work / "k").public_key)
    assert "\n" not in str(err.value)
    dead.close()
