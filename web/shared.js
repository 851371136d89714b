"use strict";
// The browser's one connection to its gateway: a SharedWorker every tab of the origin (build
// pages, walls) talks to through tabs.js. A browser allows six connections per host, so tabs
// with a stream each had to close the hidden ones' streams; one WebSocket for all of them keeps
// every tab current, hidden or not, for the cost of one connection.
//
// The worker follows the union of the builds its tabs want: one subscription per build, however
// many tabs want it, dropped when none does. It keeps each build's latest view, so a tab that
// joins gets it at once, and relays each build's messages to the tabs that want it (the frame's
// text as it came: the tab parses it, off this thread's copy). A dropped socket comes back after
// a backoff and resubscribes every build `since` its last token: the missed deltas, or a
// snapshot (docs/protocol.md, WebSocket). A socket speaks for one access token: tabs holding
// different tokens get a socket each. A socket follows at most RULES.streamBuilds builds (the
// gateway's cap): past that, the same token's next builds go on another socket.
//
// Tab -> worker: {op: "follow", ids, token} (also the tab's heartbeat), {op: "resend", buildId},
// {op: "bye"}. Worker -> tab, in batches (arrays): {type: "state", link}, {type: "snapshot"|
// "delta", buildId, text or message}, {type: "resync"|"notice"|"end", buildId, ...},
// {type: "refused", refusal}.

importScripts("/static/protocol.js", "/static/common.js", "/static/stream.js");

const TAB_SILENCE_MS = 3 * 60_000; // a tab silent this long is gone (hidden tabs' timers may
                                   // run once a minute; the port's close event is quicker)
const PING_MS = 20_000;            // the server's pings are invisible here: ask for a pong
const SOCKET_SILENCE_MS = 50_000;  // a socket silent this long died without a close: reopen
// The gateway closes a socket sending over 20 frames a second (a burst of 50): a reconnect
// resubscribing a full wall and a build page stays under that.
const FRAMES_PER_S = 15;
const FRAME_BURST = 40;

/** Why a socket did not open: null when the gateway would take it now, else its refusal. The
 * gateway refuses before the upgrade (401, 429, 503): a plain GET gets the same answer, and a
 * 400 (no upgrade asked) when it would have accepted. */
async function explainSocket(url) {
  try {
    const response = await fetch(url, { cache: "no-store", signal: AbortSignal.timeout(EXPLAIN_MS) });
    if (response.ok || response.status === 400 || response.status === 426) return null;
    return await refusalOf(response);
  } catch (e) {
    return { status: 0, code: "", message: "gateway unreachable" };
  }
}

/** One WebSocket, for builds of the tabs holding one access token. */
class Link {
  constructor(token) {
    this.token = token;
    this.builds = new Map();  // id -> {tabs, view, since, heard, retry}
    this.ws = null;
    this.open = false;
    this.failures = 0;
    this.refusal = null;
    this.reason = "";
    this.retryAt = 0;
    this.retryTimer = 0;
    this.heardAt = 0;
    this.attempt = 0;
    this.outgoing = [];        // frames waiting for the pace
    this.allowance = FRAME_BURST;
    this.allowedAt = 0;
    this.paceTimer = 0;
  }

  /** What each of its tabs is told of the connection. */
  get state() {
    const connection = this.open ? "open" : this.ws || this.retryTimer ? "connecting" : "closed";
    return { connection, failures: this.failures, refusal: this.refusal, reason: this.reason,
      retryAt: this.retryAt };
  }

  tabs() {
    const all = new Set();
    for (const build of this.builds.values()) for (const tab of build.tabs) all.add(tab);
    return all;
  }

  /** Tells the tabs whose own build (the first they follow) is on this socket its state. */
  tell() {
    for (const tab of this.tabs()) if (tab.main === this) tab.post({ type: "state", link: this.state });
  }

  want(tab, id) {
    let build = this.builds.get(id);
    if (!build) {
      build = { tabs: new Set(), view: null, since: null, heard: false, retry: 0 };
      this.builds.set(id, build);
      if (this.open) this.subscribe(id);
    } else if (build.view && !build.tabs.has(tab)) {
      tab.post({ type: "snapshot", buildId: id,
        message: { type: "snapshot", buildId: id, id: build.since, seq: build.view.seq, view: build.view } });
    }
    build.tabs.add(tab);
    this.connect();
  }

  unwant(tab, id) {
    const build = this.builds.get(id);
    if (!build) return;
    build.tabs.delete(tab);
    if (build.tabs.size) return;
    this.drop(id);
    if (this.open) this.send({ op: "unsubscribe", buildId: id });
  }

