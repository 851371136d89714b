"use strict";
// Shared by the pages: DOM building that only ever sets text (never HTML), status colours,
// progress bars, time formatting in the viewer's own time zone, the watched list, settings.

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

/** The builds this gateway watches now: it answers from memory, so asking costs the upstream nothing. */
async function fetchWatched() {
  const response = await fetch("/api/v1/watched", { cache: "no-store", signal: AbortSignal.timeout(8000) });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const { builds } = await response.json();
  return Array.isArray(builds) ? builds : [];
}

/** A page setting a test (or a curious person) may give as a global: a number >= 0, else `fallback`. */
function numberOr(value, fallback) {
  const n = Number(value);
  return value !== undefined && value !== null && value !== "" && Number.isFinite(n) && n >= 0
    ? n : fallback;
}
