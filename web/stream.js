"use strict";
// The one stream client of the pages (docs/protocol.md): an EventSource for one build
// (/api/v1/builds/{id}/stream) or for several on one connection (/api/v1/stream?build=A&build=B),
// kept open for as long as the page wants it.
//
// A page gets only what it must apply: each build's snapshot, then its deltas in order. Gaps,
// repeats, resumes, backoff and the reasons a stream would not open are dealt with here, once;
// each page draws its own indicator from `state` whenever it is told that it changed.
//
// Resuming: the `id:` of each message is a cursor, the `~`-joined `EPOCH.SEQ.TAG` token of each
// build, its TAG naming the build. The stream keeps the latest token of every build it follows,
// so any reopen (a drop, a resync, a change of builds, a hidden tab shown again) resumes each
// build where it was. It names the cursor as `?lastEventId=`, and the tab's access token (if it
// holds one: common.js) as `?token=`: EventSource cannot set headers.
//
// A refusal that says when to come back (429 or 503 with Retry-After) waits at least that long
// and is never final; which other refusals end the stream is the page's to say (`isFinal`).

/** Milliseconds before reconnect `attempt` (1, 2, ...): the Python client's formula
 * (gateway/client/updates.py), doubling up to `cap`, jittered down to half so that a crowd
 * cut off at once spreads its return. */
function backoff(attempt, base, cap, rand = Math.random) {
  return Math.min(cap, base * 2 ** Math.min(attempt - 1, 30)) * (0.5 + 0.5 * rand());
}

const EXPLAIN_MS = 10_000;      // how long asking why a stream did not open may take
const RESYNC_CALM_MS = 10_000;  // a resync this soon after the last one waits out a backoff

/** Whether a refusal is one to wait out: the gateway said when to come back. */
function isTemporary({ status, retryAfterMs }) {
  return retryAfterMs !== undefined && (status === 429 || status >= 500);
}

/** The JSON object `text` holds, or null: a message that is anything else is not one of ours. */
function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" ? value : null;
  } catch (e) {
    return null;
  }
}

const tagOf = (token) => token.slice(token.lastIndexOf(".") + 1);
const seqOf = (token) => token.split(".")[1];

/**
 * Why a stream did not open, asked once with fetch since EventSource tells no HTTP status:
 * null when it opens now (the failure was passing), else {status, code, message} from the
 * gateway's error body (and retryAfterMs: refusalOf()); status 0 is a gateway that cannot be
 * reached at all.
 */
async function explainRefusal(url) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), EXPLAIN_MS);
  try {
    const response = await fetch(url, { cache: "no-store", signal: abort.signal });
    const type = response.headers.get("Content-Type") || "";
    if (response.ok && type.startsWith("text/event-stream")) return null;
    const refusal = await refusalOf(response);
    if (response.ok && !refusal.message) refusal.message = "not an event stream";
    return refusal;
  } catch (e) {
    return { status: 0, code: "", message: "gateway unreachable" };
  } finally {
    clearTimeout(timer);
    abort.abort();  // a stream that opens this time is not ours to keep
  }
}

class BuildcastStream {
  /**
   * on: handlers, each optional: state(state), snapshot(buildId, message), delta(buildId,
   *   message), notice(buildId, text) for a pause notice, end(buildId, {code, message, status})
   *   when a build's stream is over for good (buildId null: the whole stream's, refused for
   *   good; a multi-build stream then follows nothing until told what: follow()).
   * multi: the several-build URL even for one build (the wall); else the build's own stream
   *   until follow() names more than one build.
   * baseMs, capMs: the backoff. silenceMs: reopen from the cursor after this long without a
   *   message (0: never). isFinal(refusal): whether a refused stream ends instead of retrying
   *   (never asked of a refusal with Retry-After: that one is waited out).
   * stats: the page's counters, where the stream adds connects, resyncs and silentReopens.
   */
  constructor({ on = {}, multi = false, baseMs = 1000, capMs = 30_000, silenceMs = 0,
    isFinal = () => false, stats = {} }) {
    this.on = on;
    this.multi = multi;
    this.baseMs = baseMs;
    this.capMs = Math.max(baseMs, capMs);
    this.silenceMs = silenceMs;
    this.isFinal = isFinal;
    this.stats = Object.assign(stats, { connects: 0, resyncs: 0, silentReopens: 0 });
    this.builds = [];          // the builds followed, in the order of the stream's URL
    this.failures = 0;         // attempts failed since the last message
    this.refusal = null;       // why the last attempt did not open, while that still holds
    this.reason = "";          // why the stream is reconnecting
    this.retryAt = 0;          // when the pending retry opens, or 0
    this.lastMessageAt = null; // local time of the last message of any build
  }

