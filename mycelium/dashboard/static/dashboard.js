// Mycelium Net dashboard: a read-only live view of one registry.
//
// It opens from one snapshot (GET dashboard/snapshot: groups, nodes, the last events, the
// nodes' histories, the migration count, up to last_event_id), then follows one
// server-sent event stream (events/stream?after=last_event_id) with the events after it
// (resumed with Last-Event-ID by the browser after a drop), a "caught-up" marker, and
// "state" messages (groups and nodes) whenever they changed. The only other requests are
// GET groups/{id} once per group, for the accuracy of its recent rounds.
// Every URL is relative to the page. Text from the registry goes in with textContent only.
"use strict";

(() => {
  const FEED_ROWS = 200; // the snapshot's default number of recent events
  const RETRY_MS = 2000;
  const CURVE_POINTS = 30;
  const MOVE_SHOWN_MS = 12000;
  const MOVE_MS = 900;
  const CELL_WIDTH = 250; // least width of a column of groups (a group label is cut at 230)
  const CELL_HEIGHT = 170; // least height of a row of groups
  const LOOSE_GAP = 60; // between nodes without a group

  const model = {
    groups: new Map(), // group_id -> public group fields
    nodes: new Map(), // node_id -> public node fields
    nodeNames: new Map(), // from node_registered events, so deleted nodes keep a name
    groupNames: new Map(),
    history: new Map(), // node_id -> [event]
    curves: new Map(), // group_id -> {rounds: [], accuracy: []}
    migrations: 0,
    lastId: 0,
    live: false,
    selected: null,
  };
  const plots = new Map(); // group_id -> uPlot
  const rows = new Map(); // group_id -> <tr>
  const detailsAsked = new Set();
  let cy = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  const fmt = (x, digits = 3) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
  const signed = (x) => (x === null || x === undefined ? "-" : (x >= 0 ? "+" : "") + Number(x).toFixed(3));
  const clock = (at) => new Date(at * 1000).toLocaleTimeString([], { hour12: false });
  const nodeName = (id) => (id === null || id === undefined ? "?" : model.nodes.get(id)?.name ?? model.nodeNames.get(id) ?? `node ${id}`);
  const groupName = (id) => {
    if (id === null || id === undefined) return "no group";
    const name = model.groups.get(id)?.name ?? model.groupNames.get(id);
    return name ? `${name} (#${id})` : `group #${id}`;
  };

  // Red (0.5 and below) to green (1.0); grey when unknown.
  function accuracyColour(acc) {
    if (acc === null || acc === undefined) return "#9e9e9e";
    const t = Math.max(0, Math.min(1, (acc - 0.5) / 0.5));
    const mix = (a, b) => Math.round(a + (b - a) * t);
    return `rgb(${mix(211, 46)}, ${mix(84, 157)}, ${mix(63, 87)})`;
  }

  // ---------------------------------------------------------------- the map
  function makeMap() {
    cy = cytoscape({
      container: $("map"),
      autoungrabify: true,
      boxSelectionEnabled: false,
      minZoom: 0.2,
      maxZoom: 2.5,
      style: [
        { selector: "node.group", style: {
          shape: "round-rectangle", "background-color": "#edf5ec", "border-color": "#5b8c5a",
          "border-width": 2, label: "data(label)", "text-valign": "top", "text-halign": "center",
          "font-size": 14, "font-weight": 600, color: "#213821", padding: 22,
          "text-wrap": "ellipsis", "text-max-width": 230,
          "min-width": 70, "min-height": 50 } },
        { selector: "node.group.failed", style: {
          "border-color": "#b03a2e", "border-style": "dashed", "background-color": "#fbecea" } },
        { selector: "node.member", style: {
          width: 28, height: 28, "background-color": "data(colour)", label: "data(label)",
          "font-size": 12, "text-valign": "bottom", "text-margin-y": 4, color: "#1d2a1d",
          "text-wrap": "ellipsis", "text-max-width": 72,
          "border-width": 1, "border-color": "#ffffff" } },
        { selector: "node.member.dead", style: { opacity: 0.35 } },
        { selector: "node.member.moved", style: { "border-width": 5, "border-color": "#d35400" } },
        { selector: "node.member:selected", style: { "border-width": 4, "border-color": "#1f4fa0" } },
        { selector: "edge.move", style: {
          width: 2, "line-style": "dashed", "line-color": "#d35400", "curve-style": "bezier",
          "target-arrow-shape": "triangle", "target-arrow-color": "#d35400",
          label: "data(label)", "font-size": 13, "font-weight": 700, color: "#8a3a00",
          "text-background-color": "#ffffff", "text-background-opacity": 0.85,
          "text-background-padding": 2 } },
      ],
    });
    cy.on("tap", "node.member", (e) => select(e.target.data("nodeId")));
    cy.on("tap", (e) => { if (e.target === cy) select(null); });
  }

  function visibleGroups() {
    return [...model.groups.values()]
      .filter((g) => g.status !== "dissolved")
      .sort((a, b) => a.group_id - b.group_id);
  }

  // Target positions: groups on a grid, each group's members on a ring around its centre,
  // nodes without a group in rows underneath. Each column is as wide and each row as tall
  // as its largest group's box needs (and a column at least as wide as a cut group label),
  // so boxes never overlap and small groups take little room.
  const ring = (count) => (count < 2 ? 0 : 30 + 8 * count);
  const offsets = (sizes) => sizes.map((size, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0) + size / 2);

  function positions() {
    const groups = visibleGroups();
    const cols = Math.max(1, Math.ceil(Math.sqrt(groups.length)));
    const members = new Map(groups.map((g) => [g.group_id, []]));
    const loose = [];
    for (const n of [...model.nodes.values()].sort((a, b) => a.node_id - b.node_id)) {
      if (members.has(n.group_id)) members.get(n.group_id).push(n);
      else loose.push(n);
    }
    const widths = new Array(Math.min(cols, groups.length)).fill(CELL_WIDTH);
    const heights = new Array(Math.ceil(groups.length / cols)).fill(CELL_HEIGHT);
    groups.forEach((g, i) => {
      const span = 2 * ring(members.get(g.group_id).length) + 150; // box, labels, a gap
      widths[i % cols] = Math.max(widths[i % cols], span);
      heights[Math.floor(i / cols)] = Math.max(heights[Math.floor(i / cols)], span);
    });
    const xs = offsets(widths);
    const ys = offsets(heights);
    const centres = new Map();
    groups.forEach((g, i) => centres.set(g.group_id, { x: xs[i % cols], y: ys[Math.floor(i / cols)] }));
    const at = new Map();
    for (const [gid, list] of members) {
      const c = centres.get(gid);
      const r = ring(list.length);
      list.forEach((n, k) => {
        const a = (2 * Math.PI * k) / list.length - Math.PI / 2;
        at.set(n.node_id, { x: c.x + r * Math.cos(a), y: c.y + r * Math.sin(a) });
      });
    }
    const below = heights.reduce((a, b) => a + b, 0) + 30;
    const perRow = Math.max(8, Math.floor(widths.reduce((a, b) => a + b, 0) / LOOSE_GAP));
    loose.forEach((n, k) => at.set(n.node_id, { x: 30 + (k % perRow) * LOOSE_GAP, y: below + Math.floor(k / perRow) * LOOSE_GAP }));
    return { centres, at };
  }

  function syncMap(animate) {
    const { centres, at } = positions();
    cy.batch(() => {
      for (const g of visibleGroups()) {
        const id = `g${g.group_id}`;
        let node = cy.getElementById(id);
        if (node.empty()) {
          node = cy.add({ group: "nodes", data: { id, groupId: g.group_id }, classes: "group" });
        }
        node.data("label", `${g.name} #${g.group_id}  ${fmt(g.accuracy)}`);
        node.toggleClass("failed", g.status === "failed");
      }
      for (const n of model.nodes.values()) {
        const id = `n${n.node_id}`;
        const parent = centres.has(n.group_id) ? `g${n.group_id}` : null;
        let node = cy.getElementById(id);
        if (node.empty()) {
          node = cy.add({ group: "nodes", data: { id, nodeId: n.node_id, parent }, classes: "member", position: at.get(n.node_id) });
        } else if ((node.data("parent") ?? null) !== parent) {
          node = node.move({ parent });
        }
        node.data({ label: n.name, colour: accuracyColour(n.accuracy) });
        node.toggleClass("dead", !n.alive);
        if (model.selected === n.node_id) node.select();
      }
      cy.nodes(".member").filter((e) => !model.nodes.has(e.data("nodeId"))).remove();
      cy.nodes(".group").filter((e) => !centres.has(e.data("groupId"))).remove();
    });
    cy.nodes(".member").forEach((node) => {
      const target = at.get(node.data("nodeId"));
      if (!target) return;
      if (animate) node.animate({ position: target }, { duration: MOVE_MS, easing: "ease-in-out-cubic" });
      else node.position(target);
    });
    cy.nodes(".group").forEach((node) => {
      if (node.isChildless()) node.position(centres.get(node.data("groupId")));
    });
    if (!animate) cy.fit(undefined, 30);
    else fitAfterMoves();
  }

  // Fit the view once the nodes have arrived (boxes grow and shrink as members move).
  let fitTimer = null;
  function fitAfterMoves() {
    clearTimeout(fitTimer);
    fitTimer = setTimeout(() => {
      fitTimer = null;
      cy.animate({ fit: { eles: cy.elements(), padding: 30 } }, { duration: 400 });
    }, MOVE_MS + 50);
  }

  // Whether the map is still moving (nodes, or the view about to be fitted).
  const moving = () => fitTimer !== null || cy.animated() || cy.nodes().some((n) => n.animated());

  // A migration seen live: the node moves (syncMap animates it) and an arrow from the
  // group it left carries the gain it measured, for a few seconds.
  function showMove(event) {
    const d = event.data || {};
    const node = cy.getElementById(`n${event.node_id}`);
    const from = cy.getElementById(`g${d.from_group_id}`);
    if (node.empty()) return;
    node.addClass("moved");
    let edge = null;
    if (!from.empty()) {
      edge = cy.add({ group: "edges", data: { source: from.id(), target: node.id(), label: `gain ${signed(d.expected_gain)}` }, classes: "move" });
    }
    setTimeout(() => {
      node.removeClass("moved");
      if (edge) edge.remove();
    }, MOVE_SHOWN_MS);
  }

  // ---------------------------------------------------------------- groups table
  function curveOf(gid) {
    if (!model.curves.has(gid)) model.curves.set(gid, { rounds: [], accuracy: [] });
    return model.curves.get(gid);
  }

  function addPoint(g) {
    if (g.round === null || g.accuracy === null) return;
    const c = curveOf(g.group_id);
    const last = c.rounds[c.rounds.length - 1];
    if (last === g.round) return;
    if (last !== undefined && g.round > last + 1) askDetail(g.group_id, true); // fill the gap
    c.rounds.push(g.round);
    c.accuracy.push(g.accuracy);
    if (c.rounds.length > CURVE_POINTS) { c.rounds.shift(); c.accuracy.shift(); }
  }

  async function askDetail(gid, again = false) {
    if (detailsAsked.has(gid) && !again) return;
    detailsAsked.add(gid);
    try {
      const r = await fetch(`groups/${gid}`, { headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const detail = await r.json();
      const recent = (detail.rounds || []).slice(-CURVE_POINTS);
      if (recent.length === 0) return;
      model.curves.set(gid, { rounds: recent.map((p) => p.round), accuracy: recent.map((p) => p.accuracy) });
      drawCurve(gid);
    } catch (err) {
      console.warn("group detail", gid, err);
    }
  }

  function drawCurve(gid) {
    const row = rows.get(gid);
    if (!row) return;
    const c = curveOf(gid);
    const xs = c.accuracy.map((_, i) => i);
    const data = [xs, c.accuracy.slice()];
    let plot = plots.get(gid);
    if (!plot) {
      plot = new uPlot({
        width: 124, height: 30, cursor: { show: false }, legend: { show: false },
        select: { show: false }, axes: [{ show: false }, { show: false }],
        scales: { x: { time: false }, y: { range: [0, 1] } },
        series: [{}, { stroke: "#2e7d32", width: 1.5, points: { show: false } }],
      }, data, row.querySelector("td.curve"));
      plots.set(gid, plot);
    } else {
      plot.setData(data);
    }
  }

  function renderGroups() {
    const body = $("groups").tBodies[0];
    const ordered = [...model.groups.values()].sort((a, b) =>
      (a.status === "dissolved") - (b.status === "dissolved") || a.group_id - b.group_id);
    for (const g of ordered) {
      let row = rows.get(g.group_id);
      if (!row) {
        row = el("tr");
        row.dataset.groupId = g.group_id;
        for (const cls of ["name", "task", "members num", "policy", "round num", "accuracy num", "curve", "status"]) row.append(el("td", null, cls));
        rows.set(g.group_id, row);
        askDetail(g.group_id);
      }
      const cells = row.cells;
      cells[0].textContent = `${g.name} #${g.group_id}`;
      cells[0].title = cells[0].textContent; // the whole name when the cell cuts it
      cells[1].textContent = g.task;
      cells[2].textContent = `${g.num_members} / ${g.max_capacity}`;
      cells[3].textContent = g.join_policy;
      cells[4].textContent = g.round ?? "-";
      cells[5].textContent = fmt(g.accuracy);
      cells[7].textContent = g.status === "active" && !g.alive ? "not reporting" : g.status;
      row.className = g.status;
      body.append(row); // keeps the order
      drawCurve(g.group_id);
    }
  }

  // ---------------------------------------------------------------- node panel
  function select(nodeId) {
    model.selected = nodeId;
    cy.nodes(":selected").unselect();
    if (nodeId !== null) cy.getElementById(`n${nodeId}`).select();
    renderNode();
  }

  function describeMove(e) {
    const d = e.data || {};
    switch (e.type) {
      case "joined": return `joined ${groupName(e.group_id)}`;
      case "left": return `left ${groupName(e.group_id)}`;
      case "evicted": return `evicted from ${groupName(e.group_id)} (${d.reason ?? ""})`;
      case "migrated": return `moved ${groupName(d.from_group_id)} \u2192 ${groupName(d.to_group_id)}`;
      case "node_registered": return "registered";
      case "node_deleted": return "left the network";
      default: return e.type;
    }
  }

  function renderNode() {
    const box = $("node-detail");
    box.replaceChildren();
    const id = model.selected;
    const n = id === null ? null : model.nodes.get(id);
    if (!n) {
      box.append(el("p", "Click a node on the map.", "hint"));
      return;
    }
    box.dataset.nodeId = id;
    const dl = el("dl");
    const add = (k, v) => dl.append(el("dt", k), el("dd", v));
    add("node", `${n.name} (#${n.node_id})`);
    dl.lastElementChild.title = dl.lastElementChild.textContent;
    add("group", groupName(n.group_id));
    add("accuracy", fmt(n.accuracy)); // its group's model (or its local one) on its validation data
    add("personal", fmt(n.personal_accuracy)); // what it predicts with, on its own test data
    add("round", n.round ?? "-");
    add("task", n.task);
    add("alive", n.alive ? "yes" : "no");
    box.append(dl, el("h3", "History"));
    const scroll = el("div", null, "history-box");
    const table = el("table");
    table.className = "history";
    table.append(headRow(["time", "what", "gain", "reason"]));
    for (const e of model.history.get(id) || []) {
      const tr = el("tr");
      tr.dataset.type = e.type;
      const gain = e.type === "migrated" ? signed(e.data.expected_gain) : "";
      tr.append(el("td", clock(e.at)), el("td", describeMove(e)), el("td", gain, "gain"), el("td", e.type === "migrated" ? e.data.reason : ""));
      table.append(tr);
    }
    scroll.append(table);
    box.append(scroll);
  }

  function headRow(names) {
    const tr = el("tr");
    for (const name of names) tr.append(el("th", name));
    return tr;
  }

  // ---------------------------------------------------------------- event feed
  function describe(e) {
    const d = e.data || {};
    const who = nodeName(e.node_id);
    switch (e.type) {
      case "node_registered": return `${d.name ?? who} registered (${d.task ?? ""})`;
      case "node_deleted": return `${who} left the network`;
      case "group_created": return `${groupName(e.group_id)} founded` + (d.by_node_id ? ` by ${nodeName(d.by_node_id)}` : "");
      case "joined": return `${who} joined ${groupName(e.group_id)}`;
      case "left": return `${who} left ${groupName(e.group_id)}`;
      case "migrated": return `${who} migrated ${groupName(d.from_group_id)} \u2192 ${groupName(d.to_group_id)}, gain ${signed(d.expected_gain)}` + (d.reason ? ` (${d.reason})` : "");
      case "evicted": return `${who} evicted from ${groupName(e.group_id)} (${d.reason ?? ""})`;
      case "dissolved": return `${groupName(e.group_id)} dissolved (${d.reason ?? ""})`;
      case "group_failed": return `${groupName(e.group_id)} failed (silent for ${d.silent_for ?? "?"} s)`;
      case "registry_resumed": return `registry back after ${d.away_s ?? "?"} s away (${d.cause ?? ""}): that silence is not counted`;
      case "self_preservation_started": return `self-preservation: ${d.lost} of ${d.of} nodes went silent at once; nothing expires`;
      case "self_preservation_ended": return `self-preservation ended (${d.reason ?? ""}) after ${d.lasted_s ?? "?"} s`;
      default: return e.type;
    }
  }

  function feedItem(e) {
    const li = el("li");
    li.dataset.id = e.id;
    li.dataset.type = e.type;
    li.append(el("span", clock(e.at), "time"), el("span", e.type, `badge ${e.type}`), el("span", describe(e), "text"));
    return li;
  }

  function prepend(items) {
    const feed = $("feed");
    for (const li of items) feed.prepend(li);
    while (feed.children.length > FEED_ROWS) feed.lastElementChild.remove();
  }

  // ---------------------------------------------------------------- applying the stream
  const pending = []; // events read before caught-up, shown all at once
  // The events of a node's history (the snapshot's history holds the same types).
  const HISTORY_TYPES = ["node_registered", "node_deleted", "joined", "left", "migrated", "evicted"];

  function addHistory(e) {
    if (!model.history.has(e.node_id)) model.history.set(e.node_id, []);
    model.history.get(e.node_id).push(e);
  }

  function applyEvent(e) {
    if (e.id <= model.lastId) return; // already seen (a resumed stream starts after it)
    model.lastId = e.id;
    const d = e.data || {};
    if (e.type === "node_registered") model.nodeNames.set(e.node_id, d.name);
    if (e.type === "group_created") model.groupNames.set(e.group_id, d.name);
    if (e.type === "migrated") model.migrations += 1;
    if (e.type.startsWith("self_preservation_")) showPreservation(e);
    if (e.node_id !== null && HISTORY_TYPES.includes(e.type)) addHistory(e);
    if (!model.live) {
      pending.push(e);
      return;
    }
    const node = model.nodes.get(e.node_id);
    if (node && ["joined", "migrated"].includes(e.type)) node.group_id = e.group_id;
    if (node && ["left", "evicted"].includes(e.type)) node.group_id = null;
    const li = feedItem(e);
    li.classList.add("fresh");
    setTimeout(() => li.classList.remove("fresh"), MOVE_SHOWN_MS);
    prepend([li]);
    syncMap(true);
    if (e.type === "migrated") showMove(e);
    if (model.selected === e.node_id) renderNode();
    renderSummary();
  }

  function applyState(state) {
    const firstState = model.groups.size === 0 && model.nodes.size === 0;
    model.groups = new Map(state.groups.map((g) => [g.group_id, g]));
    model.nodes = new Map(state.nodes.map((n) => [n.node_id, n]));
    for (const g of model.groups.values()) addPoint(g);
    renderGroups();
    syncMap(!firstState);
    if (model.selected !== null) renderNode();
    renderSummary();
  }

  function caughtUp() {
    if (model.live) return;
    model.live = true;
    prepend(pending.splice(0).map(feedItem));
    renderSummary();
  }

  // The stream does not know the id the page follows from (the registry has another
  // database now): forget everything and open again from a new snapshot.
  function reset() {
    source.close();
    for (const plot of plots.values()) plot.destroy();
    for (const map of [plots, rows, model.history, model.nodeNames, model.groupNames, model.curves]) map.clear();
    detailsAsked.clear();
    model.groups = new Map();
    model.nodes = new Map();
    model.lastId = 0;
    model.migrations = 0;
    model.live = false;
    pending.length = 0;
    $("feed").replaceChildren();
    $("groups").tBodies[0].replaceChildren();
    $("preservation").hidden = true;
    openFromSnapshot();
  }

  // The banner follows the log: the last self_preservation_* event says whether it holds.
  function showPreservation(e) {
    const banner = $("preservation");
    banner.hidden = e.type !== "self_preservation_started";
    if (!banner.hidden) {
      const d = e.data || {};
      banner.textContent = `Self-preservation since ${clock(e.at)}: ${d.lost} of ${d.of} nodes went silent at once, so the registry expires no node and fails no group until heartbeats recover.`;
    }
  }

  function renderSummary() {
    const nodes = [...model.nodes.values()];
    const alive = nodes.filter((n) => n.alive).length;
    const groups = visibleGroups().length;
    $("summary").textContent = `${nodes.length} nodes (${alive} alive) \u00b7 ${groups} groups \u00b7 ${model.migrations} migration${model.migrations === 1 ? "" : "s"} \u00b7 last event #${model.lastId}`;
  }

  function setConnection(state) {
    const c = $("connection");
    c.textContent = state;
    c.className = `connection ${state}`;
  }

  // ---------------------------------------------------------------- opening
  // What the log showed up to the snapshot's last event; the stream brings the rest.
  function applySnapshot(s) {
    model.lastId = s.last_event_id;
    model.migrations = s.migrations;
    for (const [id, name] of Object.entries(s.node_names)) model.nodeNames.set(Number(id), name);
    for (const e of s.history) addHistory(e);
    if (s.preservation) showPreservation(s.preservation);
    applyState({ groups: s.groups, nodes: s.nodes });
    prepend(s.recent_events.map(feedItem));
  }

  let source = null;

  async function openFromSnapshot() {
    setConnection("connecting");
    let snapshot;
    try {
      const r = await fetch("dashboard/snapshot", { headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      snapshot = await r.json();
    } catch (err) {
      console.warn("snapshot", err);
      setConnection("reconnecting");
      setTimeout(openFromSnapshot, RETRY_MS);
      return;
    }
    applySnapshot(snapshot);
    connect(snapshot.last_event_id);
  }

  function connect(after) {
    source = new EventSource(`events/stream?after=${after}`);
    source.onopen = () => setConnection("live");
    source.onerror = () => setConnection("reconnecting");
    source.onmessage = (m) => applyEvent(JSON.parse(m.data));
    source.addEventListener("state", (m) => applyState(JSON.parse(m.data)));
    source.addEventListener("caught-up", () => caughtUp());
    source.addEventListener("reset", () => reset());
  }

  function start() {
    makeMap();
    // For the browser test and the console: what the map draws, read-only.
    window.myceliumDashboard = { cy, model, moving, streamUrl: () => source?.url };
    openFromSnapshot();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