  drop(id) {
    clearTimeout(this.builds.get(id)?.retry);
    this.builds.delete(id);
    if (this.builds.size) return;
    // Nobody wants anything: the connection goes; a later follow opens another.
    this.stop();
  }

  // ------------------------------------------------------------------ the socket

  connect() {
    if (this.ws || this.retryTimer || !this.builds.size) return;
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : "";
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws${query}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener("open", () => this.onOpen(ws));
    ws.addEventListener("message", (e) => this.onMessage(ws, e.data));
    ws.addEventListener("close", (e) => this.onClose(ws, e));
    this.tell();
  }

  stop() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.paceTimer);
    this.paceTimer = 0;
    this.outgoing = [];  // an open socket subscribes its builds afresh
    this.retryTimer = 0;
    this.retryAt = 0;
    this.attempt += 1;
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.open = false;
  }

  send(op) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.outgoing.push(op);
    this.pace();
  }

  /** Sends what the pace allows now, the rest a frame's time later; a closed socket sends
   * nothing (the next one subscribes its builds afresh). */
  pace() {
    if (this.ws?.readyState !== WebSocket.OPEN) {
      this.outgoing = [];
      return;
    }
    const now = Date.now();
    this.allowance = Math.min(FRAME_BURST, this.allowance + ((now - this.allowedAt) * FRAMES_PER_S) / 1000);
    this.allowedAt = now;
    while (this.outgoing.length && this.allowance >= 1) {
      this.ws.send(JSON.stringify(this.outgoing.shift()));
      this.allowance -= 1;
    }
    if (this.outgoing.length && !this.paceTimer) {
      this.paceTimer = setTimeout(() => {
        this.paceTimer = 0;
        this.pace();
      }, 1000 / FRAMES_PER_S);
    }
  }

  subscribe(id) {
    const build = this.builds.get(id);
    build.heard = false;
    this.send(build.since ? { op: "subscribe", buildId: id, since: build.since }
      : { op: "subscribe", buildId: id });
  }

  onOpen(ws) {
    if (ws !== this.ws) return;
    this.open = true;
    this.refusal = null;
    this.heardAt = Date.now();
    for (const id of this.builds.keys()) this.subscribe(id);
    this.tell();
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    const opened = this.open;
    this.ws = null;
    this.open = false;
    if (!this.builds.size) return;
    this.failures += 1;
    this.reason = opened ? `connection lost (${event.code})` : "connection failed";
    if (opened) this.retryLater();
    else this.explain(ws.url);
  }

  async explain(url) {
    const attempt = this.attempt;
    this.tell();
    const refusal = await explainSocket(url.replace(/^ws/, "http"));
    if (attempt !== this.attempt || !this.builds.size) return;
    this.refusal = refusal;
    if (refusal && !isTemporary(refusal)) {
      // The tabs say whether it is final (a page asks for a new token, say): each then lets go
      // of its builds, and with none left this link stops retrying.
      for (const tab of this.tabs()) tab.post({ type: "refused", refusal });
    }
    if (!refusal) this.failures = Math.min(this.failures, 1);
    this.retryLater(refusal?.retryAfterMs);
  }

  retryLater(atLeastMs = 0) {
    if (!this.builds.size) return;
    const delay = Math.max(atLeastMs, backoff(this.failures, 1000, 30_000));
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this.retryAt = 0;
      this.connect();
    }, delay);
    this.tell();
  }

  /** Pings an open socket, and reopens one silent for too long (resuming: nothing is lost). */
  check(now) {
    if (!this.open) return;
    if (now - this.heardAt > SOCKET_SILENCE_MS) {
      this.stop();
      this.failures = 1;
      this.reason = "connection silent";
      this.retryLater();
    } else {
      this.send({ op: "ping" });
    }
  }

  // ------------------------------------------------------------------ messages

  onMessage(ws, text) {
    if (ws !== this.ws || typeof text !== "string") return;
    this.heardAt = Date.now();
    this.failures = 0;
    const message = parseObject(text);
    const build = message && this.builds.get(message.buildId);
    if (!build) return;  // a pong, or a build no tab wants any more
    const id = message.buildId;
    if (message.type === "error") return this.onError(id, build, message);
    if (message.type !== "snapshot" && message.type !== "delta") return;
    if (message.type === "delta") {
      if (!build.view) return this.resync(id, build);
      if (message.seq <= build.view.seq) return;  // already applied: an overlapping resume
      if (message.seq !== build.view.seq + 1) return this.resync(id, build);
      applyDelta(build.view, message.seq, message.changes || {});
    } else {
      build.view = message.view;
      build.view.seq = message.seq;
    }
    build.since = message.id;
    build.heard = true;
    clearTimeout(build.retry);
    build.retry = 0;
    for (const tab of build.tabs) tab.post({ type: message.type, buildId: id, text });
  }

  /** A gap or a delta before any snapshot: the build starts afresh, the others go on. */
  resync(id, build) {
    console.info(`buildcast: resynchronising ${id}`);
    build.view = null;
    build.since = null;
    for (const tab of build.tabs) tab.post({ type: "resync", buildId: id });
    this.subscribe(id);
  }

  onError(id, build, { code, message }) {
    if (code === RULES.paused) {
      for (const tab of build.tabs) tab.post({ type: "notice", buildId: id, text: message });
      // Refused at subscribe (the socket's follows nothing of it yet): ask again later.
      if (!build.heard && !build.retry) {
        build.retry = setTimeout(() => {
          build.retry = 0;
          if (this.builds.get(id) === build) this.subscribe(id);
        }, backoff(2, 1000, 30_000));
      }
      return;
    }
    for (const tab of build.tabs) {
      tab.post({ type: "end", buildId: id, end: { code, message: message || "" } });
      tab.builds.delete(id);
    }
    this.drop(id);
  }
}

