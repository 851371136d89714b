"use strict";
// The wall display (/wall): a grid of build tiles for a screen across the room, all day long.
//
// Which builds: the ones named in the query (/wall?build=A&build=B), else every build this
// gateway watches (GET /api/v1/watched, re-read every WATCHED_MS). All of them come over ONE
// multi-build stream (stream.js). When the set changes, the stream reopens from its cursor:
// the builds it already had resume where they were, only new ones get a snapshot. A failed
// stream is reopened forever, with capped, jittered backoff, and a silent one after SILENCE_MS.
// Nothing needs a click. Every text from the gateway goes into the DOM as text, never as HTML.
//
// A plain /wall (no build= in the query) also shows, in a strip under the grid, the builds the
// deployment watched lately (GET /api/v1/recent: the last 24 h, with their last stored state)
// that no tile shows, failures first; failed tiles come first in the grid too. Those builds are
// never followed (a stream would keep them watched): they are read again with the watched list.
// An ended wall (no access, every named build gone) links back to the home page.
//
// Query: build=ID (repeatable, up to 50), keep=DURATION (how long an ended build stays in
// watched mode: "600", "90s", "10m", "1h", "500ms"; a bare number is seconds), token=T (the
// access token: common.js keeps it and takes it out of the address bar).
//
// Access: with no token, or a refused or expired one, the wall says so and stops: a wall
// cannot get a new token by itself. A build the token does not name gets a tile saying so
// (the gateway refuses a stream naming any such build: the wall asks which, and follows the
// others).
// Tests may set window.BUILDCAST_WALL_KEEP_ENDED_MS, ..._WATCHED_MS, ..._MAX_BACKOFF_MS and
// ..._SILENCE_MS before the page runs.

