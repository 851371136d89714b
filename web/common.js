"use strict";
// Shared by the pages: the access token, DOM building that only ever sets text (never HTML),
// status colours, progress bars, time formatting in the viewer's own time zone, the watched
// list, settings.

// ------------------------------------------------------------------ the access token
// A page opened with `?token=T` (a link handed out, how a wall screen logs in) keeps T for
// this tab in sessionStorage and takes it out of the address bar at once: it is then neither
// bookmarked, copied with the link nor kept in the history. Every request of the page then
// carries it: `?token=` on EventSource URLs (EventSource cannot set headers), a Bearer header
// on fetch(). A page with no token relies on the gateway's cookie (an SSO proxy sets it),
// which same-origin requests carry by themselves.

const TOKEN_KEY = "buildcast.token";
let tokenInMemory = null;  // where sessionStorage is unavailable (storage blocked)

/** The access token this tab holds, or null (then the cookie, if any, speaks for it). */
function accessToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? tokenInMemory;
  } catch (e) {
    return tokenInMemory;
  }
}

function keepToken(token) {
  tokenInMemory = token;
  try {
    if (token === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token);
  } catch (e) { /* kept in memory for this page only */ }
}

/** Drops the token the gateway refused: a reload then relies on the cookie, or a new link. */
function forgetToken() {
  keepToken(null);
}

/** Moves `?token=` from the address bar into the tab's storage; the other parameters stay as
 * they were written. Runs once, before any page script reads `location.search`. */
function takeToken() {
  const given = new URLSearchParams(location.search).get("token");
  if (given === null) return;
  const isToken = (pair) => {
    try {
      return decodeURIComponent(pair.split("=")[0].replace(/\+/g, " ")) === "token";
    } catch (e) {
      return false;
    }
  };
  const kept = location.search.slice(1).split("&").filter((pair) => pair && !isToken(pair));
  const search = kept.length ? `?${kept.join("&")}` : "";
  history.replaceState(history.state, "", `${location.pathname}${search}${location.hash}`);
  if (given.trim()) keepToken(given.trim());
}

takeToken();

/** fetch() of a gateway API path, with the tab's token (if it holds one) as a Bearer header. */
function apiFetch(path, init = {}) {
  const headers = new Headers(init.headers);
  const token = accessToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  return fetch(path, { cache: "no-store", ...init, headers });
}

/** A gateway's refusal as {status, code, message}, from its JSON error body when it has one;
 * `retryAfterMs` too when it said when to come back (Retry-After: seconds, or a date). */
async function refusalOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch (e) { /* not the gateway's JSON: a proxy's page */ }
  const refusal = { status: response.status, code: error.code || "", message: error.message || "" };
  const after = response.headers.get("Retry-After");
  if (after !== null && after.trim() !== "") {
    const seconds = /^\s*\d+\s*$/.test(after) ? Number(after) : (Date.parse(after) - Date.now()) / 1000;
    if (Number.isFinite(seconds)) refusal.retryAfterMs = Math.max(0, seconds * 1000);
  }
  return refusal;
}

/** What a person reads when the gateway wants a token it was not given, or a fresh one. */
function tokenRefusedText(message) {
  const why = message ? ` (the gateway says: ${message})` : "";
  return `Access token missing or expired: open this page again with a new token${why}.`;
}

// ------------------------------------------------------------------ DOM

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));  // strings become text nodes
    }
  }
  return node;
}

/** Sets a node's text only when it differs: equal text written again still replaces the node
 * and invalidates layout, every second on a wall of tiles. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// The seed's colours: success for done, warning for in progress, error for failed,
// neutral for everything else (including statuses this page does not know).
const TONES = {
  BuildRequestCompleted: "success", PartitionAvailable: "success", JobCompleted: "success",
  BuildRequestExecuting: "warning", PartitionBuilding: "warning", JobRunning: "warning",
  BuildRequestFailed: "error", PartitionFailed: "error", JobFailed: "error",
};

// The wall's tiles tell more apart, for a screen read from across the room: waiting, running,
// cancelled.
const TILE_TONES = {
  BuildRequestReceived: "pending", BuildRequestPlanning: "pending",
  BuildRequestExecuting: "running", BuildRequestCompleted: "success",
  BuildRequestFailed: "error", BuildRequestCancelled: "cancelled",
};

function toneOf(status, tones = TONES) {
  return tones[status] || "neutral";
}

function badge(status) {
  return setBadge(el("span", {}), status);
}

/** Updates a badge in place: its text is the status itself, so colour is never the only cue. */
function setBadge(node, status) {
  node.className = `badge ${toneOf(status)}`;
  node.textContent = status || "Unknown";
  return node;
}

