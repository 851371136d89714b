"use strict";
// The live build page: one EventSource, snapshot then deltas applied in order (PROTOCOL.md).

const buildId = decodeURIComponent(location.pathname.replace(/^\/builds\//, ""));
const streamUrl = `/api/v1/builds/${encodeURIComponent(buildId)}/stream`;
const openLogs = new Set();  // event ids whose job details are expanded, kept across updates
let view = null;
let source = null;

function applyDelta(current, seq, changes) {
  const next = { ...current, ...changes, seq };
  if (changes.partitions) next.partitions = { ...current.partitions, ...changes.partitions };
  if (changes.events) next.events = current.events.concat(changes.events);
  return next;
}

function setConnection(state, text) {
  const conn = document.getElementById("conn");
  conn.className = `conn ${state}`;
  conn.textContent = text;
}

function showNotice(text, isError) {
  const notice = document.getElementById("notice");
  notice.className = isError ? "notice error" : "notice";
  notice.textContent = text;
  notice.hidden = false;
}

function partitionCard(ref, p) {
  const delegated = p.status === "PartitionDelegated" && p.delegatedTo
    ? el("div", { class: "small" }, "delegated to ",
        el("a", { href: `/builds/${encodeURIComponent(p.delegatedTo)}` }, p.delegatedTo))
    : null;
  return el("div", { class: "card partition", "data-ref": ref },
    el("div", { class: "ref" }, ref), badge(p.status),
    el("div", { class: "small" }, "updated ", formatTime(p.updatedAtMs)), delegated);
}

function eventItem(event) {
  const item = el("li", { "data-event-id": event.eventId },
    el("time", { class: "small" }, formatTime(event.timestampMs)),
    el("span", { class: "etype" }, event.eventType), el("span", {}, event.message));
  if (event.job) {
    const job = event.job;
    const details = el("details", {},
      el("summary", {}, `Job ${job.jobLabel || ""} `, badge(job.status)),
      el("div", { class: "small" }, `run ${job.jobRunId || "—"} · targets: ${(job.targetPartitions || []).join(", ")}`),
      el("pre", { class: "logs" }, (job.logLines || []).join("\n")));
    details.open = openLogs.has(event.eventId);
    details.addEventListener("toggle", () => {
      if (details.open) openLogs.add(event.eventId); else openLogs.delete(event.eventId);
    });
    item.append(details);
  }
  return item;
}

function render() {
  document.getElementById("build").hidden = false;
  document.getElementById("notice").hidden = !view.stale;
  if (view.stale) showNotice("The upstream cannot be read right now: showing the last known state.", false);
  document.getElementById("build-id").textContent = view.buildId;
  document.getElementById("status").replaceWith(Object.assign(badge(view.status), { id: "status" }));
  document.getElementById("created").textContent = formatTime(view.createdAtMs);
  const statuses = Object.values(view.partitions).map((p) => p.status);
  const available = statuses.filter((s) => s === "PartitionAvailable").length;
  const failed = statuses.filter((s) => s === "PartitionFailed").length;
  document.getElementById("counts").textContent =
    `${available}/${statuses.length} partitions available` + (failed ? `, ${failed} failed` : "");
  document.getElementById("partitions").replaceChildren(
    ...view.requestedPartitions.map((ref) => partitionCard(ref, view.partitions[ref])));
  document.getElementById("timeline").replaceChildren(...view.events.map(eventItem));
  setConnection(view.stale ? "stale" : "live", view.stale ? "upstream stale" : "live");
}

async function explainFailure() {
  // The stream was refused (EventSource gives no status): ask the REST API why, once.
  try {
    const response = await fetch(`/api/v1/builds/${encodeURIComponent(buildId)}`);
    if (response.ok) return connect();
    const { error } = await response.json();
    const text = error.code === "not_found" ? `Build ${buildId} was not found.`
      : error.code === "invalid_build_id" ? `"${buildId}" is not a valid build id.` : error.message;
    showNotice(text, true);
    setConnection("down", error.code === "upstream_unavailable" ? "upstream unavailable" : "not found");
  } catch (e) {
    setConnection("down", "gateway unreachable");
    setTimeout(connect, 5000);
  }
}

function connect() {
  if (source) source.close();
  source = new EventSource(streamUrl);
  source.addEventListener("snapshot", (e) => { view = JSON.parse(e.data).view; render(); });
  source.addEventListener("delta", (e) => {
    const message = JSON.parse(e.data);
    if (!view || message.seq !== view.seq + 1) return connect();  // a gap: resynchronise
    view = applyDelta(view, message.seq, message.changes);
    render();
  });
  source.addEventListener("error", (e) => {
    if (e.data) {  // the server's own error message, e.g. the build vanished upstream
      const message = JSON.parse(e.data);
      if (message.code === "upstream_unavailable") {  // live updates paused; the stream goes on
        showNotice(message.message, false);
        setConnection("reconnecting", "updates paused");
        return;
      }
      source.close();
      showNotice(message.message, true);
      setConnection("down", message.code);
    } else if (source.readyState === EventSource.CLOSED) {
      explainFailure();
    } else {
      setConnection("reconnecting", "reconnecting…");
    }
  });
}

document.title = `${buildId} · Buildcast`;
connect();
