"use strict";
// The live build page (PROTOCOL.md): the browser's shared stream (tabs.js), a snapshot then deltas
// applied in place; the DOM is updated once per animation frame, touching only what changed.
//
// Data path: message -> on*() mutates `view` and marks what is dirty -> flush() (one per
// frame) updates the header, the cards of changed partitions (partitions.js), and appends new
// events (timeline.js). Nothing here ever assigns HTML: every text from the gateway goes in as
// a text node.

(() => {
  const HIDDEN_CLOSE_MS = numberOr(window.BUILDCAST_HIDDEN_CLOSE_MS, 30_000);
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
  const stream = openStream({
    stats,
    // Only a gateway in trouble is worth retrying: a 4xx (not found, invalid, no or a bad
    // token, not allowed, too many) answers the same every time. A 429 that says when to
    // come back (Retry-After) is waited out by the stream itself.
    isFinal: ({ status }) => status >= 400 && status < 500,
    on: { state: renderConnection, snapshot: onSnapshot, delta: onDelta, notice: onNotice, end: onEnd },
  });

  // --- what the next frame must redraw: the header here, the rest in its own part
  let headerDirty = false;
  let frame = 0;
  // Builds this one delegated to ride on the same stream; their messages go there (delegates.js).
  const delegates = new Delegates(stream, buildId, (id) => grid.delegateChanged(id));
  const grid = new PartitionGrid(schedule, delegates);
  const ending = new BuildEnding(buildId);  // the favicon and "Notify me" (notify.js)
  const jobs = new JobList(schedule);
  const timeline = new Timeline((runId) => jobs.show(runId));

  // ------------------------------------------------------------------ applying messages

  function onSnapshot(id, message) {
    if (id !== buildId) return delegates.snapshot(id, message);
    const old = view;
    const next = message.view;
    view = next;
    view.seq = message.seq;
    stats.snapshots += 1;
    headerDirty = true;
    const sameRefs = old && old.requestedPartitions.length === next.requestedPartitions.length
      && old.requestedPartitions.every((ref, i) => ref === next.requestedPartitions[i]);
    if (sameRefs) {
      for (const ref of next.requestedPartitions) grid.changed(ref);  // cards diff themselves
    } else {
      grid.rebuild();
    }
    grid.noteDelegations(next.events, true);
    // Events normally only grow: keep the rendered ones when the old list is a prefix.
    const prefix = old && old.events.length <= next.events.length
      && old.events.every((event, i) => event.eventId === next.events[i].eventId);
    if (prefix) timeline.grew(); else timeline.reset();
    jobs.eventsChanged(!prefix);
    heard();
  }

  function onDelta(id, message) {
    if (id !== buildId) return delegates.delta(id, message);
    const changes = message.changes || {};
    applyDelta(view, message.seq, changes);
    // What the delta touched, for the next frame: no card is compared that did not change.
    for (const ref of Object.keys(changes.partitions || {})) grid.changed(ref);
    if (changes.events) {
      grid.noteDelegations(changes.events);
      timeline.grew();
      jobs.eventsChanged(false);
    }
    if ("requestedPartitions" in changes) grid.rebuild();
    headerDirty = true;
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
    if (id !== buildId) return;  // a delegate's pause: its card keeps its last state
    paused = text;
    schedule();
  }

  function onEnd(id, refusal) {
    if (id !== null && id !== buildId) return delegates.end(id, refusal);
    if (id === null && delegates.giveUp(refusal)) return;  // the stream goes on without them
    const { code, message, status } = refusal;
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
    if (stream.shared) return;  // the browser's one connection: a hidden tab stays current
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

  function flush() {
    frame = 0;
    const started = performance.now();
    timeline.measure();  // before this frame writes anything
    renderConnection();
    if (view) {
      $("loading").hidden = true;
      $("build").hidden = false;
      if (headerDirty) renderHeader();
      grid.render(view, headerDirty);
      timeline.render(view);
      headerDirty = false;
      body.dataset.seq = view.seq;
      body.dataset.snapshots = stats.snapshots;
      body.dataset.deltas = stats.deltas;
      body.dataset.resyncs = stats.resyncs;
      body.dataset.connects = stats.connects;
      if (grid.complete) {
        body.dataset.renderedSeq = view.seq;  // the DOM now shows this seq entirely
        stats.gridCompleteAt ??= performance.now();
      }
      if (grid.complete) jobs.render(view);  // a large build's first frames go to its cards
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
    if (ended && !$("home-link")) {  // nothing more comes to an ended page: its way on, once
      box.after(el("p", { id: "home-link", class: "home-link" }, el("a", { href: "/" }, "Back to the home page")));
    }
  }

  function renderHeader() {
    $("build-id").textContent = view.buildId;
    setBadge($("status"), view.status);
    ending.show(view);
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
