"""Whose silence is it: the sweeper's judgement before it fails or dissolves a group.

Three rules (docs/architecture.md, "Failure cases"), each a plain function run inside the
sweep's one transaction as ``fn(conn, now, ...)``:

* **The registry's own outage is not others' silence.** A sweep that comes late (the process
  was stopped, hung or restarted) credits the gap to every timestamp older than the last
  sweep: silence is counted only while the registry was there to hear it.
* **Self-preservation.** When the share of live nodes lost within one node TTL jumps past a
  threshold, the cuts are frozen where they stood (nothing more expires, no group fails)
  until the loss falls back below the threshold or a bound passes.
* **Members vouch for their group.** A group whose host went silent is failed only if a
  majority of its live (admitted) members do not report a round beyond the last one seen.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, replace

from mycelium import config
from mycelium.registry.store.writes import Ttls, dissolve, event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preservation:
    """When self-preservation starts (``threshold``, ``min_lost``) and ends (``max_s``)."""

    threshold: float = config.SELF_PRESERVATION_THRESHOLD
    max_s: float = config.SELF_PRESERVATION_MAX_S
    min_lost: int = config.SELF_PRESERVATION_MIN_LOST


@dataclass(frozen=True)
class Watch:
    """The sweeper's memory between sweeps: self-preservation since when (None: off), when
    it last ended (nodes silent since before that are old news), and the latest loss."""

    preserving_since: float | None = None
    ended_at: float | None = None
    lost: int = 0
    counted: int = 0

    @property
    def share(self) -> float:
        return self.lost / self.counted if self.counted else 0.0


@dataclass(frozen=True)
class SweepJob:
    ttls: Ttls
    policy: Preservation
    watch: Watch
    late_s: float  # how late this sweep is on the registry's own clock (0: on time)
    vouch_max_s: float


@dataclass(frozen=True)
class Swept:
    failed: tuple[int, ...]
    dissolved: tuple[tuple[int, tuple[int, ...]], ...]
    vouched: tuple[int, ...]
    watch: Watch
    credited_s: float


# -- the registry's own outage --------------------------------------------------------------


def last_sweep(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT value FROM registry_state WHERE key = 'last_sweep'").fetchone()
    return float(row[0]) if row is not None else None


def mark_swept(conn: sqlite3.Connection, now: float) -> None:
    conn.execute(
        "INSERT INTO registry_state (key, value) VALUES ('last_sweep', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (now,),
    )


CREDITED = (("nodes", "last_seen"), ("groups", "last_alive"), ("groups", "last_live_at"))
"""The signs of life an outage's credit moves (table, column)."""


def credit_outage(conn: sqlite3.Connection, now: float, gap: float, cause: str) -> None:
    """Move every sign of life forward by the outage's ``gap`` seconds, none beyond ``now``.

    The outage began after the last sweep (``now - gap``), at most a sweep interval later;
    a sign recorded in between was heard just before it, so it lands at ``now``. Crediting
    only the older ones left a group whose host and members had all spoken in that last
    interval (likely when the kill comes just before a sweep) a whole outage old."""
    params = {"gap": gap, "now": now}
    for table, column in CREDITED:
        conn.execute(
            f"UPDATE {table} SET {column} = CASE WHEN {column} + :gap > :now THEN :now "
            f"ELSE {column} + :gap END WHERE {column} < :now",
            params,
        )
    event(conn, "registry_resumed", now, away_s=round(gap, 3), cause=cause)


def credit_restart(conn: sqlite3.Connection, now: float, least: float) -> float:
    """At open: credit the time since the last sweep a previous process made (0 if none)."""
    before = last_sweep(conn)
    gap = now - before if before is not None else 0.0
    if gap < least:
        return 0.0
    credit_outage(conn, now, gap, "restart")
    mark_swept(conn, now)
    return gap


# -- self-preservation ----------------------------------------------------------------------


def measure(conn: sqlite3.Connection, now: float, node_ttl: float, watch: Watch) -> Watch:
    """Count the nodes lost within one node TTL (while preserving: those counted when it
    started, and any lost since)."""
    live_cut = now - node_ttl
    base_cut = now - 2 * node_ttl
    if watch.preserving_since is not None:
        base_cut = watch.preserving_since - 2 * node_ttl
    if watch.ended_at is not None:
        base_cut = max(base_cut, watch.ended_at)
    live, lost = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN last_seen >= :live THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN last_seen < :live AND last_seen >= :base THEN 1 ELSE 0 END), 0)"
        " FROM nodes",
        {"live": live_cut, "base": base_cut},
    ).fetchone()
    return replace(watch, lost=int(lost), counted=int(live) + int(lost))