(() => {
  const params = new URLSearchParams(location.search);
  const KEEP_ENDED_MS = parseDuration(params.get("keep"))
    ?? numberOr(window.BUILDCAST_WALL_KEEP_ENDED_MS, 10 * 60_000);
  const WATCHED_MS = numberOr(window.BUILDCAST_WALL_WATCHED_MS, 10_000);
  const MAX_BACKOFF_MS = numberOr(window.BUILDCAST_WALL_MAX_BACKOFF_MS, 30_000);
  // Heartbeats are invisible to EventSource: this long without a message means a dead stream.
  const SILENCE_MS = numberOr(window.BUILDCAST_WALL_SILENCE_MS, 90_000);
  const MAX_BUILDS = RULES.streamBuilds;  // the gateway's limit for one stream
  const FAILED_SHOWN = 3;       // failing partitions named on a tile before "+N more"
  const EM_ACROSS = 17;         // a tile's width in em of its type...
  const LINES_DOWN = 13;        // ...and its height in lines: the type scales with the tile
  const { NOT_FOUND, INVALID_BUILD_ID, UNAUTHORIZED, FORBIDDEN } = RULES.codes;

  const grid = document.getElementById("grid");
  const connNode = document.getElementById("conn");
  const titleNode = document.getElementById("wall-title");
  const homeLink = el("a", { href: "/", class: "wall-home", hidden: "" }, "Back to the home page");
  connNode.after(homeLink);

  // --- state
  const tiles = new Map();      // build id -> tile record, in display order
  const dismissed = new Set();  // watched mode: ended builds that made room (not re-added)
  const paused = new Set();     // builds whose live updates the gateway said are paused
  let pauseReason = "";         // the last such notice
  let listDown = null;          // why the watched list cannot be read; "" once it was, null before
  let denied = "";              // why the gateway wants a (new) access token: the wall stopped
  let sorting = false;          // asking which builds the token does not name: no reopen meanwhile
  const clockSamples = [];      // Date.now() - updatedAtMs of live deltas: the clock offset
  const stats = { snapshots: {}, deltas: 0 };  // the stream adds connects, resyncs, silentReopens
  const stream = openStream({
    multi: true, stats, capMs: MAX_BACKOFF_MS, silenceMs: SILENCE_MS,
    // Anything else is retried forever: nobody is there to click.
    isFinal: ({ status }) => status === 401 || status === 403,
    on: { state: renderConn, snapshot: onSnapshot, delta: onDelta, notice: onNotice, end: onEnd },
  });
  window.BuildcastWall = { stats, cursor: () => stream.cursor };  // for tests and devtools

  // --- which builds
  const requested = [];
  for (const id of params.getAll("build")) {
    if (id !== "" && !requested.includes(id)) requested.push(id);
  }
  const MODE = requested.length ? "named" : "watched";
  document.body.dataset.mode = MODE;
  for (const id of requested.slice(0, MAX_BUILDS)) {
    // Checked here: one bad id would make the gateway refuse the whole stream.
    addTile(id, null, isBuildId(id) ? "waiting" : "invalid");
  }
  const overflow = Math.max(0, requested.length - MAX_BUILDS);

  // ------------------------------------------------------------------ helpers

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

  // ------------------------------------------------------------------ tiles

  function addTile(id, summary, phase = "waiting") {
    const idNode = el("h2", { class: "tile-id", title: id }, id);
    const flag = el("span", { class: "tile-flag", hidden: "" });
    const prefix = el("span", { class: "status-prefix" });
    const word = el("span", { class: "status-word" });
    const meter = progressBar("div", "tile-bar");
    const counts = el("p", { class: "tile-counts" });
    const elapsed = el("p", { class: "tile-elapsed" });
    const failing = el("p", { class: "tile-failing" });
    const node = el("article", { class: "tile tone-pending", "data-build-id": id },
      el("div", { class: "tile-head" }, idNode, flag),
      el("p", { class: "tile-status" }, prefix, word),
      meter.bar, counts, elapsed, failing);
    const tile = { id, node, flag, prefix, word, meter, counts, elapsed, failing,
      phase, view: null, summary, note: "", notePrefix: "" };
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
    const tone = over ? "gone" : status ? toneOf(status, TILE_TONES) : "pending";
    const toneClass = `tile tone-${tone}`;
    if (node.className !== toneClass) node.className = toneClass;
    node.dataset.status = status ?? tile.phase;
    node.dataset.phase = tile.phase;

    // The full status is the tile's text ("BuildRequestExecuting"); its last word is the big one.
    const split = /^(BuildRequest)(?=[A-Z])(.*)$/.exec(statusText);
    setText(tile.prefix, split ? split[1] : tile.phase === "gone" ? tile.notePrefix : "");
    setText(tile.word, split ? split[2] : statusText);

    renderFlag(tile, over);

    const progress = over ? null : progressOf(tile);
    tile.meter.bar.hidden = tile.counts.hidden = !progress;
    if (progress) {
      const { total, available, failedCount } = progress;
      setProgress(tile.meter, { total, available, failed: failedCount });
      setText(tile.counts, `${available}/${total} available${failedCount ? ` · ${failedCount} failed` : ""}`);
      renderFailing(tile, progress);
    } else {
      renderFailing(tile, null);
    }
    renderElapsed(tile);
  }

  /** "paused", or "stale" with the data's age when the gateway said when the upstream last
   * answered; the flag moves with the clock. */
  function renderFlag(tile, over = tile.phase === "invalid" || tile.phase === "gone") {
    const data = tile.view ?? tile.summary;
    const stale = !over && Boolean(data?.stale);
    const checkedAt = stale && Number.isFinite(data.checkedAtMs) ? data.checkedAtMs : null;
    let flag = "";
    if (paused.has(tile.id)) flag = "paused";
    else if (stale) flag = checkedAt === null ? "stale" : `stale · ${formatAgo(checkedAt, serverNow())}`;
    setText(tile.flag, flag);
    tile.flag.hidden = !flag;
    tile.flag.title = paused.has(tile.id) ? "live updates are paused"
      : !stale ? ""
        : checkedAt === null ? "the gateway cannot read this build upstream: the last good state"
          : `the gateway cannot read this build upstream: the last good state, from ${formatDateTime(checkedAt)}`;
    tile.node.classList.toggle("is-stale", Boolean(flag));
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

  // ------------------------------------------------------------------ the stream

  function wanted() {
    return [...tiles.values()].filter((t) => t.phase === "waiting" || t.phase === "live")
      .map((t) => t.id).slice(0, MAX_BUILDS);
  }

  function followWanted() {
    if (!sorting && !denied) stream.follow(wanted());
  }

  function onSnapshot(id, message) {
    const tile = tiles.get(id);
    tile.view = trimmed(message.view);
    stats.snapshots[id] = (stats.snapshots[id] || 0) + 1;
    heardFrom(tile);
  }

  function onDelta(id, message) {
    const tile = tiles.get(id);
    const { events, ...changes } = message.changes || {};  // the wall never shows events
    applyDelta(tile.view, message.seq, changes);
    stats.deltas += 1;
    if ("updatedAtMs" in changes) sampleClock(changes.updatedAtMs);
    heardFrom(tile);
  }

  function heardFrom(tile) {
    tile.phase = "live";
    tile.summary = null;
    paused.delete(tile.id);  // its next message means live again
    renderTile(tile);
    renderConn();
  }

  function onNotice(id, text) {
    paused.add(id);
    pauseReason = text;
    renderTile(tiles.get(id));
    renderConn();
  }

  /** The gateway dropped a build from the stream (not_found, ...); the others go on. A null
   * id: it refused the whole stream for good (401, 403). */
  function onEnd(id, { code, message, status }) {
    if (code === UNAUTHORIZED || (!code && status === 401)) {
      deny(message);
      return;
    }
    if (id === null) {
      sortOutRefusal(message || code || `HTTP ${status}`);
      return;
    }
    const tile = tiles.get(id);
    if (!tile) return;
    paused.delete(id);
    if (MODE === "watched") {
      removeTile(id);
      layout();
    } else {
      tile.phase = "gone";
      tile.view = null;
      tile.note = code === NOT_FOUND ? "not found"
        : code === INVALID_BUILD_ID ? "not a valid build id"
          : code === FORBIDDEN ? "not allowed" : message || code || "unavailable";
      tile.notePrefix = code === FORBIDDEN ? "the access token does not name it" : "";
      renderTile(tile);
    }
    renderConn();
  }

  /** No token, or one refused or expired: every tile stops, the indicator says why. */
  function deny(message) {
    forgetToken();  // a reload then relies on the cookie, or on a link with a new token
    denied = tokenRefusedText(message);
    stream.close();
    for (const tile of tiles.values()) {
      if (tile.phase !== "waiting" && tile.phase !== "live") continue;
      tile.phase = "gone";
      tile.view = null;
      tile.note = "no access";
      tile.notePrefix = "access token missing or expired";
      renderTile(tile);
    }
    renderConn();
  }

  /**
   * The gateway refused the whole stream (403): a build the token does not name spoils it for
   * every other. Which ones is asked build by build (the view's route, HEAD: the answer is
   * the status); their tiles say so and the stream follows the others.
   */
  async function sortOutRefusal(why) {
    const ids = wanted();
    sorting = true;
    const answers = await Promise.all(ids.map(async (id) => {
      try {
        const path = `/api/v1/builds/${encodeURIComponent(id)}`;
        return (await apiFetch(path, { method: "HEAD", signal: AbortSignal.timeout(10_000) })).status;
      } catch (e) {
        return 0;
      }
    }));
    sorting = false;
    if (denied) return;
    if (answers.includes(401)) {
      deny("");
      return;
    }
    const refused = ids.filter((id, i) => answers[i] === 403);
    if (!refused.length) {  // it would refuse again, for a reason the wall cannot tell apart
      denied = `The gateway refused the stream: ${why}`;
      stream.close();
      renderConn();
      return;
    }
    for (const id of refused) onEnd(id, { code: FORBIDDEN, message: "" });
    followWanted();
  }

  // ------------------------------------------------------------------ connection indicator

  /** The stream's state, with what only the wall knows: pause notices, the watched list. */
  function connState() {
    if (denied) return { state: "denied", reason: denied };
    const state = stream.state;
    if (state === "live" && paused.size) return { state: "paused", reason: pauseReason };
    if (state === "idle") {
      if (listDown) return { state: "down", reason: listDown };
      return { state: MODE === "watched" && listDown === null ? "connecting" : "idle" };
    }
    if (state === "down") return { state, reason: refusalText(stream.refusal) };
    return { state, reason: stream.reason };
  }

  function refusalText({ status, code, message }) {
    if (status === 0) return message;
    return `${status >= 500 ? "gateway unavailable" : "stream refused"}: ${message || code || `HTTP ${status}`}`;
  }

  function renderConn() {
    const { state, reason = "" } = connState();
    const now = Date.now();
    const last = stream.lastMessageAt;
    const age = last === null ? "" : ` · last message ${formatAgo(last, now)}`;
    let text;
    switch (state) {
      case "live": text = `live${age}`; break;
      case "paused": text = `paused: ${reason}${age}`; break;
      case "idle": text = MODE === "named" ? "nothing to follow" : "waiting for watched builds"; break;
      case "connecting": text = "connecting…"; break;
      case "denied": text = reason; break;
      default: {
        const { retryAt } = stream;
        const wait = retryAt ? ` · retrying in ${Math.max(1, Math.ceil((retryAt - now) / 1000))} s` : " · retrying…";
        text = `${state === "down" ? "disconnected" : "reconnecting"} (${reason})${wait}${age}`;
      }
    }
    setText(connNode, text);
    const over = [...tiles.values()].every((t) => t.phase === "gone" || t.phase === "invalid");
    homeLink.hidden = !(state === "denied" || (MODE === "named" && tiles.size && over));
    connNode.dataset.state = state;
    document.body.dataset.conn = state;
    // The data is stale when it may be behind and the wall knows it: the stream is down or paused.
    document.body.classList.toggle("stale", state === "down" || state === "paused" || state === "denied");
  }

  // ------------------------------------------------------------------ watched mode

  async function refreshWatched() {
    try {
      const builds = await fetchWatched();
      if (denied) return;
      listDown = "";
      mergeWatched(builds);
      await refreshRecent();
    } catch (e) {
      if (e.status === 401) {
        deny(e.message);
      } else {
        listDown = "gateway unreachable";  // the tiles stay as they are
        renderConn();
      }
    } finally {
      if (!denied) setTimeout(refreshWatched, WATCHED_MS);
    }
  }

  function mergeWatched(builds) {
    const listed = new Set();
    let added = false;
    for (const build of builds) {
      const id = build?.buildId;
      if (!isBuildId(id)) continue;
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
    failuresFirst();
    followWanted();
  }

  /** Failed builds' tiles first; the others keep their order. */
  function failuresFirst() {
    const all = [...tiles.values()];
    const failed = all.filter((t) => t.node.dataset.status === "BuildRequestFailed");
    const order = [...failed, ...all.filter((t) => !failed.includes(t))].map((t) => t.node);
    const current = [...grid.querySelectorAll(":scope > .tile")];
    if (order.some((node, i) => node !== current[i])) grid.append(...order);
  }

  // ------------------------------------------------------------------ watched lately

  const RECENT_SHOWN = 24;  // entries in the strip before "+N more": it never scrolls
  const recentHead = el("h2", { class: "recent-head" });
  const recentList = el("ol", { class: "recent-list" });
  const recentStrip = el("section", { class: "wall-recent", "aria-label": "Builds watched lately",
    hidden: "" }, recentHead, recentList);
  if (MODE === "watched") grid.after(recentStrip);
  let recentBuilds = [];
  let recentKey = "";

  async function refreshRecent() {
    try {
      const { builds } = await fetchJson("/api/v1/recent");
      recentBuilds = Array.isArray(builds) ? builds : [];
    } catch (e) { /* the last list stays: the watched list says whether the gateway answers */ }
    renderRecent();
  }

  /** The builds of the last day no tile shows, failures first, then the latest watched. */
  function renderRecent() {
    const isFailed = (b) => b.status === "BuildRequestFailed";
    const shown = recentBuilds.filter((b) => isBuildId(b?.buildId) && !tiles.has(b.buildId));
    const ordered = [...shown.filter(isFailed), ...shown.filter((b) => !isFailed(b))];
    const now = serverNow();
    const key = ordered.map((b) => [b.buildId, b.status, JSON.stringify(b.partitions),
      formatAgo(b.lastWatchedAtMs, now)].join(" ")).join("\n");
    if (key === recentKey) return;
    recentKey = key;
    recentStrip.hidden = !ordered.length;
    const failed = ordered.filter(isFailed).length;
    setText(recentHead, `Watched lately (24 h): ${ordered.length}${failed ? ` · ${failed} failed` : ""}`);
    const items = ordered.slice(0, RECENT_SHOWN).map((b) => recentItem(b, now));
    if (ordered.length > RECENT_SHOWN) {
      items.push(el("li", { class: "recent-more" }, `+${ordered.length - RECENT_SHOWN} more`));
    }
    recentList.replaceChildren(...items);
  }

  function recentItem(build, now) {
    const status = typeof build.status === "string" ? build.status : null;
    const p = build.partitions || {};
    const failed = Number(p.failed) || 0;
    const counts = `${Number(p.available) || 0}/${Number(p.total) || 0} available`
      + (failed ? ` · ${failed} failed` : "");
    return el("li", { class: `recent-build tone-${status ? toneOf(status, TILE_TONES) : "neutral"}`,
      "data-build-id": build.buildId, "data-status": status ?? "" },
      el("a", { href: `/builds/${encodeURIComponent(build.buildId)}`, class: "recent-id" }, build.buildId),
      el("span", { class: "recent-status" }, statusLabel(status)),
      el("span", { class: "recent-counts" }, counts),
      el("span", { class: "recent-ago" }, `watched ${formatAgo(build.lastWatchedAtMs, now)}`));
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
      followWanted();
    }
  }

  // ------------------------------------------------------------------ start

  function tick() {
    for (const tile of tiles.values()) {
      renderElapsed(tile);
      renderFlag(tile);
    }
    expireEnded();
    if (MODE === "watched") {
      failuresFirst();
      renderRecent();
    }
    renderConn();
  }

  let layoutFrame = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(layoutFrame);
    layoutFrame = requestAnimationFrame(layout);
  }).observe(grid);

  layout();
  renderConn();
  if (MODE === "named") followWanted();
  else refreshWatched();
  setInterval(tick, 1000);
})();
