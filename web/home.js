"use strict";
// Home page: open a build by id; the builds this deployment watches now.

document.getElementById("open").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("build-id").value.trim();
  if (id) location.href = `/builds/${encodeURIComponent(id)}`;
});

async function refreshWatched() {
  const body = document.getElementById("watched");
  try {
    const response = await fetch("/api/v1/watched");
    const { builds } = await response.json();
    const rows = builds.map((b) => el("tr", {},
      el("td", {}, el("a", { href: `/builds/${encodeURIComponent(b.buildId)}` }, b.buildId)),
      el("td", {}, badge(b.status)),
      el("td", {}, `${b.partitions.available}/${b.partitions.total} available`
        + (b.partitions.failed ? `, ${b.partitions.failed} failed` : "")),
      el("td", {}, b.viewers)));
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 4, class: "small" }, "No build is watched right now."))]));
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "small" }, "Gateway unreachable.")));
  }
}

refreshWatched();
setInterval(refreshWatched, 5000);
