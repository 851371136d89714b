"use strict";
// A page's stream, shared by every tab of the browser: openStream() gives a page what a
// BuildcastStream (stream.js) gives it, the same handlers, properties and methods, backed by
// the SharedWorker of shared.js, which holds one WebSocket for all the tabs of this gateway.
// A tab then costs no connection of its own, so a hidden one keeps following (`shared`).
// Where there is no SharedWorker, the tab has its own EventSource as before.

// How often a tab tells the worker it is there (shared.js); a test may set it shorter.
const TAB_BEAT_MS = numberOr(window.BUILDCAST_TAB_BEAT_MS, 10_000);

/** The page's stream: the browser's shared one where it can be, else the tab's own. */
function openStream(options) {
  if (typeof SharedWorker === "function") return new SharedStream(options);
  // The tab's own: a connection of its own, so a hidden tab gives it back (`shared` false).
  return Object.assign(new BuildcastStream(options), { shared: false });
}

/**
 * A tab's share of the worker's connection. The worker relays each build's messages in order;
 * this checks them again (a gap asks the worker for the build's view) and keeps the cursor.
 * Options as BuildcastStream's: on, multi, isFinal, stats (baseMs, capMs, silenceMs are the
 * worker's own).
 */
class SharedStream {
  constructor({ on = {}, multi = false, isFinal = () => false, stats = {} }) {
    this.on = on;
    this.multi = multi;
    this.isFinal = isFinal;
    this.stats = Object.assign(stats, { connects: 0, resyncs: 0, silentReopens: 0 });
    this.shared = true;
    this.builds = [];
    this.failures = 0;
    this.refusal = null;
    this.reason = "";
    this.retryAt = 0;
    this.lastMessageAt = null;
    this.#join();
    setInterval(() => this.#beat(), TAB_BEAT_MS);
    window.addEventListener("pagehide", () => this.#port.postMessage({ op: "bye" }));
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) this.#tell();  // back from the back/forward cache
    });
  }

  #port = null;
  #link = "closed";       // the worker's socket: closed, connecting or open
  #ended = false;
  #paused = false;
  #seqs = new Map();      // build id -> the seq last applied
  #tokens = new Map();    // build id -> its latest resume token
  #heardAt = 0;           // when the worker last spoke
  #beatAt = 0;            // when this tab last told it what it follows

  get state() {
    if (this.#ended) return "ended";
    if (this.#paused) return "paused";
    if (!this.builds.length) return "idle";
    if (this.#link === "open") return "live";
    if (this.refusal) return "down";
    return this.failures ? "reconnecting" : "connecting";
  }

  get connection() {
    return this.#ended || this.#paused || !this.builds.length ? "closed" : this.#link;
  }

  get cursor() {
    return [...this.#tokens.values()].join("~") || null;
  }

  follow(ids) {
    if (ids.length === this.builds.length && ids.every((id, i) => id === this.builds[i])) return;
    for (const id of this.builds) if (!ids.includes(id)) this.#forget(id);
    this.builds = [...ids];
    this.#tell();
    this.#notify();
  }

  /** Lets go of the builds (the page left) until resume(): the worker then sends their views. */
  pause() {
    if (this.#ended || this.#paused) return;
    this.#paused = true;
    this.#tell();
    this.#notify();
  }

  resume() {
    if (!this.#paused) return;
    this.#paused = false;
    for (const id of this.builds) this.#seqs.delete(id);
    this.#tell();
    this.#notify();
  }

  close() {
    if (this.#ended) return;
    this.#ended = true;
    this.#tell();
    this.#notify();
  }

  // ------------------------------------------------------------------ the worker

  /** Talks to the worker, a new one if the last stopped answering: it is told what this tab
   * follows, and sends each build's view. */
  #join() {
    this.#port?.close();
    const port = new SharedWorker("/static/shared.js", { name: "buildcast" }).port;
    this.#port = port;
    port.addEventListener("message", (e) => {
      if (port !== this.#port) return;
      for (const data of e.data) this.#onMessage(data);
    });
    port.start();
    this.#heardAt = Date.now();
    for (const id of this.builds) this.#seqs.delete(id);
    this.#tell();
  }

  #tell() {
    this.#beatAt = Date.now();
    const ids = this.#ended || this.#paused ? [] : this.builds;
    this.#port.postMessage({ op: "follow", ids, token: accessToken() });
  }

  /** The tab's heartbeat. The worker answers each: none since the last one means it is gone. */
  #beat() {
    if (this.#ended) return;
    if (this.#heardAt < this.#beatAt && this.builds.length && !this.#paused) this.#join();
    else this.#tell();
  }

  #notify() {
    this.on.state?.(this.state);
  }

  #onMessage(data) {
    this.#heardAt = Date.now();
    if (this.#ended) return;
    const { type, buildId } = data;
    if (type === "state") return this.#onState(data.link);
    if (type === "refused") return this.#onRefused(data.refusal);
    if (!this.builds.includes(buildId) || this.#paused) return;
    if (type === "snapshot" || type === "delta") {
      return this.#onUpdate(type, buildId, data.message ?? parseObject(data.text));
    }
    if (type === "resync") this.stats.resyncs += 1;
    else if (type === "notice") this.on.notice?.(buildId, data.text || "live updates are paused");
    else if (type === "end") this.#onEnd(buildId, data.end);
  }

  #onState(link) {
    if (link.connection === "open" && this.#link !== "open") this.stats.connects += 1;
    this.#link = link.connection;
    this.failures = link.failures;
    this.refusal = link.refusal;
    this.reason = link.reason;
    this.retryAt = link.retryAt;
    this.#notify();
  }

  #onUpdate(type, build, message) {
    if (!message) return;
    const last = this.#seqs.get(build);
    if (type === "delta") {
      // None applied yet: the build's view is on its way (the worker sends it to a tab first).
      if (last === undefined || message.seq <= last) return;
      if (message.seq !== last + 1) {
        this.stats.resyncs += 1;
        this.#seqs.delete(build);
        this.#port.postMessage({ op: "resend", buildId: build });
        return;
      }
    }
    this.#seqs.set(build, message.seq);
    if (message.id) this.#tokens.set(build, message.id);
    this.lastMessageAt = Date.now();
    this.on[type]?.(build, message);
  }

  /** The worker's socket was refused, not for a while: the page says whether that is final. */
  #onRefused(refusal) {
    if (!this.builds.length || !this.isFinal(refusal)) return;
    if (this.multi) {
      for (const id of this.builds) this.#forget(id);
      this.builds = [];
      this.#tell();
      this.on.end?.(null, refusal);
      this.#notify();
    } else {
      this.on.end?.(this.builds[0], refusal);
      this.close();
    }
  }

  #onEnd(build, end) {
    this.builds = this.builds.filter((id) => id !== build);
    this.#forget(build);
    this.on.end?.(build, end);
    if (!this.builds.length && !this.multi) this.close();
    else this.#notify();
  }

  #forget(build) {
    this.#seqs.delete(build);
    this.#tokens.delete(build);
  }
}
