"use strict";
// Home page: open a build by id; the builds this deployment watches now, live.
//
// The list is re-read from /api/v1/watched every REFRESH_MS (the gateway answers from memory:
// it costs the upstream nothing). The page deliberately opens no stream: a stream would make
// it a viewer of every build it lists, and so keep them all watched (listed) for as long as
// it stays open. Rows are updated in place, keyed by build id; texts go in as text only.
// A gateway that wants a (new) access token is said, and no longer asked.

(() => {
  const REFRESH_MS = numberOr(window.BUILDCAST_HOME_REFRESH_MS, 2000);
  const body = document.getElementById("watched");
  const notice = document.getElementById("gateway");
  const note = document.getElementById("watched-note");
  const rows = new Map();  // build id -> {tr, status, stale, meter, counts, viewers, updated, key}

  document.getElementById("open").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("build-id").value.trim();
    if (id) location.href = `/builds/${encodeURIComponent(id)}`;
  });

  function createRow(id) {
    const status = el("span", { class: "status-cell" });
    const stale = el("span", { class: "stale-flag", hidden: "" }, "stale");
    const meter = progressBar("span", "mini-progress");
    const counts = el("span", { class: "counts" });
    const viewers = el("td", { class: "viewers" });
    const updated = el("time", {});
    const tr = el("tr", { "data-build-id": id },
      el("td", {}, el("a", { href: `/builds/${encodeURIComponent(id)}`, class: "build-link" }, id)),
      el("td", {}, status, " ", stale),
      el("td", { class: "progress-cell" }, meter.bar, counts),
      viewers,
      el("td", { class: "small" }, updated));
    return { tr, status, stale, meter, counts, viewers, updated, key: null };
  }

  function updateRow(row, build) {
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
    setText(row.viewers, String(build.viewers ?? 0));
    setText(row.updated, formatAgo(build.updatedAtMs));
    if (Number.isFinite(build.updatedAtMs)) row.updated.dateTime = isoTime(build.updatedAtMs);
    row.tr.classList.toggle("ended", !ACTIVE.has(status));
  }

  function render(builds) {
    const seen = new Set();
    const order = [];
    for (const build of builds) {
      if (typeof build?.buildId !== "string" || seen.has(build.buildId)) continue;
      seen.add(build.buildId);
      let row = rows.get(build.buildId);
      if (!row) {
        row = createRow(build.buildId);
        rows.set(build.buildId, row);
      }
      updateRow(row, build);
      order.push(row.tr);
    }
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    if (!order.length) {
      order.push(el("tr", {}, el("td", { colspan: 5, class: "small" }, "No build is watched right now.")));
    }
    // Rebuild the body only when its rows or their order changed: a link under the pointer stays.
    const current = [...body.children];
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) {
      body.replaceChildren(...order);
    }
    const running = builds.filter((b) => ACTIVE.has(b?.status)).length;
    setText(note, builds.length ? `${builds.length} watched, ${running} running` : "");
  }

  keepShowing(fetchWatched, render, notice, REFRESH_MS);
})();