/** A bar of the partitions available (ok) and failed (err), for setProgress() to fill. */
function progressBar(tag, className) {
  const ok = el("span", { class: "bar ok" });
  const err = el("span", { class: "bar err" });
  const bar = el(tag, { class: className, role: "progressbar", "aria-label": "Partitions available",
    "aria-valuemin": 0 }, ok, err);
  return { bar, ok, err };
}

/** How many of a view's requested partitions are available, and how many failed. */
function partitionCounts(view) {
  const refs = Array.isArray(view.requestedPartitions) ? view.requestedPartitions : [];
  let available = 0;
  let failed = 0;
  for (const ref of refs) {
    const status = view.partitions?.[ref]?.status;
    if (status === "PartitionAvailable") available += 1;
    else if (status === "PartitionFailed") failed += 1;
  }
  return { total: refs.length, available, failed };
}

/** Fills a progressBar(), its figures said for screen readers too. */
function setProgress({ bar, ok, err }, { total, available, failed }) {
  ok.style.width = `${total ? (100 * available) / total : 0}%`;
  err.style.width = `${total ? (100 * failed) / total : 0}%`;
  bar.setAttribute("aria-valuemax", total);
  bar.setAttribute("aria-valuenow", available);
  bar.setAttribute("aria-valuetext", `${available} of ${total} available, ${failed} failed`);
}

/** "PartitionAvailable" -> "Available": for compact labels next to the full status. */
function statusLabel(status) {
  if (!status) return "Unknown";
  return String(status).replace(/^(BuildRequest|Partition|Job)(?=[A-Z])/, "");
}

function formatTime(ms) {
  return ms === null || ms === undefined ? "—" : new Date(ms).toLocaleString();
}

// Formatters are made once: a fresh one per call (what toLocaleString does) costs more than
// the rest of a partition card's update, thousands of times over on a large build.
const DATE_FORMATS = {
  full: new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  }),
  time: new Intl.DateTimeFormat(undefined, {
    hour: "numeric", minute: "2-digit", second: "2-digit",
  }),
  dayTime: new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }),
};

/** Date and time with the time zone's name, e.g. "27 Nov 2026, 14:03:05 CET". */
function formatDateTime(ms) {
  return ms === null || ms === undefined ? "—" : DATE_FORMATS.full.format(ms);
}

/** The time of day for today's times, the date too for older ones. */
function formatWhen(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "—";
  const date = new Date(ms);
  const today = new Date(now);
  const sameDay = date.getFullYear() === today.getFullYear() && date.getMonth() === today.getMonth()
    && date.getDate() === today.getDate();
  return (sameDay ? DATE_FORMATS.time : DATE_FORMATS.dayTime).format(date);
}

/** A duration for people: "12 s", "3 min 05 s", "2 h 04 min", "3 d 2 h". */
function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** "just now", "42 s ago", "3 min ago", "2 h ago", "4 d ago" (clock skew reads as "just now"). */
function formatAgo(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return "—";
  const s = Math.floor((now - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

function isoTime(ms) {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString();
}

/** The JSON answer of a gateway API path. A refusal throws an Error with its `status` and
 * `code`. The lists (watched builds, status) are answered from memory: asking costs the
 * upstream nothing. */
async function fetchJson(path) {
  const response = await apiFetch(path, { signal: AbortSignal.timeout(8000) });
  if (!response.ok) {
    const { status, code, message } = await refusalOf(response);
    throw Object.assign(new Error(message || `HTTP ${status}`), { status, code });
  }
  return response.json();
}

/** The builds this gateway watches now (those the token names). */
async function fetchWatched() {
  const { builds } = await fetchJson("/api/v1/watched");
  return Array.isArray(builds) ? builds : [];
}

/**
 * Reads `load()` every `everyMs` and hands the answer to `render`, for a page that lists what
 * the gateway knows. A failure shows in `notice` (and dims the page) while the last answer
 * stays; a 401 says a new token is needed and stops asking, since asking again answers the same.
 */
function keepShowing(load, render, notice, everyMs) {
  async function refresh() {
    let again = true;
    try {
      render(await load());
      notice.hidden = true;
      document.body.classList.remove("unreachable");
    } catch (error) {
      if (error.status === 401) {
        forgetToken();
        again = false;
        setText(notice, tokenRefusedText(error.message));
      } else {
        setText(notice, `Gateway unreachable (${error.name === "TimeoutError" ? "no answer" : error.message}). `
          + "What shows below may be out of date; retrying…");
      }
      notice.hidden = false;
      document.body.classList.add("unreachable");
    } finally {
      if (again) setTimeout(refresh, everyMs);
    }
  }
  refresh();
}

/** A page setting a test (or a curious person) may give as a global: a number >= 0, else `fallback`. */
function numberOr(value, fallback) {
  const n = Number(value);
  return value !== undefined && value !== null && value !== "" && Number.isFinite(n) && n >= 0
    ? n : fallback;
}
