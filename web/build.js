"use strict";
// The live build page (PROTOCOL.md): one EventSource per tab, a snapshot then deltas applied
// in place; the DOM is updated once per animation frame, touching only what changed.
//
// Data path: message -> apply*() mutates `view` and marks what is dirty -> flush() (one per
// frame) updates the header, the cards of changed partitions, and appends new events.
// Nothing here ever assigns HTML: every text from the gateway goes in as a text node.

(() => {
  const HIDDEN_CLOSE_MS = Number(window.BUILDCAST_HIDDEN_CLOSE_MS ?? 30_000);
  const TIMELINE_PAGE = 200;   // events shown at first, and added per "show older"
  const CARD_CHUNK = 250;      // partition cards created per frame on a first render
  const ACTIVE = new Set(["BuildRequestReceived", "BuildRequestPlanning", "BuildRequestExecuting"]);
  const PARTITION_ORDER = ["PartitionBuilding", "PartitionScheduled", "PartitionRequested",
    "PartitionDelegated", "PartitionFailed", "PartitionAvailable", "Unknown"];

  const $ = (id) => document.getElementById(id);
  const body = document.body;

  // --- the build id, from the path; checked here first so a bad one costs no request
  let buildId = null;
  try {
    buildId = decodeURIComponent(location.pathname.replace(/^\/builds\//, ""));
  } catch (e) {
    buildId = location.pathname.replace(/^\/builds\//, "");  // a malformed %-escape
  }
  // PROTOCOL.md: 1 to 200 characters, no "/", no whitespace, no control character.
  const validId = buildId.length > 0 && buildId.length <= 200
    && !/[\s/\x00-\x1f\x7f]/.test(buildId);
  const apiUrl = `/api/v1/builds/${encodeURIComponent(buildId)}`;
  const streamUrl = `${apiUrl}/stream`;

  // --- state
  let view = null;             // the build view, mutated in place by messages
  let source = null;           // the one EventSource, or null while closed
  let lastId = null;           // the last SSE id received: where a resume starts
  let ended = null;            // {code, text} once the stream is over for good
  let sleeping = false;        // the stream was closed because the tab stayed hidden
  let paused = null;           // the gateway's upstream_unavailable notice, until the next message
  let refused = null;          // why the last connection attempt failed, {state, label, text}
  let failures = 0;            // connection attempts failed since the last open
  let retryTimer = 0;
  let hiddenTimer = 0;
  let freshAt = null;          // local time of the last message that said the data is current
  let currentAt = null;        // local time the shown data was last known to be current
  const stats = {              // counters for tests and for a curious person in devtools
    connects: 0, snapshots: 0, deltas: 0, resyncs: 0, flushes: 0, maxFlushMs: 0,
    firstMessageAt: null, firstRenderAt: null, gridCompleteAt: null, lastFlushAt: null,
  };

  // --- what the next frame must redraw
  const dirty = { header: false, parts: new Set(), grid: false, events: false, timeline: false };
  let frame = 0;

  // --- DOM records
  const cards = new Map();     // ref -> {node, badge, time, deleg, status, updated, delegatedTo}
  let gridBuilt = 0;           // cards created so far, in requestedPartitions order
  let filter = "";             // "" = all, else a status key
  const filterButtons = new Map();
  const delegations = new Map();  // ref -> the build it was delegated to, from the events
  const openJobs = new Set();  // event ids whose job details are expanded, kept across updates
  const tl = { from: 0, to: 0, limit: TIMELINE_PAGE };  // the DOM shows view.events[from, to)

  // ------------------------------------------------------------------ applying messages

  function applySnapshot(next) {
    const old = view;
    view = next;
    stats.snapshots += 1;
    dirty.header = true;
    const sameRefs = old && old.requestedPartitions.length === next.requestedPartitions.length
      && old.requestedPartitions.every((ref, i) => ref === next.requestedPartitions[i]);
    if (sameRefs) {
      for (const ref of next.requestedPartitions) dirty.parts.add(ref);  // cards diff themselves
    } else {
      dirty.grid = true;
    }
    // Events normally only grow: keep the rendered ones when the old list is a prefix.
    delegations.clear();
    noteDelegations(next.events);
    const prefix = old && old.events.length <= next.events.length
      && old.events.every((event, i) => event.eventId === next.events[i].eventId);
    if (prefix) dirty.events = true; else dirty.timeline = true;
  }

  function noteDelegations(events) {
    for (const event of events) {
      if (event.delegatedTo && event.partitionRef) {
        delegations.set(event.partitionRef, event.delegatedTo);
        dirty.parts.add(event.partitionRef);
      }
    }
  }

  function applyDelta(seq, changes) {
    for (const [key, value] of Object.entries(changes)) {
      if (key === "partitions") {
        for (const [ref, entry] of Object.entries(value)) {
          view.partitions[ref] = entry;
          dirty.parts.add(ref);
        }
      } else if (key === "events") {
        for (const event of value) view.events.push(event);
        noteDelegations(value);
        dirty.events = true;
      } else {
        view[key] = value;
        if (key === "requestedPartitions") dirty.grid = true;
      }
    }
    view.seq = seq;
    stats.deltas += 1;
    dirty.header = true;
  }

  function onMessage(event, kind) {
    if (event.target !== source) return;  // a late event of a stream already closed
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return resync("a message that is not JSON");
    }
    if (message.buildId !== undefined && message.buildId !== buildId) return;
    lastId = event.lastEventId || lastId;
    stats.firstMessageAt ??= performance.now();
    if (kind === "snapshot") {
      applySnapshot(message.view);
      view.seq = message.seq;
    } else {
      if (!view) return resync("a delta before any snapshot");
      if (message.seq <= view.seq) return;  // already applied (an overlapping resume)
      if (message.seq !== view.seq + 1) return resync(`a gap: seq ${view.seq} then ${message.seq}`);
      applyDelta(message.seq, message.changes || {});
    }
    paused = null;
    refused = null;
    currentAt = Date.now();
    if (!view.stale) freshAt = currentAt;
    schedule();
  }

  function onServerError(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      message = { code: "internal", message: String(event.data) };
    }
    if (message.buildId !== undefined && message.buildId !== buildId) return;
    lastId = event.lastEventId || lastId;
    if (message.code === "upstream_unavailable") {
      // A notice, not an end: the stream stays; its next snapshot or delta means live again.
      paused = message.message || "live updates are paused";
      schedule();
      return;
    }
    closeStream();
    end(message.code, message.code === "not_found"
      ? `Build ${buildId} was not found: it no longer exists upstream.`
      : message.message || message.code);
  }

  // ------------------------------------------------------------------ the connection

  function openStream(resumeId) {
    if (ended) return;
    clearTimeout(retryTimer);
    closeStream();
    // EventSource cannot set headers: a resume by hand names its position in the query.
    // (When the browser reconnects by itself, its Last-Event-ID header wins over the query.)
    const url = resumeId ? `${streamUrl}?lastEventId=${encodeURIComponent(resumeId)}` : streamUrl;
    const es = new EventSource(url);
    source = es;
    stats.connects += 1;
    body.dataset.stream = "connecting";
    es.addEventListener("open", () => {
      if (es !== source) return;
      failures = 0;
      refused = null;
      body.dataset.stream = "open";
      renderConnection();
    });
    es.addEventListener("snapshot", (e) => onMessage(e, "snapshot"));
    es.addEventListener("delta", (e) => onMessage(e, "delta"));
    es.addEventListener("error", (e) => {
      if (es !== source) return;
      if (e.data !== undefined) return onServerError(e);  // the gateway's own `error` message
      if (es.readyState === EventSource.CLOSED) {
        // Refused (an HTTP error status): EventSource gives no status, so ask the REST API why.
        closeStream();
        failures += 1;
        explainFailure();
      } else {
        failures += 1;  // the connection dropped; the browser reconnects with Last-Event-ID
        body.dataset.stream = "connecting";
      }
      renderConnection();
    });
    if (document.visibilityState === "hidden") armHiddenTimer();
    renderConnection();
  }

  function closeStream() {
    if (source) source.close();
    source = null;
    body.dataset.stream = "closed";
  }

  function resync(reason) {
    // Reconnect without an id: the gateway answers with a fresh snapshot.
    console.info(`buildcast: resynchronising after ${reason}`);
    stats.resyncs += 1;
    openStream(null);
  }

  function retryLater() {
    if (ended) return;
    clearTimeout(retryTimer);
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)) * (0.75 + Math.random() / 4);
    retryTimer = setTimeout(() => {
      if (!sleeping) openStream(view ? lastId : null);
    }, delay);
  }

  async function explainFailure() {
    let response;
    try {
      response = await fetch(apiUrl, { cache: "no-store" });
    } catch (e) {
      refused = { state: "down", label: "gateway unreachable",
        text: "The gateway cannot be reached. Retrying…" };
      renderConnection();
      return retryLater();
    }
    if (response.ok) {  // the build exists: the refusal was passing (a restart, a limit)
      refused = null;
      renderConnection();
      return retryLater();
    }
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch (e) { /* not our JSON: a proxy's page */ }
    const code = error.code || String(response.status);
    if (code === "not_found" || response.status === 404) {
      return end("not_found", `Build ${buildId} was not found.`);
    }
    if (code === "invalid_build_id" || response.status === 400) {
      return end("invalid_build_id", `"${buildId}" is not a valid build id.`);
    }
    if (code === "unauthorized" || code === "forbidden") {
      return end(code, error.message || "You may not see this build.");
    }
    const why = error.message || code;
    refused = code === "upstream_unavailable" || response.status >= 500
      ? { state: "down", label: "upstream unavailable",
          text: `The Build Graph Service cannot be read right now (${why}). Retrying…` }
      : { state: "reconnecting", label: "reconnecting…",
          text: `The gateway refused the stream (${why}). Retrying…` };
    renderConnection();
    retryLater();
  }

  function end(code, text) {
    closeStream();
    clearTimeout(retryTimer);
    ended = { code, text };
    renderConnection();
  }

  // --- Page Visibility: a hidden tab gives its connection back after a while (browsers
  // allow six per host), then resumes from its last id when shown: the missed deltas, no gap.
  function armHiddenTimer() {
    clearTimeout(hiddenTimer);
    hiddenTimer = setTimeout(() => {
      if (document.visibilityState !== "hidden" || ended) return;
      clearTimeout(retryTimer);
      closeStream();
      sleeping = true;
      renderConnection();
    }, HIDDEN_CLOSE_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      armHiddenTimer();
      return;
    }
    clearTimeout(hiddenTimer);
    if (sleeping) {
      sleeping = false;
      openStream(view ? lastId : null);
    }
    tick();
    schedule();
  });

  // Leaving the page (or entering the back/forward cache) frees the connection at once.
  window.addEventListener("pagehide", () => {
    clearTimeout(retryTimer);
    closeStream();
  });
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && !ended) openStream(view ? lastId : null);
  });

  // ------------------------------------------------------------------ rendering

  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }

  let following = true;  // the reader is at the newest events: new ones scroll into view

  function flush() {
    frame = 0;
    const started = performance.now();
    // Read before this frame writes anything: the layout is still clean, so this is free.
    if (tl.to) following = atBottom($("timeline-box"));
    renderConnection();
    if (view) {
      $("loading").hidden = true;
      $("build").hidden = false;
      if (dirty.header) renderHeader();
      renderPartitions();
      renderTimeline();
      dirty.header = false;
      body.dataset.seq = view.seq;
      body.dataset.snapshots = stats.snapshots;
      body.dataset.deltas = stats.deltas;
      body.dataset.resyncs = stats.resyncs;
      body.dataset.connects = stats.connects;
      if (gridBuilt === view.requestedPartitions.length && !dirty.parts.size) {
        body.dataset.renderedSeq = view.seq;  // the DOM now shows this seq entirely
        stats.gridCompleteAt ??= performance.now();
      }
      stats.firstRenderAt ??= performance.now();
    }
    const now = performance.now();
    stats.flushes += 1;
    stats.lastFlushAt = now;
    stats.maxFlushMs = Math.max(stats.maxFlushMs, now - started);
  }

  function renderConnection() {
    let state = "live";
    let label = "live";
    let age = null;
    let notice = null;
    if (ended) {
      state = "down";
      label = ended.code === "not_found" ? "not found"
        : ended.code === "invalid_build_id" ? "invalid id" : "ended";
      notice = { text: ended.text, error: true };
    } else if (sleeping) {
      state = "paused";
      label = "updates paused";
      age = currentAt;
    } else if (refused) {
      ({ state, label } = refused);
      age = currentAt;
      notice = { text: refused.text, error: true };
    } else if (body.dataset.stream !== "open" || !view) {
      const first = !view && failures === 0;
      state = first ? "connecting" : "reconnecting";
      label = first ? "connecting…" : failures >= 3 ? "gateway unreachable" : "reconnecting…";
      if (failures >= 3) {
        state = "down";
        notice = { text: "The gateway cannot be reached. Retrying…", error: true };
      }
      age = currentAt;
    } else if (paused) {
      state = "paused";
      label = "updates paused";
      age = currentAt;
      notice = { text: `Live updates are paused: ${paused}. The page catches up by itself.` };
    } else if (view.stale) {
      state = "stale";
      label = "upstream stale";
      age = freshAt ?? view.updatedAtMs;
      notice = { text: "The Build Graph Service cannot be read right now: "
        + "this is the last known state, and it updates again by itself." };
    }
    if (state === "live") currentAt = Date.now();  // a live stream means current data
    const conn = $("conn");
    if (conn.textContent !== label) conn.textContent = label;
    conn.className = `conn ${state}`;
    body.dataset.conn = state;
    const ageText = age && view ? `data from ${formatAgo(age)}` : "";
    $("conn-age").textContent = sleeping ? `tab in background · ${ageText}` : ageText;

    const box = $("notice");
    if (notice) {
      box.className = notice.error ? "notice error" : "notice";
      if (box.textContent !== notice.text) box.textContent = notice.text;
      box.hidden = false;
    } else {
      box.hidden = true;
    }
    if (ended && !view) $("loading").hidden = true;
  }

  function renderHeader() {
    $("build-id").textContent = view.buildId;
    setBadge($("status"), view.status);
    document.title = `${statusLabel(view.status)} · ${view.buildId} · Buildcast`;
    const created = $("created");
    created.textContent = formatDateTime(view.createdAtMs);
    created.setAttribute("datetime", isoTime(view.createdAtMs) || "");
    const updated = $("updated");
    updated.textContent = formatWhen(view.updatedAtMs);
    updated.setAttribute("datetime", isoTime(view.updatedAtMs) || "");
    updated.title = formatDateTime(view.updatedAtMs);
    tick();
  }

  /** The texts that move with the clock: "x min ago", the elapsed time, the data's age. */
  function tick() {
    if (!view) return;
    const now = Date.now();
    $("created-ago").textContent = `(${formatAgo(view.createdAtMs, now)})`;
    const running = ACTIVE.has(view.status);
    $("elapsed-label").textContent = running ? "Running for" : "Took";
    const until = running ? now : view.updatedAtMs;
    $("elapsed").textContent = formatDuration(until - view.createdAtMs);
    renderConnection();
  }

  // --- partitions: one card per requested ref, created once, updated in place

  function statusKey(entry) {
    return (entry && entry.status) || "Unknown";
  }

  const CARD = el("li", { class: "card partition" }, el("div", { class: "ref" }),
    el("div", { class: "row" }, el("span", { class: "badge" }), el("time", { class: "small" })));

  function createCard(ref) {
    const node = CARD.cloneNode(true);  // cheaper than building each card element by element
    node.setAttribute("data-ref", ref);
    fillRef(node.firstChild, ref);
    const row = node.lastChild;
    const record = { node, badge: row.firstChild, time: row.lastChild, deleg: null,
      status: undefined, updated: undefined, delegatedTo: undefined };
    cards.set(ref, record);
    updateCard(record, ref);
    return node;
  }

  /** A ref that may wrap after each "/" rather than anywhere (a <wbr>, never HTML). */
  function fillRef(node, ref) {
    node.title = ref;
    ref.split("/").forEach((part, i) => {
      if (i) node.append("/", document.createElement("wbr"));
      node.append(part);
    });
  }

  function updateCard(record, ref) {
    const entry = view.partitions[ref];
    const status = (entry && entry.status) || null;
    if (status !== record.status) {
      record.status = status;
      setBadge(record.badge, status);
      record.node.className = `card partition tone-${toneOf(status)}`;
      record.node.dataset.status = statusKey(entry);
      record.node.hidden = filter !== "" && statusKey(entry) !== filter;
    }
    const updated = entry ? entry.updatedAtMs : null;
    if (updated !== record.updated) {
      record.updated = updated;
      record.time.textContent = updated ? `updated ${formatWhen(updated)}` : "";
      record.time.setAttribute("datetime", isoTime(updated) || "");
      record.time.title = formatDateTime(updated);
    }
    // Once a delegate has built the partition, its entry no longer names it: the events do.
    const delegatedTo = (entry && entry.delegatedTo) || delegations.get(ref) || null;
    if (delegatedTo !== record.delegatedTo || (record.deleg && status !== record.delegStatus)) {
      record.delegatedTo = delegatedTo;
      record.delegStatus = status;
      if (record.deleg) record.deleg.remove();
      record.deleg = null;
      if (delegatedTo) {
        record.deleg = el("div", { class: "deleg" },
          el("span", { class: "deleg-mark", "aria-hidden": "true" }, "↪ "),
          status === "PartitionDelegated" ? "Delegated to " : "Built by ",
          el("a", { href: `/builds/${encodeURIComponent(delegatedTo)}` }, delegatedTo));
        record.node.append(record.deleg);
      }
    }
  }

  function renderPartitions() {
    const grid = $("partitions");
    const refs = view.requestedPartitions;
    if (dirty.grid) {
      dirty.grid = false;
      cards.clear();
      grid.replaceChildren();
      gridBuilt = 0;
      dirty.parts.clear();
    }
    for (const ref of dirty.parts) {
      const record = cards.get(ref);
      if (record) updateCard(record, ref);  // not built yet: it is built from the view
    }
    const hadChanges = dirty.parts.size > 0;
    dirty.parts.clear();
    if (gridBuilt < refs.length) {
      // A first render of a large build goes in chunks, one per frame: no long freeze.
      const fragment = document.createDocumentFragment();
      const stop = Math.min(refs.length, gridBuilt + CARD_CHUNK);
      for (; gridBuilt < stop; gridBuilt += 1) fragment.append(createCard(refs[gridBuilt]));
      grid.append(fragment);
      grid.classList.toggle("many", refs.length > 48);
      if (gridBuilt < refs.length) schedule();
    }
    if (hadChanges || dirty.header) renderCounts();
  }

  function renderCounts() {
    const counts = new Map();
    let available = 0;
    let failed = 0;
    for (const ref of view.requestedPartitions) {
      const key = statusKey(view.partitions[ref]);
      counts.set(key, (counts.get(key) || 0) + 1);
      if (key === "PartitionAvailable") available += 1;
      else if (key === "PartitionFailed") failed += 1;
    }
    const total = view.requestedPartitions.length;
    $("partition-count").textContent = total.toLocaleString();
    const progress = $("progress");
    progress.setAttribute("aria-valuemax", total);
    progress.setAttribute("aria-valuenow", available);
    progress.setAttribute("aria-valuetext", `${available} of ${total} available, ${failed} failed`);
    $("bar-ok").style.width = `${total ? (100 * available) / total : 0}%`;
    $("bar-err").style.width = `${total ? (100 * failed) / total : 0}%`;
    const text = $("counts");
    text.replaceChildren(
      el("strong", {}, `${available.toLocaleString()} / ${total.toLocaleString()}`), " available");
    if (failed) {
      const failedText = `${failed.toLocaleString()} failed`;
      text.append(" · ", el("span", { class: "failed-count" }, failedText));
    }
    renderFilters(counts, total);
  }

  function renderFilters(counts, total) {
    const bar = $("filters");
    const others = [...counts.keys()].filter((k) => !PARTITION_ORDER.includes(k));  // unknown names
    const keys = ["", ...PARTITION_ORDER, ...others];
    for (const key of keys) {
      const count = key === "" ? total : counts.get(key) || 0;
      let button = filterButtons.get(key);
      if (!button) {
        if (!count && key !== filter) continue;
        button = el("button",
          { type: "button", class: `chip tone-${toneOf(key)}`, "data-status": key || "all" },
          el("span", { class: "chip-label" }, key === "" ? "All" : statusLabel(key)), " ",
          el("span", { class: "chip-count" }));
        button.addEventListener("click", () => setFilter(filter === key ? "" : key));
        filterButtons.set(key, button);
        const next = keys.slice(keys.indexOf(key) + 1)
          .map((k) => filterButtons.get(k)).find(Boolean);
        bar.insertBefore(button, next || null);  // keep the chips in PARTITION_ORDER
      }
      button.querySelector(".chip-count").textContent = count.toLocaleString();
      button.hidden = !count && key !== filter && key !== "";
      button.setAttribute("aria-pressed", String(key === filter));
      button.title = key === "" ? "Show every partition" : `Show only ${key}`;
    }
    const shown = filter === "" ? total : counts.get(filter) || 0;
    $("partitions-empty").hidden = shown > 0;
  }

  function setFilter(key) {
    filter = key;
    for (const record of cards.values()) {
      record.node.hidden = filter !== "" && (record.status || "Unknown") !== filter;
    }
    renderCounts();
  }

  // --- the timeline: the newest TIMELINE_PAGE events, appended as they come

  function eventItem(event) {
    const line = el("div", { class: "event-line" },
      el("time", { datetime: isoTime(event.timestampMs), title: formatDateTime(event.timestampMs) },
        formatWhen(event.timestampMs)),
      el("span", { class: "etype" }, event.eventType),
      el("span", { class: "msg" }, event.message));
    if (event.partitionRef) {
      line.append(el("span", { class: "ref" }, event.partitionRef));
      if (event.partitionStatus) line.append(badge(event.partitionStatus));
    }
    if (event.delegatedTo) {
      line.append(el("span", { class: "deleg" }, "↪ ",
        el("a", { href: `/builds/${encodeURIComponent(event.delegatedTo)}` }, event.delegatedTo)));
    }
    const item = el("li",
      { class: event.job ? "event job-event" : "event", "data-event-id": event.eventId }, line);
    if (event.job) item.append(jobDetails(event));
    return item;
  }

  function jobDetails(event) {
    const job = event.job;
    const lines = job.logLines || [];
    const logs = el("pre", { class: "logs", tabindex: "0", "aria-label": "Job log" });
    for (const text of lines) logs.append(el("span", { class: "ln" }, text), "\n");
    const copy = el("button", { type: "button", class: "btn small-btn" }, "Copy log");
    copy.addEventListener("click", () => copyLog(copy, logs, lines));
    const targets = el("ul", { class: "targets" },
      ...(job.targetPartitions || []).map((ref) => el("li", { class: "ref" }, ref)));
    const details = el("details", { class: "job" },
      el("summary", {},
        el("span", { class: "job-label" }, job.jobLabel || "job"), " ", badge(job.status), " ",
        el("span", { class: "small" }, `${lines.length} log line${lines.length === 1 ? "" : "s"}`)),
      el("dl", { class: "job-facts" },
        el("dt", {}, "Job"), el("dd", {}, job.jobLabel || "—"),
        el("dt", {}, "Run id"), el("dd", { class: "mono" }, job.jobRunId || "—"),
        el("dt", {}, "Status"), el("dd", {}, job.status || "Unknown"),
        el("dt", {}, "Targets"), el("dd", {}, targets)),
      lines.length
        ? el("div", { class: "log-head" }, el("span", { class: "small" }, "Log"), copy)
        : el("p", { class: "small" }, "No log lines yet."),
      lines.length ? logs : null);
    details.open = openJobs.has(event.eventId);
    details.addEventListener("toggle", () => {
      if (details.open) openJobs.add(event.eventId); else openJobs.delete(event.eventId);
    });
    return details;
  }

  async function copyLog(button, logs, lines) {
    try {
      await navigator.clipboard.writeText(lines.join("\n"));
      button.textContent = "Copied";
    } catch (e) {  // no clipboard permission: select the text, for Ctrl+C
      getSelection().selectAllChildren(logs);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy log"; }, 2000);
  }

  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  }

  function renderTimeline() {
    const list = $("timeline");
    const box = $("timeline-box");
    const events = view.events;
    const n = events.length;
    const follow = following;
    if (dirty.timeline) {
      dirty.timeline = false;
      list.replaceChildren();
      tl.from = tl.to = Math.max(0, n - tl.limit);
    }
    if (dirty.events || n !== tl.to) {
      dirty.events = false;
      const start = Math.max(tl.to, n - tl.limit);
      if (start > tl.to) {  // more new events than the window holds: start the window afresh
        list.replaceChildren();
        tl.from = start;
      }
      const fragment = document.createDocumentFragment();
      for (let i = start; i < n; i += 1) fragment.append(eventItem(events[i]));
      list.append(fragment);
      tl.to = n;
      // Keep the window bounded while the reader follows the newest events; when they
      // read older ones, let it grow (up to a cap) rather than pull text from under them.
      const cap = follow ? tl.limit : tl.limit + 5 * TIMELINE_PAGE;
      while (tl.to - tl.from > cap) {
        list.firstElementChild.remove();
        tl.from += 1;
      }
      if (follow) box.scrollTop = box.scrollHeight;
    }
    $("older").hidden = tl.from === 0;
    const more = Math.min(TIMELINE_PAGE, tl.from);
    $("older").textContent =
      `Show ${more.toLocaleString()} older events (${tl.from.toLocaleString()} not shown)`;
    $("event-count").textContent = `${n.toLocaleString()} event${n === 1 ? "" : "s"}`
      + (tl.from ? ` · showing the latest ${(tl.to - tl.from).toLocaleString()}` : "");
  }

  $("older").addEventListener("click", () => {
    const box = $("timeline-box");
    const start = Math.max(0, tl.from - TIMELINE_PAGE);
    const fragment = document.createDocumentFragment();
    for (let i = start; i < tl.from; i += 1) fragment.append(eventItem(view.events[i]));
    const before = box.scrollHeight;
    $("timeline").prepend(fragment);
    box.scrollTop += box.scrollHeight - before;  // keep what the reader was looking at in place
    tl.from = start;
    tl.limit = Math.max(tl.limit, tl.to - tl.from);
    renderTimeline();
  });

  // ------------------------------------------------------------------ start

  window.buildcast = { view: () => view, stats, lastId: () => lastId };
  setInterval(() => { if (document.visibilityState !== "hidden") tick(); }, 1000);
  document.title = `${buildId} · Buildcast`;
  $("build-id").textContent = buildId;
  if (!validId) {
    end("invalid_build_id", `"${buildId}" is not a valid build id.`);
  } else {
    openStream(null);
  }
})();