  #source = null;            // the one EventSource, or null
  #openedAt = null;          // when it opened (performance.now()), null until it has
  #current = false;          // open, or reopened on purpose since: the data is current
  #paused = false;
  #ended = false;
  #attempt = 0;              // bumps whenever an attempt ends: late answers of older ones are dropped
  #retryTimer = 0;
  #silenceTimer = 0;
  #lastResyncAt = 0;
  #resyncsInRow = 0;         // resyncs each within RESYNC_CALM_MS of the one before
  #seqs = new Map();         // build id -> the seq last applied
  #tokens = new Map();       // tag -> that build's latest token: the cursor
  #tags = new Map();         // build id -> its tag, learned from the cursors

  /** What a page shows: connecting, live, reconnecting, down, paused, idle or ended. */
  get state() {
    if (this.#ended) return "ended";
    if (this.#paused) return "paused";
    if (!this.builds.length) return "idle";
    if (this.#current) return "live";
    if (this.refusal) return "down";
    return this.failures ? "reconnecting" : "connecting";
  }

  /** The EventSource itself: closed, connecting or open. */
  get connection() {
    if (!this.#source) return "closed";
    return this.#openedAt === null ? "connecting" : "open";
  }

  /** The id to resume from, or null: the latest token of each build. */
  get cursor() {
    return [...this.#tokens.values()].join("~") || null;
  }

  /** Follows these builds; the stream reopens, from its cursor, only when they changed. */
  follow(ids) {
    const same = ids.length === this.builds.length && ids.every((id, i) => id === this.builds[i]);
    if (same && (this.#source || this.#retryTimer)) return;
    for (const id of this.builds) if (!ids.includes(id)) this.#forget(id);
    this.builds = [...ids];
    if (ids.length > 1) this.multi = true;  // one connection for all, from the same cursor
    if (!this.#retryTimer) this.#open();  // else the pending retry opens with the new set
  }

  /** Gives the connection back (a hidden tab: browsers allow six per host) until resume(). */
  pause() {
    if (this.#ended || this.#paused) return;
    this.#paused = true;
    this.#current = false;
    this.#stop();
    this.#notify();
  }

  /** Reopens a paused stream from its cursor: the missed deltas, no snapshot. */
  resume() {
    if (!this.#paused) return;
    this.#paused = false;
    this.#open();
  }

  /** Closes the stream for good. */
  close() {
    if (this.#ended) return;
    this.#ended = true;
    this.#stop();
    this.#notify();
  }

  // ------------------------------------------------------------------ the connection

  #open() {
    this.#stop();
    if (this.#ended || this.#paused) return;
    if (this.builds.length) {
      const es = new EventSource(this.#url());
      this.#source = es;
      this.stats.connects += 1;
      es.addEventListener("open", () => this.#onOpen(es));
      es.addEventListener("snapshot", (e) => this.#onMessage(es, e));
      es.addEventListener("delta", (e) => this.#onMessage(es, e));
      es.addEventListener("error", (e) => this.#onError(es, e));
      this.#armSilence();
    }
    this.#notify();
  }

  #url() {
    const query = new URLSearchParams();
    if (this.multi) for (const id of this.builds) query.append("build", id);
    const cursor = this.cursor;
    if (cursor) query.set("lastEventId", cursor);
    const token = accessToken();
    if (token) query.set("token", token);
    const path = this.multi
      ? "/api/v1/stream" : `/api/v1/builds/${encodeURIComponent(this.builds[0])}/stream`;
    const search = String(query);
    return search ? `${path}?${search}` : path;
  }

  #stop() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#silenceTimer);
    this.#retryTimer = 0;
    this.retryAt = 0;
    if (this.#source) this.#source.close();
    this.#source = null;
    this.#openedAt = null;
    this.#attempt += 1;
  }

  #onOpen(es) {
    if (es !== this.#source) return;
    this.#openedAt = performance.now();
    this.#current = true;
    this.refusal = null;
    this.#notify();
  }

  #onError(es, event) {
    if (es !== this.#source) return;
    if (event.data !== undefined) return this.#onServerError(event);  // the gateway's `error` message
    // The connection failed or dropped. EventSource would retry by itself, at the pace of the
    // server's `retry:` and with every page of a restarted gateway at once: back off instead.
    const openedAt = this.#openedAt;
    this.#stop();
    this.#current = false;
    // A connection that lasted through heartbeats was sound: its loss starts the count afresh.
    if (openedAt !== null && performance.now() - openedAt > RULES.heartbeatMs) this.failures = 0;
    this.failures += 1;
    if (openedAt === null) {
      this.reason = "connection failed";
      this.#notify();
      this.#explain(es.url);
    } else {
      this.reason = "connection lost";
      this.#retryLater();
    }
  }

  async #explain(url) {
    const attempt = this.#attempt;
    const refusal = await explainRefusal(url);
    if (attempt !== this.#attempt) return;  // paused, closed or reopened meanwhile
    if (refusal && !isTemporary(refusal) && this.isFinal(refusal)) {
      if (this.multi) {  // the page may follow other builds (without those refused, say)
        this.#dropAll();
        this.on.end?.(null, refusal);
      } else {
        this.on.end?.(this.builds[0], refusal);
        this.close();
      }
      return;
    }
    this.refusal = refusal;
    if (!refusal) this.failures = Math.min(this.failures, 1);  // it opens now: retry soon
    this.#retryLater(refusal?.retryAfterMs);
  }

  /** Reopens after the backoff, or after `atLeastMs` when that is longer (a Retry-After). */
  #retryLater(atLeastMs = 0) {
    const delay = Math.max(atLeastMs, backoff(this.failures, this.baseMs, this.capMs));
    this.retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => this.#open(), delay);
    this.#notify();
  }

  #armSilence() {
    if (!this.silenceMs) return;
    clearTimeout(this.#silenceTimer);
    // Heartbeats are SSE comments, which EventSource never surfaces. A connection silent for
    // this long may have died without a FIN (a NAT or a proxy dropping it quietly): reopening
    // from the cursor costs nothing when nothing was missed.
    this.#silenceTimer = setTimeout(() => {
      this.stats.silentReopens += 1;
      this.#open();
    }, this.silenceMs);
  }

  #notify() {
    this.on.state?.(this.state);
  }

  // ------------------------------------------------------------------ messages

  /** A message names its build; on a one-build stream, one that does not is that build's. */
  #buildOf(message) {
    return message.buildId ?? (this.multi ? undefined : this.builds[0]);
  }

  #onMessage(es, event) {
    if (es !== this.#source) return;  // a late event of a stream already closed
    const message = parseObject(event.data);
    if (!message) return this.#resync(null, "a message that is not a JSON object");
    const build = this.#buildOf(message);
    this.#heard(event.lastEventId, build, message.seq);
    if (!this.builds.includes(build)) return;  // a build this stream no longer follows
    const last = this.#seqs.get(build);
    if (event.type === "delta") {
      if (last === undefined) return this.#resync(build, `a delta of ${build} before its snapshot`);
      if (message.seq <= last) return;  // already applied: an overlapping resume
      if (message.seq !== last + 1) {
        return this.#resync(build, `a gap in ${build}: seq ${last} then ${message.seq}`);
      }
    }
    this.#seqs.set(build, message.seq);
    this.on[event.type]?.(build, message);
  }

  #onServerError(event) {
    const message = parseObject(event.data)
      ?? { code: RULES.codes.INTERNAL, message: String(event.data) };
    const build = this.#buildOf(message);
    this.#heard(event.lastEventId, build);
    if (!this.builds.includes(build)) return;
    if (message.code === RULES.paused) {
      // A notice, not an end: the stream stays; the build's next message means live again.
      this.on.notice?.(build, message.message || "live updates are paused");
      return;
    }
    this.on.end?.(build, { code: message.code, message: message.message || "" });
    this.#drop(build);
  }

  #heard(cursor, build, seq) {
    this.lastMessageAt = Date.now();
    this.failures = 0;
    if (cursor) this.#takeCursor(cursor, build, seq);
    this.#armSilence();
  }

  /** Keeps each build's latest token: the gateway's cursor, and the token of any build it
   * leaves out (one it resumed with nothing missed is named again only when it has news). */
  #takeCursor(cursor, build, seq) {
    const tokens = new Map(cursor.split("~").map((token) => [tagOf(token), token]));
    if (seq !== undefined && !this.#tags.has(build)) this.#learnTag(build, String(seq), tokens);
    for (const id of this.builds) {
      const tag = this.#tags.get(id);
      if (tag !== undefined && !tokens.has(tag) && this.#tokens.has(tag)) {
        tokens.set(tag, this.#tokens.get(tag));
      }
    }
    this.#tokens = tokens;
  }

  /** A build's tag is a hash the page cannot compute: it is the one token at the seq of the
   * build's message that no other build owns. Left unknown while two tokens qualify. */
  #learnTag(build, seq, tokens) {
    if (!this.builds.includes(build)) return;
    const owned = new Set(this.#tags.values());
    const mine = [...tokens].filter(([tag, token]) => !owned.has(tag) && seqOf(token) === seq);
    if (mine.length === 1) this.#tags.set(build, mine[0][0]);
  }

  /** Starts a build afresh (every build for null, or when its tag is unknown): its token leaves
   * the cursor, so the gateway sends its snapshot while the others resume where they are. */
  #resync(build, reason) {
    console.info(`buildcast: resynchronising after ${reason}`);
    this.stats.resyncs += 1;
    const tag = this.#tags.get(build);
    if (tag === undefined) this.#tokens.clear();
    else this.#tokens.delete(tag);
    const now = Date.now();
    this.#resyncsInRow = now - this.#lastResyncAt < RESYNC_CALM_MS ? this.#resyncsInRow + 1 : 0;
    this.#lastResyncAt = now;
    if (!this.#resyncsInRow) {
      this.#open();
      return;
    }
    // Resyncs in a row: something is off, and reopening at once each time would hammer the
    // gateway. The snapshots in between reset `failures`: the run is what backs off.
    this.#stop();
    this.#current = false;
    this.failures = this.#resyncsInRow;
    this.reason = "resynchronising";
    this.#retryLater();
  }

  /** The gateway ended `build`'s stream: the others go on; with none left the stream closes. */
  #drop(build) {
    this.builds = this.builds.filter((id) => id !== build);
    this.#forget(build);
    if (this.builds.length) return;
    if (!this.multi) {
      this.close();
      return;
    }
    this.#stop();
    this.#notify();
  }

  #dropAll() {
    for (const id of this.builds) this.#forget(id);
    this.builds = [];
    this.refusal = null;
    this.failures = 0;
    this.#stop();
    this.#notify();
  }

  #forget(build) {
    this.#tokens.delete(this.#tags.get(build));
    this.#tags.delete(build);
    this.#seqs.delete(build);
  }
}