const CLOSED = { connection: "closed", failures: 0, refusal: null, reason: "", retryAt: 0 };

/** One tab: its port, the builds it wants (each on the link that carries it), its token. */
class Tab {
  constructor(port) {
    this.port = port;
    this.builds = new Map();  // id -> its Link
    this.token = "";
    this.beatAt = Date.now();
    this.outbox = [];
  }

  /** The link of the tab's own build (the first it follows): the state the tab shows. */
  get main() {
    return this.builds.values().next().value ?? null;
  }

  /** Sends `data` with whatever else this task sends the tab: a burst of frames arrives as one
   * message, applied by the tab in one go (and drawn in one frame). */
  post(data) {
    this.outbox.push(data);
    if (this.outbox.length === 1) setTimeout(() => this.port.postMessage(this.outbox.splice(0)));
  }

  follow(ids, token) {
    this.beatAt = Date.now();
    const key = token || "";
    if (this.token !== key) this.leave();
    this.token = key;
    for (const [id, link] of [...this.builds]) {
      if (!ids.includes(id)) {
        this.builds.delete(id);
        link.unwant(this, id);
      }
    }
    // In order, the tab's own build first: it is on the link whose state the tab shows.
    const had = this.builds;
    this.builds = new Map();
    for (const id of ids) {
      const link = had.get(id) ?? linkFor(key, id);
      link.want(this, id);  // before the next is placed: it counts toward this link's cap
      this.builds.set(id, link);
    }
    this.post({ type: "state", link: this.main?.state ?? CLOSED });
  }

  leave() {
    for (const [id, link] of this.builds) link.unwant(this, id);
    this.builds.clear();
  }
}

const links = new Map();  // access token ("" for none) -> its Links

/** The token's link that carries `id`, else one with room for it, else a new one. */
function linkFor(token, id) {
  if (!links.has(token)) links.set(token, []);
  const pool = links.get(token);
  const found = pool.find((link) => link.builds.has(id))
    ?? pool.find((link) => link.builds.size < RULES.streamBuilds);
  if (found) return found;
  const made = new Link(token);
  pool.push(made);
  return made;
}
const tabs = new Set();

/** A tab closed, or silent for so long it must have: its builds go. Should it speak again
 * (its timers slept), it is taken back with its next heartbeat. */
function bye(tab) {
  if (tabs.delete(tab)) tab.leave();
}

onconnect = (event) => {
  const port = event.ports[0];
  const tab = new Tab(port);
  tabs.add(tab);
  port.addEventListener("message", ({ data }) => {
    if (!tabs.has(tab)) tabs.add(tab);  // a tab thought gone (its timers slept): back again
    if (data?.op === "follow" && Array.isArray(data.ids)) {
      tab.follow(data.ids.filter(isBuildId), typeof data.token === "string" ? data.token : null);
    } else if (data?.op === "resend") {
      const link = tab.builds.get(data.buildId);
      const build = link?.builds.get(data.buildId);
      if (build?.tabs.has(tab)) {
        build.tabs.delete(tab);
        link.want(tab, data.buildId);  // its view again, as to a tab that joins
      }
    } else if (data?.op === "bye") {
      bye(tab);
    }
  });
  port.addEventListener("close", () => bye(tab));  // where the browser says so
  port.start();
};

setInterval(() => {
  const now = Date.now();
  for (const tab of tabs) if (now - tab.beatAt > TAB_SILENCE_MS) bye(tab);
  for (const pool of links.values()) for (const link of pool) link.check(now);
}, PING_MS);