def step(conn: sqlite3.Connection, now: float, watch: Watch, policy: Preservation) -> Watch:
    """Start or end self-preservation on the measured loss (each with its event)."""
    alarming = watch.lost >= policy.min_lost and watch.share > policy.threshold
    since = watch.preserving_since
    if since is None and alarming:
        event(conn, "self_preservation_started", now, lost=watch.lost, of=watch.counted)
        logger.warning("self-preservation: %d of %d nodes lost", watch.lost, watch.counted)
        return replace(watch, preserving_since=now)
    if since is None:
        return watch
    over = now - since >= policy.max_s
    if alarming and not over:
        return watch
    reason = "bound" if alarming else "recovered"
    event(conn, "self_preservation_ended", now, reason=reason, lasted_s=round(now - since, 3))
    logger.warning("self-preservation ended (%s) after %.0f s", reason, now - since)
    return replace(watch, preserving_since=None, ended_at=now)


def frozen_ttls(ttls: Ttls, now: float, watch: Watch) -> Ttls:
    """The TTLs stretched so that their cuts stay put while preserving: nodes alive within
    two node TTLs of its start (those whose loss started it, too) and groups alive at its
    start stay alive."""
    if watch.preserving_since is None:
        return ttls
    held = now - watch.preserving_since
    return (2 * ttls[0] + held, ttls[1] + held)


# -- members vouch for their group ----------------------------------------------------------


def vouch(conn: sqlite3.Connection, now: float, group_id: int, alive_cut: float) -> bool:
    """True (and the group's ``last_alive`` refreshed) when a majority of its live members,
    admitted where the group admits, report a round beyond the last one it showed."""
    group = conn.execute(
        "SELECT CASE WHEN certificate IS NOT NULL THEN 1 ELSE 0 END, "
        "CASE WHEN COALESCE(round, -1) > COALESCE(vouched_round, -1) THEN COALESCE(round, -1) "
        "ELSE COALESCE(vouched_round, -1) END FROM groups WHERE id = ?",
        (group_id,),
    ).fetchone()
    admits, floor = group
    live, ahead, top = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN round > :floor AND (:admits = 0 OR ("
        "admitted_group = group_id AND admitted_key = public_key)) THEN 1 ELSE 0 END), 0), "
        "MAX(round) "
        "FROM nodes WHERE group_id = :g AND last_seen >= :cut",
        {"floor": floor, "admits": admits, "g": group_id, "cut": alive_cut},
    ).fetchone()
    if not live or 2 * ahead <= live:
        return False
    conn.execute(
        "UPDATE groups SET last_alive = ?, vouched_round = ? WHERE id = ?", (now, top, group_id)
    )
    return True


# -- the sweep ------------------------------------------------------------------------------


def sweep(conn: sqlite3.Connection, now: float, job: SweepJob) -> Swept:
    """Credit an outage, update self-preservation, then fail groups silent for group_ttl
    that their members do not vouch for, and dissolve groups without a live member as long."""
    credited = job.late_s if job.late_s > 0 else 0.0
    if credited:
        credit_outage(conn, now, credited, "late sweep")
    watch = step(conn, now, measure(conn, now, job.ttls[0], job.watch), job.policy)
    node_ttl, group_ttl = frozen_ttls(job.ttls, now, watch)
    failed, vouched = _fail_silent(conn, now, (node_ttl, group_ttl), job.vouch_max_s)
    cut = now - group_ttl
    empty = [
        r[0]
        for r in conn.execute(
            "SELECT g.id FROM groups g WHERE g.status != 'dissolved' AND g.last_live_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.group_id = g.id "
            "AND n.last_seen >= ?)",
            (cut, cut - node_ttl),
        )
    ]
    dissolved = tuple((g, tuple(dissolve(conn, now, g, "no live member"))) for g in empty)
    mark_swept(conn, now)
    return Swept(tuple(failed), dissolved, tuple(vouched), watch, credited)


def _fail_silent(
    conn: sqlite3.Connection, now: float, ttls: Ttls, vouch_max_s: float
) -> tuple[list[int], list[int]]:
    """Fail active groups with no sign of life for group_ttl; returns (failed, vouched).

    Members are asked from half the TTL on, so that a group they keep never shows as not
    alive (nor drops out of discovery) while its host is silent."""
    node_ttl, group_ttl = ttls
    silent = conn.execute(
        "SELECT id, last_report, last_alive FROM groups WHERE status = 'active' AND last_alive < ?",
        (now - group_ttl / 2,),
    ).fetchall()
    failed: list[int] = []
    vouched: list[int] = []
    for group_id, last_report, last_alive in silent:
        # The last vouch keeps it one TTL more: it fails within vouch_max_s of its host.
        vouchable = now - last_report + group_ttl <= vouch_max_s
        if vouchable and vouch(conn, now, group_id, now - node_ttl):
            vouched.append(group_id)
            continue
        if last_alive >= now - group_ttl:
            continue
        conn.execute("UPDATE groups SET status = 'failed' WHERE id = ?", (group_id,))
        silent_for = round(now - last_alive, 3)
        event(conn, "group_failed", now, group_id=group_id, silent_for=silent_for)
        failed.append(group_id)
    return failed, vouched
