"use strict";
// The build page's execution timeline: the newest events, appended as they come, older ones
// shown on request. A job event names its run and that run's status then, and opens the run
// in the Jobs section (jobs.js), where its log is: not a copy per event. build.js says when
// the events grew (grew()) or must be drawn anew (reset()), and asks it to draw once per
// frame (render(view)).

const TIMELINE_PAGE = 200;  // events shown at first, and added per "show older"

function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
}

class Timeline {
  /** openRun(runId): show that job run (jobs.js). */
  constructor(openRun) {
    this.list = document.getElementById("timeline");
    this.box = document.getElementById("timeline-box");
    this.older = document.getElementById("older");
    this.from = 0;              // the DOM shows view.events[from, to)
    this.to = 0;
    this.limit = TIMELINE_PAGE;
    this.fresh = true;          // draw every event anew
    this.grown = false;         // events were appended
    this.following = true;      // the reader is at the newest events: new ones scroll into view
    this.view = null;
    this.older.addEventListener("click", () => this.showOlder());
    this.list.addEventListener("click", (e) => {
      const button = e.target.closest("button.open-run");
      if (button) openRun(button.dataset.run);
    });
  }

  reset() {
    this.fresh = true;
  }

  grew() {
    this.grown = true;
  }

  /** Read before a frame writes anything: the layout is still clean, so this is free. */
  measure() {
    if (this.to) this.following = atBottom(this.box);
  }

  render(view) {
    this.view = view;
    const events = view.events;
    const n = events.length;
    const follow = this.following;
    if (this.fresh) {
      this.fresh = false;
      this.list.replaceChildren();
      this.from = this.to = Math.max(0, n - this.limit);
    }
    if (this.grown || n !== this.to) {
      this.grown = false;
      const start = Math.max(this.to, n - this.limit);
      if (start > this.to) {  // more new events than the window holds: start the window afresh
        this.list.replaceChildren();
        this.from = start;
      }
      const fragment = document.createDocumentFragment();
      for (let i = start; i < n; i += 1) fragment.append(this.item(events[i]));
      this.list.append(fragment);
      this.to = n;
      // Keep the window bounded while the reader follows the newest events; when they
      // read older ones, let it grow (up to a cap) rather than pull text from under them.
      const cap = follow ? this.limit : this.limit + 5 * TIMELINE_PAGE;
      while (this.to - this.from > cap) {
        this.list.firstElementChild.remove();
        this.from += 1;
      }
      if (follow) this.box.scrollTop = this.box.scrollHeight;
    }
    this.older.hidden = this.from === 0;
    const more = Math.min(TIMELINE_PAGE, this.from);
    this.older.textContent =
      `Show ${more.toLocaleString()} older events (${this.from.toLocaleString()} not shown)`;
    document.getElementById("event-count").textContent =
      `${n.toLocaleString()} event${n === 1 ? "" : "s"}`
      + (this.from ? ` · showing the latest ${(this.to - this.from).toLocaleString()}` : "");
  }

  showOlder() {
    const start = Math.max(0, this.from - TIMELINE_PAGE);
    const fragment = document.createDocumentFragment();
    for (let i = start; i < this.from; i += 1) fragment.append(this.item(this.view.events[i]));
    const before = this.box.scrollHeight;
    this.list.prepend(fragment);
    this.box.scrollTop += this.box.scrollHeight - before;  // keep the reader's place
    this.from = start;
    this.limit = Math.max(this.limit, this.to - this.from);
    this.render(this.view);
  }

  item(event) {
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
    if (event.job) {
      item.append(el("div", { class: "job-ref" },
        el("span", { class: "job-label" }, event.job.jobLabel || "job"), " ", badge(event.job.status),
        " ", el("button", { type: "button", class: "btn small-btn open-run",
          "data-run": runIdOf(event) }, "Open run")));
    }
    return item;
  }
}
