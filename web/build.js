"use strict";
// The live build page (PROTOCOL.md): one stream per tab (stream.js), a snapshot then deltas
// applied in place; the DOM is updated once per animation frame, touching only what changed.
//
// Data path: message -> on*() mutates `view` and marks what is dirty -> flush() (one per
// frame) updates the header, the cards of changed partitions, and appends new events.
// Nothing here ever assigns HTML: every text from the gateway goes in as a text node.

(() => {
  const HIDDEN_CLOSE_MS = numberOr(window.BUILDCAST_HIDDEN_CLOSE_MS, 30_000);
  const TIMELINE_PAGE = 200;   // events shown at first, and added per "show older"
  const CARD_CHUNK = 250;      // partition cards created per frame on a first render
  const PARTITION_ORDER = ["PartitionBuilding", "PartitionScheduled", "PartitionRequested",
    "PartitionDelegated", "PartitionFailed", "PartitionAvailable", "Unknown"];
  const { NOT_FOUND, INVALID_BUILD_ID, UNAUTHORIZED, FORBIDDEN } = RULES.codes;

  const $ = (id) => document.getElementById(id);
  const body = document.body;

  // --- the build id, from the path; checked here first so a bad one costs no request
  let buildId = null;
  try {
    buildId = decodeURIComponent(location.pathname.replace(/^\/builds\//, ""));
  } catch (e) {
    buildId = location.pathname.replace(/^\/builds\//, "");  // a malformed %-escape
  }

  // --- state
  let view = null;             // the build view, mutated in place by messages
  let ended = null;            // {code, text} once the stream is over for good
  let paused = null;           // the gateway's upstream_unavailable notice, until the next message
  let hiddenTimer = 0;
  let freshAt = null;          // local time of the last message that said the data is current
  let currentAt = null;        // local time the shown data was last known to be current
  const stats = {              // counters for tests and for a curious person in devtools
    snapshots: 0, deltas: 0, flushes: 0, maxFlushMs: 0,  // + connects, resyncs, silentReopens
    firstMessageAt: null, firstRenderAt: null, gridCompleteAt: null, lastFlushAt: null,
  };
  const stream = new BuildcastStream({
    stats,
    // Only a gateway in trouble is worth retrying: a 4xx (not found, invalid, no or a bad
    // token, not allowed, too many) answers the same every time. A 429 that says when to
    // come back (Retry-After) is waited out by the stream itself.
    isFinal: ({ status }) => status >= 400 && status < 500,
    on: { state: renderConnection, snapshot: onSnapshot, delta: onDelta, notice: onNotice, end: onEnd },
  });

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
  const meter = { bar: $("progress"), ok: $("bar-ok"), err: $("bar-err") };

  // ------------------------------------------------------------------ applying messages

  function onSnapshot(id, message) {
    const old = view;
    const next = message.view;
    view = next;
    view.seq = message.seq;
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
    heard();
  }

  function noteDelegations(events) {
    for (const event of events) {
      if (event.delegatedTo && event.partitionRef) {
        delegations.set(event.partitionRef, event.delegatedTo);
        dirty.parts.add(event.partitionRef);
      }
    }
  }

  function onDelta(id, message) {
    const changes = message.changes || {};
    applyDelta(view, message.seq, changes);
    // What the delta touched, for the next frame: no card is compared that did not change.
    for (const ref of Object.keys(changes.partitions || {})) dirty.parts.add(ref);
    if (changes.events) {
      noteDelegations(changes.events);
      dirty.events = true;
    }
    if ("requestedPartitions" in changes) dirty.grid = true;
    dirty.header = true;
    stats.deltas += 1;
    heard();
  }

  function heard() {
    stats.firstMessageAt ??= performance.now();
    paused = null;
    currentAt = Date.now();
    if (!view.stale) freshAt = currentAt;
    schedule();
  }

  function onNotice(id, text) {
    paused = text;
    schedule();
  }

  function onEnd(id, { code, message, status }) {
    if (code === NOT_FOUND || (!code && status === 404)) {
      end(NOT_FOUND, status ? `Build ${buildId} was not found.`
        : `Build ${buildId} was not found: it no longer exists upstream.`);
    } else if (code === INVALID_BUILD_ID || (!code && status === 400)) {
      end(INVALID_BUILD_ID, `"${buildId}" is not a valid build id.`);
    } else if (code === UNAUTHORIZED || (!code && status === 401)) {
      forgetToken();  // refused or expired: a reload relies on the cookie, or on a new link
      end(UNAUTHORIZED, tokenRefusedText(message));
    } else if (code === FORBIDDEN || (!code && status === 403)) {
      end(FORBIDDEN, `This access token does not allow build ${buildId}.`);
    } else {
      end(code || String(status), message || code || `HTTP ${status}`);
    }
  }

  function end(code, text) {
    ended = { code, text };
    stream.close();  // its state change draws the end
  }

  // --- Page Visibility: a hidden tab gives its connection back after a while (browsers
  // allow six per host), then resumes from its last id when shown: the missed deltas, no gap.
  function armHiddenTimer() {
    clearTimeout(hiddenTimer);
    hiddenTimer = setTimeout(() => {
      if (document.visibilityState === "hidden") stream.pause();
    }, HIDDEN_CLOSE_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") {
      armHiddenTimer();
      return;
    }
    clearTimeout(hiddenTimer);
    stream.resume();
    tick();
    schedule();
  });

  // Leaving the page (or entering the back/forward cache) frees the connection at once.
  window.addEventListener("pagehide", () => stream.pause());
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) stream.resume();
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

  /** The indicator's state and label, the age of the data shown, and the notice, if any. */
  function connection() {
    if (ended) {
      const label = { [NOT_FOUND]: "not found", [INVALID_BUILD_ID]: "invalid id",
        [UNAUTHORIZED]: "no access", [FORBIDDEN]: "not allowed" }[ended.code];
      return { state: "down", label: label || "ended", notice: { text: ended.text, error: true } };
    }
    const state = stream.state;
    if (state === "paused") return { state, label: "updates paused", age: currentAt };
    if (state === "down") return refused(stream.refusal);
    if (state === "reconnecting" || (state === "connecting" && view)) {
      return { state: "reconnecting", label: "reconnecting…", age: currentAt };
    }
    if (!view) return { state: "connecting", label: "connecting…" };
    if (paused) {
      return { state: "paused", label: "updates paused", age: currentAt,
        notice: { text: `Live updates are paused: ${paused}. The page catches up by itself.` } };
    }
    if (view.stale) {
      // The gateway's word for when the upstream last answered, else what the page saw.
      return { state: "stale", label: "upstream stale",
        age: view.checkedAtMs ?? freshAt ?? view.updatedAtMs,
        notice: { text: "The Build Graph Service cannot be read right now: "
          + "this is the last known state, and it updates again by itself." } };
    }
    return { state: "live", label: "live" };
  }

  /** A stream the gateway would not open, and why (a 4xx ended the page instead, but a 429
   * that said when to come back). */
  function refused({ status, code, message }) {
    const wait = stream.retryAt ? Math.ceil((stream.retryAt - Date.now()) / 1000) : 0;
    const retrying = wait > 1 ? `Retrying in ${wait} s…` : "Retrying…";
    if (status === 0) {
      return { state: "down", label: "gateway unreachable", age: currentAt,
        notice: { text: `The gateway cannot be reached. ${retrying}`, error: true } };
    }
    const why = message || code || `HTTP ${status}`;
    if (status >= 500) {
      return { state: "down", label: "upstream unavailable", age: currentAt, notice: { error: true,
        text: `The Build Graph Service cannot be read right now (${why}). ${retrying}` } };
    }
    if (status === 429) {
      return { state: "reconnecting", label: "gateway busy", age: currentAt,
        notice: { text: `The gateway is busy (${why}). ${retrying}`, error: true } };
    }
    return { state: "reconnecting", label: "reconnecting…", age: currentAt,
      notice: { text: `The gateway refused the stream (${why}). ${retrying}`, error: true } };
  }

  function renderConnection() {
    const { state, label, age = null, notice = null } = connection();
    if (state === "live") currentAt = Date.now();  // a live stream means current data
    const conn = $("conn");
    setText(conn, label);
    conn.className = `conn ${state}`;
    body.dataset.conn = state;
    body.dataset.stream = stream.connection;
    const ageText = age && view ? `data from ${formatAgo(age)}` : "";
    setText($("conn-age"), stream.state === "paused" ? `tab in background · ${ageText}` : ageText);

    const box = $("notice");
    if (notice) {
      box.className = notice.error ? "notice error" : "notice";
      setText(box, notice.text);
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
    setProgress(meter, { total, available, failed });
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
    const cut = Number(job.truncatedLines) || 0;  // the gateway keeps a long log's tail only
    const logs = el("pre", { class: "logs", tabindex: "0", "aria-label": "Job log" });
    if (cut > 0) {
      const text = `${cut.toLocaleString()} earlier line${cut === 1 ? "" : "s"} not shown`;
      logs.append(el("span", { class: "ln cut" }, text), "\n");
      logs.style.counterReset = `ln ${cut}`;  // the kept lines keep their own numbers
    }
    for (const text of lines) logs.append(el("span", { class: "ln" }, text), "\n");
    const copy = el("button", { type: "button", class: "btn small-btn" }, "Copy log");
    copy.addEventListener("click", () => copyLog(copy, logs, lines));
    const targets = el("ul", { class: "targets" },
      ...(job.targetPartitions || []).map((ref) => el("li", { class: "ref" }, ref)));
    const details = el("details", { class: "job" },
      el("summary", {},
        el("span", { class: "job-label" }, job.jobLabel || "job"), " ", badge(job.status), " ",
        el("span", { class: "small" }, cut ? `${lines.length.toLocaleString()} of ${(cut + lines.length).toLocaleString()} log lines`
          : `${lines.length} log line${lines.length === 1 ? "" : "s"}`)),
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

  window.buildcast = { view: () => view, stats, lastId: () => stream.cursor };
  setInterval(() => { if (document.visibilityState !== "hidden") tick(); }, 1000);
  document.title = `${buildId} · Buildcast`;
  $("build-id").textContent = buildId;
  if (!isBuildId(buildId)) {
    end(INVALID_BUILD_ID, `"${buildId}" is not a valid build id.`);
  } else {
    stream.follow([buildId]);
    if (document.visibilityState === "hidden") armHiddenTimer();  // opened in a background tab
  }
})();
