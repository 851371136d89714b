"use strict";
// The wall display (/wall): a grid of build tiles for a screen across the room, all day long.
//
// Which builds: the ones named in the query (/wall?build=A&build=B), else every build this
// gateway watches (GET /api/v1/watched, re-read every WATCHED_MS). All of them come over ONE
// multi-build SSE stream (/api/v1/stream?build=A&build=B). When the set changes, the stream is
// reopened with ?lastEventId=<cursor>: the builds it already had resume where they were, only
// new ones get a snapshot. A failed stream is reopened forever, with capped, jittered backoff.
// Nothing needs a click. Every text from the gateway goes into the DOM as text, never as HTML.
//
// Query: build=ID (repeatable, up to 50), keep=DURATION (how long an ended build stays in
// watched mode: "600", "90s", "10m", "1h", "500ms"; a bare number is seconds).
// Tests may set window.BUILDCAST_WALL_KEEP_ENDED_MS, ..._WATCHED_MS, ..._MAX_BACKOFF_MS and
// ..._SILENCE_MS before the page runs.

(() => {
  const params = new URLSearchParams(location.search);
  const KEEP_ENDED_MS = parseDuration(params.get("keep"))
    ?? numberOr(window.BUILDCAST_WALL_KEEP_ENDED_MS, 10 * 60_000);
  const WATCHED_MS = numberOr(window.BUILDCAST_WALL_WATCHED_MS, 10_000);
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = Math.max(BACKOFF_MIN_MS, numberOr(window.BUILDCAST_WALL_MAX_BACKOFF_MS, 30_000));
  // Heartbeats are SSE comments, which EventSource never surfaces. After this long without
  // any message the stream is reopened from its cursor (free when nothing was missed), in
  // case the connection died without a FIN (a NAT or a proxy dropping it silently).
  const SILENCE_MS = numberOr(window.BUILDCAST_WALL_SILENCE_MS, 90_000);
  const MAX_BUILDS = 50;        // the gateway's limit for one stream
  const FAILED_SHOWN = 3;       // failing partitions named on a tile before "+N more"
  const EM_ACROSS = 17;         // a tile's width in em of its type...
  const LINES_DOWN = 13;        // ...and its height in lines: the type scales with the tile
  const ENDED = new Set(["BuildRequestCompleted", "BuildRequestFailed", "BuildRequestCancelled"]);
  const TONES = {
    BuildRequestReceived: "pending", BuildRequestPlanning: "pending",
    BuildRequestExecuting: "running", BuildRequestCompleted: "success",
    BuildRequestFailed: "error", BuildRequestCancelled: "cancelled",
  };
  // PROTOCOL.md's build id: 1 to 200 characters, no "/", whitespace (Python's str.isspace)
  // or control character. Checked here because one bad id makes the gateway refuse the list.
  const BUILD_ID = /^[^/\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,200}$/u;

  const grid = document.getElementById("grid");
  const connNode = document.getElementById("conn");
  const titleNode = document.getElementById("wall-title");

  // --- state
  const tiles = new Map();      // build id -> tile record, in display order
  const dismissed = new Set();  // watched mode: ended builds that made room (not re-added)
  let source = null;            // the one EventSource, or null
  let generation = 0;           // bumps with every open: late callbacks of older ones are ignored
  let opened = false;           // the current EventSource reached "open"
  let streamIds = [];           // the builds the current stream follows
  let cursor = null;            // the last SSE id: resumes every build of the stream
  let failures = 0;             // attempts failed since the last message
  let retryTimer = 0;
  let retryAt = 0;
  let silenceTimer = 0;
  let lastResyncAt = 0;
  let lastMessageAt = null;     // local time of the last message of any build
  let conn = { state: "connecting", reason: "" };
  const paused = new Set();     // builds whose live updates the gateway said are paused
  const clockSamples = [];      // Date.now() - updatedAtMs of live deltas: the clock offset
  const stats = { streams: 0, snapshots: {}, deltas: 0, resyncs: 0, silentReopens: 0 };
  window.BuildcastWall = { stats, cursor: () => cursor };  // for tests and devtools

  // --- which builds
  const requested = [];
  for (const id of params.getAll("build")) {
    if (id !== "" && !requested.includes(id)) requested.push(id);
  }
  const MODE = requested.length ? "named" : "watched";
  document.body.dataset.mode = MODE;
  for (const id of requested.slice(0, MAX_BUILDS)) {
    addTile(id, null, BUILD_ID.test(id) ? "waiting" : "invalid");
  }
  const overflow = Math.max(0, requested.length - MAX_BUILDS);

  // ------------------------------------------------------------------ helpers

  function numberOr(value, fallback) {
    const n = Number(value);
    return value !== undefined && value !== null && value !== "" && Number.isFinite(n) && n >= 0
      ? n : fallback;
  }

  function parseDuration(text) {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$/.exec(text || "");
    if (!m) return null;
    const unit = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 }[m[2] || "s"];
    return Number(m[1]) * unit;
  }

  /** The upstream's clock, estimated from live deltas, so elapsed times survive a wrong TV clock. */
  function serverNow() {
    return Date.now() - (clockSamples.length ? Math.min(...clockSamples) : 0);
  }

  function sampleClock(updatedAtMs) {
    if (!Number.isFinite(updatedAtMs)) return;
    clockSamples.push(Date.now() - updatedAtMs);  // >= the offset: delivery only adds delay
    if (clockSamples.length > 20) clockSamples.shift();
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // ------------------------------------------------------------------ tiles

  function addTile(id, summary, phase = "waiting") {
    const idNode = el("h2", { class: "tile-id", title: id }, id);
    const flag = el("span", { class: "tile-flag", hidden: "" });
    const prefix = el("span", { class: "status-prefix" });
    const word = el("span", { class: "status-word" });
    const barOk = el("span", { class: "bar ok" });
    const barErr = el("span", { class: "bar err" });
    const bar = el("div", { class: "tile-bar", role: "progressbar", "aria-label": "Partitions available",
      "aria-valuemin": 0 }, barOk, barErr);
    const counts = el("p", { class: "tile-counts" });
    const elapsed = el("p", { class: "tile-elapsed" });
    const failing = el("p", { class: "tile-failing" });
    const node = el("article", { class: "tile tone-pending", "data-build-id": id },
      el("div", { class: "tile-head" }, idNode, flag),
      el("p", { class: "tile-status" }, prefix, word),
      bar, counts, elapsed, failing);
    const tile = { id, node, flag, prefix, word, bar, barOk, barErr, counts, elapsed, failing,
      phase, view: null, summary, note: "" };
    tiles.set(id, tile);
    grid.append(node);
    renderTile(tile);
    return tile;
  }

  function removeTile(id) {
    const tile = tiles.get(id);
    if (!tile) return;
    tiles.delete(id);
    paused.delete(id);
    tile.node.remove();
    dismissed.add(id);
  }

  /** A view without its events: the wall never shows them, and a day of them adds up. */
  function trimmed(view) {
    const { events, ...rest } = view || {};
    rest.partitions = { ...(rest.partitions || {}) };
    return rest;
  }

  function applyChanges(view, changes) {
    for (const [key, value] of Object.entries(changes || {})) {
      if (key === "events") continue;
      if (key === "partitions") Object.assign(view.partitions, value || {});
      else view[key] = value;
    }
  }

  function progressOf(tile) {
    const view = tile.view;
    if (!view) {
      const p = tile.summary?.partitions;
      return p ? { total: p.total || 0, available: p.available || 0, failedCount: p.failed || 0, failed: [] }
        : null;
    }
    const parts = view.partitions || {};
    const keys = Object.keys(parts);
    // In the build's own order: the requested refs first, then any other the view holds.
    const requestedRefs = Array.isArray(view.requestedPartitions) ? view.requestedPartitions : [];
    const inOrder = new Set(requestedRefs.filter((ref) => typeof ref === "string" && ref in parts));
    const refs = [...inOrder, ...keys.filter((ref) => !inOrder.has(ref))];
    let available = 0;
    const failed = [];
    for (const ref of refs) {
      const status = parts[ref]?.status;
      if (status === "PartitionAvailable") available += 1;
      else if (status === "PartitionFailed") failed.push(ref);
    }
    return { total: refs.length, available, failedCount: failed.length, failed };
  }

  function renderTile(tile) {
    const { node } = tile;
    let status = null;
    let statusText;
    if (tile.phase === "invalid") statusText = "not a valid build id";
    else if (tile.phase === "gone") statusText = tile.note || "not found";
    else {
      status = tile.view?.status ?? tile.summary?.status ?? null;
      statusText = status ?? "connecting…";
    }
    const over = tile.phase === "invalid" || tile.phase === "gone";
    const tone = over ? "gone" : status ? TONES[status] || "neutral" : "pending";
    const toneClass = `tile tone-${tone}`;
    if (node.className !== toneClass) node.className = toneClass;
    node.dataset.status = status ?? tile.phase;
    node.dataset.phase = tile.phase;

    // The full status is the tile's text ("BuildRequestExecuting"); its last word is the big one.
    const split = /^(BuildRequest)(?=[A-Z])(.*)$/.exec(statusText);
    setText(tile.prefix, split ? split[1] : "");
    setText(tile.word, split ? split[2] : statusText);

    const stale = !over && Boolean(tile.view?.stale ?? tile.summary?.stale);
    const flag = paused.has(tile.id) ? "paused" : stale ? "stale" : "";
    setText(tile.flag, flag);
    tile.flag.hidden = !flag;
    tile.flag.title = flag === "stale" ? "the gateway cannot read this build upstream: the last good state"
      : flag === "paused" ? "live updates are paused" : "";
    node.classList.toggle("is-stale", Boolean(flag));

    const progress = over ? null : progressOf(tile);
    tile.bar.hidden = tile.counts.hidden = !progress;
    if (progress) {
      const { total, available, failedCount } = progress;
      tile.barOk.style.width = total ? `${(100 * available) / total}%` : "0";
      tile.barErr.style.width = total ? `${(100 * failedCount) / total}%` : "0";
      tile.bar.setAttribute("aria-valuemax", total);
      tile.bar.setAttribute("aria-valuenow", available);
      tile.bar.setAttribute("aria-valuetext", `${available} of ${total} available, ${failedCount} failed`);
      setText(tile.counts, `${available}/${total} available${failedCount ? ` · ${failedCount} failed` : ""}`);
      renderFailing(tile, progress);
    } else {
      renderFailing(tile, null);
    }
    renderElapsed(tile);
  }

  function renderFailing(tile, progress) {
    const failed = progress?.failed || [];
    const key = failed.join("\n");
    if (tile.failingKey === key) return;
    tile.failingKey = key;
    tile.failing.hidden = failed.length === 0;
    const shown = failed.slice(0, FAILED_SHOWN).map((ref) => el("span", { class: "ref" }, ref));
    const parts = [el("span", { class: "label" }, "Failed: ")];
    shown.forEach((span, i) => parts.push(...(i ? [", ", span] : [span])));
    if (failed.length > FAILED_SHOWN) parts.push(el("span", { class: "more" }, ` +${failed.length - FAILED_SHOWN} more`));
    tile.failing.replaceChildren(...(failed.length ? parts : []));
    tile.failing.title = failed.slice(0, 30).join("\n") + (failed.length > 30 ? "\n…" : "");
  }

  function renderElapsed(tile) {
    const view = tile.view;
    if (!view || !Number.isFinite(view.createdAtMs)) {
      tile.elapsed.hidden = true;
      return;
    }
    tile.elapsed.hidden = false;
    if (ENDED.has(view.status)) {
      const end = Number.isFinite(view.updatedAtMs) ? view.updatedAtMs : view.createdAtMs;
      setText(tile.elapsed, `took ${formatDuration(end - view.createdAtMs)} · ended ${formatAgo(end, serverNow())}`);
    } else {
      setText(tile.elapsed, `running ${formatDuration(serverNow() - view.createdAtMs)}`);
    }
  }

  /** Columns and rows for the tile count, so the grid fills the screen without scrolling. */
  function layout() {
    const count = Math.max(1, tiles.size);
    const style = getComputedStyle(grid);
    const gap = parseFloat(style.columnGap) || 0;
    const width = grid.clientWidth - (parseFloat(style.paddingLeft) || 0) - (parseFloat(style.paddingRight) || 0);
    const height = grid.clientHeight - (parseFloat(style.paddingTop) || 0) - (parseFloat(style.paddingBottom) || 0);
    // The shape whose tiles hold the largest type; a tile holds about EM_ACROSS em across and
    // LINES_DOWN lines down. Near-ties go to the shape with fewer empty cells.
    let best = null;
    for (let cols = 1; cols <= count; cols += 1) {
      const rows = Math.ceil(count / cols);
      const w = (width - gap * (cols - 1)) / cols;
      const h = (height - gap * (rows - 1)) / rows;
      const fontPx = Math.min(w / EM_ACROSS, h / LINES_DOWN);
      const empty = cols * rows - count;
      if (!best || fontPx > best.fontPx * 1.03 || (fontPx > best.fontPx * 0.97 && empty < best.empty)) {
        best = { cols, rows, fontPx, empty };
      }
    }
    grid.style.setProperty("--cols", best.cols);
    grid.style.setProperty("--rows", best.rows);
    grid.style.setProperty("--tile-fs", `${Math.max(9, Math.min(best.fontPx, 96)).toFixed(1)}px`);
    renderTitle();
  }

  function renderTitle() {
    const n = tiles.size;
    let text = MODE === "named" ? `${n} build${n === 1 ? "" : "s"}` : `watched builds: ${n}`;
    if (overflow) text += ` (${overflow} more not shown: at most ${MAX_BUILDS})`;
    setText(titleNode, text);
    const empty = grid.querySelector(".wall-empty");
    if (n === 0 && !empty) {
      grid.append(el("p", { class: "wall-empty" },
        "No build is watched right now. Builds appear here when someone opens them; ",
        "or name them: /wall?build=A&build=B"));
    } else if (n > 0 && empty) {
      empty.remove();
    }
  }

  // ------------------------------------------------------------------ the connection

  function wanted() {
    return [...tiles.values()].filter((t) => t.phase === "waiting" || t.phase === "live")
      .map((t) => t.id).slice(0, MAX_BUILDS);
  }

  function sameIds(a, b) {
    return a.length === b.length && a.every((id, i) => id === b[i]);
  }

  /** Reopen the stream if the wall's builds changed; the cursor keeps the others where they were. */
  function syncStream() {
    if (sameIds(wanted(), streamIds) && (source || retryTimer)) return;
    if (retryTimer) return;  // the pending retry opens the stream with the new set
    openStream(true);
  }

  function streamUrl(ids, resume) {
    const query = new URLSearchParams();
    for (const id of ids) query.append("build", id);
    // EventSource cannot set headers: a resume by hand names its position in the query.
    if (resume && cursor) query.set("lastEventId", cursor);
    return `/api/v1/stream?${query}`;
  }

  function openStream(resume) {
    clearTimeout(retryTimer);
    retryTimer = 0;
    closeStream();
    streamIds = wanted();
    if (!streamIds.length) return setConn("idle");
    const gen = ++generation;
    const url = streamUrl(streamIds, resume);
    const es = new EventSource(url);
    source = es;
    opened = false;
    stats.streams += 1;
    armSilence();
    es.addEventListener("open", () => {
      if (gen !== generation) return;
      opened = true;
      if (!paused.size) setConn("live");
    });
    es.addEventListener("snapshot", (e) => onMessage(gen, e, "snapshot"));
    es.addEventListener("delta", (e) => onMessage(gen, e, "delta"));
    es.addEventListener("error", (e) => {
      if (gen !== generation) return;
      if (e.data !== undefined) return onServerError(gen, e);  // the gateway's own `error` message
      const wasOpen = opened;
      closeStream();
      if (!wanted().length) return setConn("idle");
      failures += 1;
      if (wasOpen) {
        // The stream ended (a restart, a cut-off slow client): the first retry comes soon.
        setConn("reconnecting", "connection lost");
        retryLater();
      } else {
        explainFailure(gen, url);
      }
    });
  }

  function closeStream() {
    if (source) source.close();
    source = null;
    opened = false;
    clearTimeout(silenceTimer);
  }

  function retryLater() {
    clearTimeout(retryTimer);
    // Doubling from 1 s up to the cap, and jittered (50-100 %) so that many walls that lost
    // the same gateway do not all come back in the same second.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(Math.max(failures - 1, 0), 16));
    const delay = base / 2 + (Math.random() * base) / 2;
    retryAt = Date.now() + delay;
    retryTimer = setTimeout(() => {
      retryTimer = 0;
      openStream(true);
    }, delay);
    renderConn();
  }

  /** EventSource gives no HTTP status: ask once with fetch why the stream did not open. */
  async function explainFailure(gen, url) {
    let reason = "";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    try {
      const response = await fetch(url, { cache: "no-store", signal: abort.signal });
      if (!response.ok) {
        let error = {};
        try {
          error = (await response.json()).error || {};
        } catch (e) { /* not the gateway's JSON: a proxy's page */ }
        const what = response.status >= 500 ? "gateway unavailable" : "stream refused";
        reason = `${what}: ${error.message || error.code || `HTTP ${response.status}`}`;
      }
    } catch (e) {
      reason = "gateway unreachable";
    } finally {
      clearTimeout(timer);
      abort.abort();  // a stream that opened this time is not ours to keep
    }
    if (gen !== generation || source) return;  // another attempt started meanwhile
    if (reason) setConn("down", reason);
    else failures = Math.min(failures, 1);      // it opens now: a passing failure, retry soon
    retryLater();
  }

  function armSilence() {
    clearTimeout(silenceTimer);
    silenceTimer = setTimeout(() => {
      if (!source) return;
      stats.silentReopens += 1;
      openStream(true);
    }, SILENCE_MS);
  }

  function heard(event) {
    lastMessageAt = Date.now();
    if (event.lastEventId) cursor = event.lastEventId;
    failures = 0;
    armSilence();
    renderConn();
  }

  function onMessage(gen, event, kind) {
    if (gen !== generation) return;  // a late event of a stream already closed
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return resync("a message that is not JSON");
    }
    const tile = tiles.get(message.buildId);
    if (!tile || tile.phase === "gone" || tile.phase === "invalid") {
      heard(event);
      return;  // a build that has left the wall
    }
    if (kind === "snapshot") {
      tile.view = trimmed(message.view);
      tile.view.seq = message.seq;
      stats.snapshots[tile.id] = (stats.snapshots[tile.id] || 0) + 1;
    } else {
      if (!tile.view) return resync(`a delta of ${tile.id} before its snapshot`);
      if (message.seq <= tile.view.seq) return heard(event);  // already applied (an overlapping resume)
      if (message.seq !== tile.view.seq + 1) {
        return resync(`a gap in ${tile.id}: seq ${tile.view.seq} then ${message.seq}`);
      }
      applyChanges(tile.view, message.changes);
      tile.view.seq = message.seq;
      stats.deltas += 1;
      if (message.changes && "updatedAtMs" in message.changes) sampleClock(message.changes.updatedAtMs);
    }
    heard(event);
    tile.phase = "live";
    tile.summary = null;
    if (paused.delete(tile.id) || conn.state !== "live") {
      if (!paused.size) setConn("live");
    }
    renderTile(tile);
  }

  function onServerError(gen, event) {
    if (gen !== generation) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    heard(event);
    const tile = tiles.get(message.buildId);
    if (!tile) return;
    if (message.code === "upstream_unavailable") {
      // A notice, not an end: the stream stays; the build's next message means live again.
      paused.add(tile.id);
      setConn("paused", message.message || "live updates are paused");
      renderTile(tile);
      return;
    }
    // not_found, invalid_build_id (or a code this page does not know): the gateway dropped the
    // build from this stream; the others go on.
    streamIds = streamIds.filter((id) => id !== tile.id);
    if (MODE === "watched") {
      removeTile(tile.id);
      layout();
    } else {
      tile.phase = "gone";
      tile.view = null;
      tile.note = message.code === "not_found" ? "not found"
        : message.code === "invalid_build_id" ? "not a valid build id"
          : String(message.message || message.code || "unavailable");
      paused.delete(tile.id);
      renderTile(tile);
    }
    if (!wanted().length) {
      closeStream();
      setConn("idle");
    }
  }

  function resync(reason) {
    console.info(`buildcast wall: resynchronising after ${reason}`);
    stats.resyncs += 1;
    cursor = null;  // a fresh snapshot of every build
    const now = Date.now();
    const again = now - lastResyncAt < 10_000;
    lastResyncAt = now;
    if (again) {  // resyncs in a row: something is off, do not hammer the gateway
      closeStream();
      failures += 1;
      retryLater();
    } else {
      openStream(false);
    }
  }

  // ------------------------------------------------------------------ connection indicator

  function setConn(state, reason = "") {
    conn = { state, reason };
    renderConn();
  }

  function renderConn() {
    const { state, reason } = conn;
    const now = Date.now();
    const age = lastMessageAt === null ? "" : ` · last message ${formatAgo(lastMessageAt, now)}`;
    let text;
    switch (state) {
      case "live": text = `live${age}`; break;
      case "paused": text = `paused: ${reason}${age}`; break;
      case "idle": text = MODE === "named" ? "nothing to follow" : "waiting for watched builds"; break;
      case "connecting": text = "connecting…"; break;
      default: {
        const wait = retryTimer ? ` · retrying in ${Math.max(1, Math.ceil((retryAt - now) / 1000))} s` : " · retrying…";
        text = `${state === "down" ? "disconnected" : "reconnecting"} (${reason})${wait}${age}`;
      }
    }
    setText(connNode, text);
    connNode.dataset.state = state;
    document.body.dataset.conn = state;
    // The data is stale when it may be behind and the wall knows it: the stream is down or paused.
    document.body.classList.toggle("stale", state === "down" || state === "paused");
  }

  // ------------------------------------------------------------------ watched mode

  async function refreshWatched() {
    try {
      const response = await fetch("/api/v1/watched", { cache: "no-store", signal: AbortSignal.timeout(8000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const { builds } = await response.json();
      mergeWatched(Array.isArray(builds) ? builds : []);
    } catch (e) {
      // The tiles stay as they are; with no stream yet, say why nothing shows.
      if (!source && !retryTimer && conn.state !== "down") setConn("down", "gateway unreachable");
    } finally {
      setTimeout(refreshWatched, WATCHED_MS);
    }
  }

  function mergeWatched(builds) {
    const listed = new Set();
    let added = false;
    for (const build of builds) {
      const id = build?.buildId;
      if (typeof id !== "string" || !BUILD_ID.test(id)) continue;
      listed.add(id);
      const tile = tiles.get(id);
      if (tile) {
        if (!tile.view) {
          tile.summary = build;
          renderTile(tile);
        }
        continue;
      }
      if (dismissed.has(id)) continue;
      if (ENDED.has(build.status) && serverNow() - (build.updatedAtMs ?? 0) > KEEP_ENDED_MS) {
        dismissed.add(id);  // ended long ago: kept watched by someone else, not news for the wall
        continue;
      }
      if (tiles.size >= MAX_BUILDS) continue;
      addTile(id, build);
      added = true;
    }
    // Forget a dismissal once the build is no longer watched: the set stays small all day.
    for (const id of dismissed) if (!listed.has(id)) dismissed.delete(id);
    // A tile stays while the wall follows it even when the list lacks it: after a gateway
    // restart the list is empty until this very wall's stream is back.
    if (added) layout();
    syncStream();
  }

  function expireEnded() {
    if (MODE !== "watched") return;
    let removed = false;
    for (const tile of [...tiles.values()]) {
      const view = tile.view;
      if (view && ENDED.has(view.status) && serverNow() - (view.updatedAtMs ?? 0) > KEEP_ENDED_MS) {
        removeTile(tile.id);
        removed = true;
      }
    }
    if (removed) {
      layout();
      syncStream();
    }
  }

  // ------------------------------------------------------------------ start

  function tick() {
    for (const tile of tiles.values()) renderElapsed(tile);
    expireEnded();
    renderConn();
  }

  let layoutFrame = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(layoutFrame);
    layoutFrame = requestAnimationFrame(layout);
  }).observe(grid);

  layout();
  renderConn();
  if (MODE === "named") openStream(false);
  else refreshWatched();
  setInterval(tick, 1000);
})();
