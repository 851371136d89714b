"use strict";
// The status page: every replica of the deployment, and for every watched build which replica
// polls it, how often, when it last did and how old its data is (GET /api/v1/status, re-read
// every REFRESH_MS: the gateway answers from what the replicas report, not the upstream).
// Rows are rebuilt from the answer each time; every text goes in as text.

(() => {
  const REFRESH_MS = numberOr(window.BUILDCAST_STATUS_REFRESH_MS, 2000);
  const replicasBody = document.getElementById("replicas");
  const buildsBody = document.getElementById("builds");

  function seconds(value) {
    return Number.isFinite(value) ? `${value.toLocaleString()} s` : "—";
  }

  function row(cells, attrs = {}) {
    return el("tr", attrs, ...cells.map((cell) => el("td", {}, cell)));
  }

  function empty(text, span) {
    return el("tr", {}, el("td", { colspan: span, class: "small" }, text));
  }

  function render({ replicas = [], builds = [], redis = {} }) {
    const now = Date.now();
    replicasBody.replaceChildren(...(replicas.length ? replicas.map((r) => row([
      el("span", { class: "mono" }, r.id), r.host, r.pid,
      formatDuration(now - (r.startedAtMs ?? now)), r.connections ?? 0, r.pollers ?? 0,
    ], { "data-replica": r.id })) : [empty("No replica reported yet.", 6)]));
    buildsBody.replaceChildren(...(builds.length ? builds.map((b) => row([
      el("a", { href: `/builds/${encodeURIComponent(b.buildId)}`, class: "build-link" }, b.buildId),
      b.owner ? el("span", { class: "mono" }, b.owner) : "nobody yet",
      seconds(b.pollInterval),
      formatAgo(b.lastPollAtMs, now),
      (b.dataAgeMs === null || b.dataAgeMs === undefined ? "—" : formatDuration(b.dataAgeMs))
        + (b.stale ? " (stale)" : ""),
      b.viewers ?? 0,
    ], { "data-build-id": b.buildId, class: b.stale ? "stale" : "" })) : [empty("No build is watched right now.", 6)]));
    const polled = builds.filter((b) => b.owner).length;
    setText(document.getElementById("builds-note"),
      builds.length ? `${builds.length} watched, ${polled} polled` : "");
    setText(document.getElementById("redis"), redis.mode === "none"
      ? "one replica, no Redis" : `Redis (${redis.mode}): ${redis.up ? "up" : "down"}`);
  }

  keepShowing(() => fetchJson("/api/v1/status"), render, document.getElementById("gateway"),
    REFRESH_MS);
})();
