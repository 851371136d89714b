"use strict";
// Home page: open a build by id; the builds this deployment watches now, live; and the ones
// it watched lately (the last 24 h, with their last stored state), so a build that ended while
// nobody looked is still one click away, a failed one marked as such.
//
// Both lists are re-read every REFRESH_MS, from /api/v1/watched and /api/v1/recent (the
// gateway answers from memory or Redis: it costs the upstream nothing). The page deliberately
// opens no stream: a stream would make it a viewer of every build it lists, and so keep them
// all watched (listed) for as long as it stays open. Rows are updated in place, keyed by build
// id; texts go in as text only. A gateway that wants a (new) access token is said, and no
// longer asked.

(() => {
  const REFRESH_MS = numberOr(window.BUILDCAST_HOME_REFRESH_MS, 2000);
  const notice = document.getElementById("gateway");
  const note = document.getElementById("watched-note");
  const recentNote = document.getElementById("recent-note");
  // Each list: its body, its rows (build id -> {tr, status, stale, meter, counts, last,
  // updated, key}), what its fourth column says (viewers; when last watched), whether a "last
  // change" column follows, and what it says when empty.
  const watchedList = { body: document.getElementById("watched"), rows: new Map(),
    last: (build) => String(build.viewers ?? 0), lastClass: "viewers", changed: true,
    empty: "No build is watched right now." };
  const recentList = { body: document.getElementById("recent"), rows: new Map(),
    last: (build) => formatAgo(build.lastWatchedAtMs), lastClass: "small watched-at", changed: false,
    empty: "No other build was watched in the last 24 hours." };

  document.getElementById("open").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("build-id").value.trim();
    if (id) location.href = `/builds/${encodeURIComponent(id)}`;
  });

  function createRow(id, list) {
    const status = el("span", { class: "status-cell" });
    const stale = el("span", { class: "stale-flag", hidden: "" }, "stale");
    const meter = progressBar("span", "mini-progress");
    const counts = el("span", { class: "counts" });
    const last = el("td", { class: list.lastClass });
    const updated = el("time", {});
    const tr = el("tr", { "data-build-id": id },
      el("td", {}, el("a", { href: `/builds/${encodeURIComponent(id)}`, class: "build-link" }, id)),
      el("td", {}, status, " ", stale),
      el("td", { class: "progress-cell" }, meter.bar, counts),
      last, list.changed ? el("td", { class: "small" }, updated) : null);
    return { tr, status, stale, meter, counts, last, updated, key: null };
  }

  function updateRow(row, build, list) {
    const status = typeof build.status === "string" ? build.status : null;
    if (row.key !== status) {  // badge() builds a text badge: the status is its text, not a colour
      row.status.replaceChildren(badge(status));
      row.key = status;
    }
    row.stale.hidden = !build.stale;
    row.stale.title = build.stale ? "the gateway cannot read this build upstream: the last good state" : "";
    const p = build.partitions || {};
    const total = Number(p.total) || 0;
    const available = Number(p.available) || 0;
    const failed = Number(p.failed) || 0;
    setProgress(row.meter, { total, available, failed });
    setText(row.counts, `${available}/${total} available${failed ? `, ${failed} failed` : ""}`);
    setText(row.last, list.last(build));
    setText(row.updated, formatAgo(build.updatedAtMs));
    if (Number.isFinite(build.updatedAtMs)) row.updated.dateTime = isoTime(build.updatedAtMs);
    row.tr.classList.toggle("ended", !ACTIVE.has(status));
    // A failure is marked by more than its badge's colour: the row's edge, and its title.
    row.tr.classList.toggle("failed", status === "BuildRequestFailed");
    row.tr.title = status === "BuildRequestFailed" ? "this build failed" : "";
  }

  /** Shows `builds` in `list` (the gateway's order), once each; returns how many it shows. */
  function render(list, builds) {
    const { body, rows } = list;
    const seen = new Set();
    const order = [];
    for (const build of builds) {
      if (typeof build?.buildId !== "string" || seen.has(build.buildId)) continue;
      seen.add(build.buildId);
      let row = rows.get(build.buildId);
      if (!row) {
        row = createRow(build.buildId, list);
        rows.set(build.buildId, row);
      }
      updateRow(row, build, list);
      order.push(row.tr);
    }
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    if (!order.length) {
      const columns = body.closest("table").tHead.rows[0].cells.length;
      order.push(el("tr", {}, el("td", { colspan: columns, class: "small" }, list.empty)));
    }
    // Rebuild the body only when its rows or their order changed: a link under the pointer stays.
    const current = [...body.children];
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) {
      body.replaceChildren(...order);
    }
    return seen.size;
  }

  function renderBoth([watched, recent]) {
    render(watchedList, watched);
    const running = watched.filter((b) => ACTIVE.has(b?.status)).length;
    setText(note, watched.length ? `${watched.length} watched, ${running} running` : "");
    // Watched lately: the builds of the last day not in the list above, newest first.
    const now = new Set(watched.map((b) => b?.buildId));
    const lately = recent.filter((b) => !now.has(b?.buildId));
    const shown = render(recentList, lately);
    const failed = lately.filter((b) => b?.status === "BuildRequestFailed").length;
    setText(recentNote, shown ? `${shown} in the last 24 h${failed ? `, ${failed} failed` : ""}` : "");
  }

  async function fetchRecent() {
    const { builds } = await fetchJson("/api/v1/recent");
    return Array.isArray(builds) ? builds : [];
  }

  // One after the other: a gateway that refuses the first (a token it wants) is asked no more.
  keepShowing(async () => [await fetchWatched(), await fetchRecent()], renderBoth, notice, REFRESH_MS);
})();
