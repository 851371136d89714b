"use strict";
// A partition's history, shown in its card while the card is open: its events in this build,
// kept current as they arrive, and its events across builds as the Build Graph Service knows
// them, read through the gateway (GET /api/v1/partitions/{ref}/events) once per opening: the
// gateway caches that answer for every viewer, and the page never polls it.

const HISTORY_SHOWN = 100;  // the newest events each list shows

/** Whether `event` is about `ref`: a partition event naming it, or a job building it. */
function concerns(event, ref) {
  if (event.partitionRef === ref) return true;
  const targets = event.job && event.job.targetPartitions;
  return Array.isArray(targets) && targets.includes(ref);
}

/** One event as a line of text nodes; `here`: it is one of this build's own. */
function historyItem(event, here) {
  const ms = Number.isFinite(event.timestampMs) ? event.timestampMs : null;  // untrusted JSON
  const time = el("time", { datetime: isoTime(ms) }, formatWhen(ms));
  time.title = formatDateTime(ms);
  const item = el("li", { "data-event-id": event.eventId }, time,
    el("span", { class: "etype" }, event.eventType), el("span", { class: "msg" }, event.message));
  if (event.partitionStatus) item.append(badge(event.partitionStatus));
  if (event.job && typeof event.job === "object") {
    item.append(el("span", { class: "job-label" }, event.job.jobLabel), badge(event.job.status));
  }
  if (event.delegatedTo) {
    const to = String(event.delegatedTo);
    item.append(el("span", { class: "deleg" }, "↪ ",
      el("a", { href: `/builds/${encodeURIComponent(to)}` }, to)));
  }
  if (here) item.append(el("span", { class: "here" }, "this build"));
  return item;
}

/** Why the history could not be read, in a person's words. */
function unavailableText({ status, code, message, name }) {
  const said = message ? ` (${message})` : "";
  if (name === "TimeoutError") return "History unavailable: the gateway did not answer.";
  if (!status) return "History unavailable: the gateway cannot be reached.";
  if (status === 404) return `History unavailable: the gateway has no history of this partition${said}.`;
  if (status >= 500) {
    return `History unavailable: the Build Graph Service cannot be read right now${said}.`;
  }
  return `History unavailable: ${message || code || `HTTP ${status}`}.`;
}

class PartitionHistory {
  constructor() {
    this.ref = null;     // the partition shown, or null
    this.panel = null;
    this.asked = 0;      // bumps with each read: a late answer for another opening is dropped
  }

  /** Shows `ref`'s history at the end of `card`, and reads its upstream events once. */
  open(ref, card, view) {
    this.close();
    this.ref = ref;
    this.ids = new Set();          // this build's event ids about the partition
    this.here = el("ol", { class: "history-list" });
    this.hereNote = el("p", { class: "small" });
    this.upstream = el("div", { class: "history-upstream" });
    this.panel = el("div", { class: "history", id: "partition-history" },
      el("h3", {}, "In this build"), this.hereNote, this.here,
      el("h3", {}, "Across builds, from the Build Graph Service"), this.upstream);
    card.append(this.panel);
    this.view = null;
    this.render(view);
    this.load();
  }

  close() {
    if (this.panel) this.panel.remove();
    this.panel = null;
    this.ref = null;
    this.asked += 1;
  }

  /** Appends the build's new events about the partition (once per frame, from the grid). */
  render(view) {
    if (!this.panel) return;
    const events = view.events;
    if (view !== this.view || events.length < this.scanned) {  // a snapshot: start again
      this.view = view;
      this.scanned = -1;  // not even the note is drawn yet
      this.found = 0;
      this.ids.clear();
      this.here.replaceChildren();
    }
    if (this.scanned === events.length) return;
    const fresh = [];
    for (let i = Math.max(0, this.scanned); i < events.length; i += 1) {
      if (concerns(events[i], this.ref)) fresh.push(events[i]);
    }
    this.scanned = events.length;
    this.found += fresh.length;
    for (const event of fresh) this.ids.add(event.eventId);
    this.here.append(...fresh.slice(-HISTORY_SHOWN).map((event) => historyItem(event, false)));
    while (this.here.childElementCount > HISTORY_SHOWN) this.here.firstChild.remove();
    const left = this.found - this.here.childElementCount;
    setText(this.hereNote, !this.found ? "No event of this build is about this partition yet."
      : left ? `${left.toLocaleString()} earlier events not shown.` : "");
    this.hereNote.hidden = this.hereNote.textContent === "";
  }

  /** Reads the partition's events across builds; a failure says why, with a way to retry. */
  async load() {
    const asked = ++this.asked;
    const box = this.upstream;
    box.dataset.state = "loading";
    box.replaceChildren(el("p", { class: "small" }, "Loading its history…"));
    let answer;
    try {
      answer = await fetchJson(`/api/v1/partitions/${encodeURIComponent(this.ref)}/events`);
      if (!answer || !Array.isArray(answer.events)) {
        throw Object.assign(new Error("not a partition history"), { status: 200 });
      }
    } catch (error) {
      if (asked !== this.asked) return;
      const retry = el("button", { type: "button", class: "btn small-btn" }, "Try again");
      retry.addEventListener("click", () => this.load());
      box.dataset.state = "unavailable";
      box.replaceChildren(el("p", { class: "unavailable" }, unavailableText(error), " ", retry));
      return;
    }
    if (asked !== this.asked) return;
    const events = answer.events.filter((event) => event && typeof event === "object");
    const shown = events.slice(-HISTORY_SHOWN);
    const at = Number.isFinite(answer.fetchedAtMs) ? answer.fetchedAtMs : null;
    const note = events.length ? `${events.length.toLocaleString()} events` : "No event yet.";
    const left = events.length - shown.length;
    box.dataset.state = "ready";
    box.replaceChildren(
      el("p", { class: "small" }, note, left ? `, the ${shown.length} newest shown` : "",
        at === null ? "" : ` · as of ${formatWhen(at)}`),
      el("ol", { class: "history-list" },
        ...shown.map((event) => historyItem(event, this.ids.has(event.eventId)))));
  }
}
