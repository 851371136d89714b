"use strict";
// Home page: open a build by id; the builds this deployment watches now, live.
//
// The list is re-read from /api/v1/watched every REFRESH_MS (the gateway answers from memory:
// it costs the upstream nothing). The page deliberately opens no stream: a stream would make
// it a viewer of every build it lists, and so keep them all watched (listed) for as long as
// it stays open. Rows are updated in place, keyed by build id; texts go in as text only.

(() => {
  const REFRESH_MS = Number(window.BUILDCAST_HOME_REFRESH_MS ?? 2000);
  const ACTIVE = new Set(["BuildRequestReceived", "BuildRequestPlanning", "BuildRequestExecuting"]);
  const body = document.getElementById("watched");
  const notice = document.getElementById("gateway");
  const note = document.getElementById("watched-note");
  const rows = new Map();  // build id -> {tr, status, stale, ok, err, counts, viewers, updated, key}

  document.getElementById("open").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("build-id").value.trim();
    if (id) location.href = `/builds/${encodeURIComponent(id)}`;
  });

  function ago(ms) {
    if (!Number.isFinite(ms)) return "—";
    const s = Math.floor((Date.now() - ms) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ago`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h} h ago` : `${Math.floor(h / 24)} d ago`;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function createRow(id) {
    const status = el("span", { class: "status-cell" });
    const stale = el("span", { class: "stale-flag", hidden: "" }, "stale");
    const ok = el("span", { class: "bar ok" });
    const err = el("span", { class: "bar err" });
    const bar = el("span", { class: "mini-progress", role: "progressbar", "aria-label": "Partitions available",
      "aria-valuemin": 0 }, ok, err);
    const counts = el("span", { class: "counts" });
    const viewers = el("td", { class: "viewers" });
    const updated = el("time", {});
    const tr = el("tr", { "data-build-id": id },
      el("td", {}, el("a", { href: `/builds/${encodeURIComponent(id)}`, class: "build-link" }, id)),
      el("td", {}, status, " ", stale),
      el("td", { class: "progress-cell" }, bar, counts),
      viewers,
      el("td", { class: "small" }, updated));
    return { tr, status, stale, bar, ok, err, counts, viewers, updated, key: null };
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
    row.ok.style.width = total ? `${(100 * available) / total}%` : "0";
    row.err.style.width = total ? `${(100 * failed) / total}%` : "0";
    row.bar.setAttribute("aria-valuemax", total);
    row.bar.setAttribute("aria-valuenow", available);
    setText(row.counts, `${available}/${total} available${failed ? `, ${failed} failed` : ""}`);
    setText(row.viewers, String(build.viewers ?? 0));
    setText(row.updated, ago(build.updatedAtMs));
    if (Number.isFinite(build.updatedAtMs)) row.updated.dateTime = new Date(build.updatedAtMs).toISOString();
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

  async function refresh() {
    try {
      const response = await fetch("/api/v1/watched", { cache: "no-store", signal: AbortSignal.timeout(8000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const { builds } = await response.json();
      render(Array.isArray(builds) ? builds : []);
      notice.hidden = true;
      document.body.classList.remove("unreachable");
    } catch (error) {
      // The last list stays, dimmed, under the notice: it is what was true a moment ago.
      setText(notice, `Gateway unreachable (${error.name === "TimeoutError" ? "no answer" : error.message}). `
        + "The list below may be out of date; retrying…");
      notice.hidden = false;
      document.body.classList.add("unreachable");
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
})();
