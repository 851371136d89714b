"use strict";
// The build page's Jobs section: one entry per job run, however many events carried it. The
// view has runs only inside events, each repeating the run's log so far; this derives the runs
// (label, status, first and last event) and shows each run's log once, in its entry, growing
// in place. Failed runs come first and open; a bar per run on the build's time axis makes a
// waterfall. Log lines are numbered links (#run-RUN_ID-L12), searchable, in colour (ansi.js),
// and downloadable. build.js says when the events changed (eventsChanged()) and asks it to
// draw once per frame (render(view)); the timeline opens a run with show(runId).

const JOB_PAGE = 100;  // runs shown per group (failed, the rest) at first, and added per click
const JOB_FAILED = "JobFailed";
const JOB_LIVE = new Set(["JobScheduled", "JobRunning"]);

/** The run a job event belongs to (an event without a run id is a run of its own). */
function runIdOf(event) {
  return String(event.job.jobRunId ?? event.eventId);
}

/** A log line's element id, whatever characters the run id holds. */
function logLineId(runId, n) {
  return `run-${runId}-L${n}`;
}

/** The run and line a location hash names (`#run-RUN_ID-L12`, %-encoded or not), or null. */
function lineOfHash(hash) {
  let text = hash.replace(/^#/, "");
  try {
    text = decodeURIComponent(text);
  } catch (e) { /* a malformed %-escape: as written */ }
  const match = /^run-([\s\S]+)-L([1-9]\d*)$/.exec(text);
  return match ? { runId: match[1], line: Number(match[2]) } : null;
}

function cutMarker(count) {
  return el("div", { class: "log-cut" },
    `${count.toLocaleString()} earlier line${count === 1 ? "" : "s"} not shown`);
}

/** Puts `nodes` in `box` in this order; nodes already in place are not touched. */
function arrangeIn(box, nodes) {
  let at = box.firstChild;
  for (const node of nodes) {
    if (node === at) at = at.nextSibling;
    else box.insertBefore(node, at);
  }
}

const RUN_ENTRY = el("details", { class: "job run" },
  el("summary", { class: "run-row" },
    el("span", { class: "job-label" }), el("span", { class: "badge" }),
    el("time", { class: "run-start small" }), el("span", { class: "run-took small" }),
    el("span", { class: "run-track", "aria-hidden": "true" }, el("span", { class: "run-bar" }))));
const LOG_LINE = el("div", { class: "log-line" },
  el("a", { class: "log-no" }), el("span", { class: "log-text" }));

class JobList {
  /** schedule(): ask for another frame (a line the address names, once its run arrives). */
  constructor(schedule) {
    this.schedule = schedule;
    this.panel = document.querySelector(".jobs-panel");
    this.axisEnd = el("span", { class: "small" });
    this.failedBox = el("div", { class: "run-list failed-runs" });
    this.more = el("button", { type: "button", class: "btn more-runs", hidden: "" });
    this.box = el("div", { class: "run-list" });
    document.getElementById("jobs").append(
      el("div", { class: "run-row run-axis small", "aria-hidden": "true" },
        el("span", {}), el("span", {}, "Job"), el("span", {}, "Status"), el("span", {}, "Started"),
        el("span", {}, "Duration"), el("span", { class: "run-track" }, el("span", {}, "0 s"),
          this.axisEnd)),
      this.failedBox, this.more, this.box);
    this.runs = new Map();      // run id -> {id, label, status, start, end, job}: in start order
    this.entries = new Map();   // run id -> its entry, while shown
    this.choices = new Map();   // run id -> opened (true) or closed (false) by the reader
    this.seen = 0;              // the runs hold view.events[0, seen)
    this.unread = true;         // events came that the runs do not hold yet
    this.fresh = true;          // read every event anew
    this.arranged = false;      // the shown entries and their order are the runs'
    this.changed = new Set();   // runs whose entries must be compared with them
    this.limit = JOB_PAGE;
    this.target = lineOfHash(location.hash);  // a line to bring into view once it is shown
    this.highlighted = null;
    this.view = null;
    this.more.addEventListener("click", () => {
      this.limit += JOB_PAGE;
      this.arrange();
      this.paint();
    });
    window.addEventListener("hashchange", () => {
      this.target = lineOfHash(location.hash);
      this.arranged = false;
      this.schedule();
    });
    setInterval(() => {
      if (this.view && ACTIVE.has(this.view.status) && document.visibilityState !== "hidden") {
        this.paint();
      }
    }, 1000);
  }

  /** The view's events grew (fresh = false), or must be read anew (a snapshot that rewrote
   * them). */
  eventsChanged(fresh) {
    this.unread = true;
    if (fresh) this.fresh = true;
  }

  render(view) {
    this.view = view;
    if (this.fresh) {
      this.fresh = false;
      this.runs.clear();
      this.seen = 0;
      this.arranged = false;
      for (const id of this.entries.keys()) this.changed.add(id);
    }
    if (this.unread) this.read(view.events);
    this.panel.hidden = this.runs.size === 0;
    if (!this.arranged) this.arrange();
    for (const id of this.changed) {
      const entry = this.entries.get(id);
      if (entry) this.update(entry);
    }
    this.changed.clear();
    this.paint();
    if (this.target) this.reveal();
  }

  read(events) {
    for (let i = this.seen; i < events.length; i += 1) {
      const event = events[i];
      if (!event.job) continue;
      const job = event.job;
      const id = runIdOf(event);
      let run = this.runs.get(id);
      if (!run) {
        run = { id, start: event.timestampMs, label: null, status: null };
        this.runs.set(id, run);
        this.arranged = false;
      }
      if ((run.status === JOB_FAILED) !== (job.status === JOB_FAILED)) this.arranged = false;
      run.label = job.jobLabel || run.label;
      run.status = job.status || null;
      run.end = event.timestampMs;
      run.job = job;  // its log is the run's log so far
      this.changed.add(id);
    }
    this.seen = events.length;
    this.unread = false;
  }

  /** Which runs have an entry, in which order: failed ones first, each group in start order,
   * the newest `limit` of each, and any the reader opened or the address names. */
  arrange() {
    this.arranged = true;
    const failed = [];
    const rest = [];
    for (const run of this.runs.values()) (run.status === JOB_FAILED ? failed : rest).push(run);
    const wanted = (run) => this.choices.get(run.id) === true
      || (this.target !== null && this.target.runId === run.id);
    const pick = (runs) => runs.filter((run, i) => i >= runs.length - this.limit || wanted(run));
    const shown = [pick(failed), pick(rest)];
    const ids = new Set(shown.flat().map((run) => run.id));
    for (const [id, entry] of this.entries) {
      if (!ids.has(id)) {
        entry.node.remove();
        this.entries.delete(id);
      }
    }
    const nodes = (runs) => runs.map((run) => (this.entries.get(run.id) || this.create(run)).node);
    arrangeIn(this.failedBox, nodes(shown[0]));
    arrangeIn(this.box, nodes(shown[1]));
    const hidden = this.runs.size - ids.size;
    this.more.hidden = hidden === 0;
    this.more.textContent = `Show ${Math.min(JOB_PAGE, hidden).toLocaleString()} earlier runs`
      + ` (${hidden.toLocaleString()} not shown)`;
    const running = rest.filter((run) => JOB_LIVE.has(run.status)).length;
    document.getElementById("job-count").textContent = [
      `${this.runs.size.toLocaleString()} run${this.runs.size === 1 ? "" : "s"}`,
      failed.length ? `${failed.length.toLocaleString()} failed` : "",
      running ? `${running.toLocaleString()} running` : "",
    ].filter(Boolean).join(" · ");
  }

  create(run) {
    const node = RUN_ENTRY.cloneNode(true);
    node.setAttribute("data-job-run", run.id);
    const row = node.firstChild;
    const [label, status, start, took, track] = row.children;
    const entry = { run, node, label, status, start, took, bar: track.firstChild, body: null,
      wanted: false, shownStatus: undefined, shownTo: 0, lines: [], barKey: "" };
    node.addEventListener("toggle", () => {
      if (node.open === entry.wanted) return;  // opened or closed by this page, not the reader
      entry.wanted = node.open;
      this.choices.set(run.id, node.open);
      if (node.open) this.fill(entry);
    });
    this.entries.set(run.id, entry);
    this.update(entry);
    return entry;
  }

  update(entry) {
    const run = this.runs.get(entry.run.id);
    if (!run) return;  // gone with a rewritten view: arrange() removes it
    entry.run = run;
    setText(entry.label, run.label || "job");
    if (run.status !== entry.shownStatus) {
      entry.shownStatus = run.status;
      setBadge(entry.status, run.status);
      entry.node.dataset.status = run.status || "Unknown";
      entry.bar.className = `run-bar tone-${toneOf(run.status)}`;
    }
    setText(entry.start, formatWhen(run.start));
    entry.start.setAttribute("datetime", isoTime(run.start) || "");
    entry.start.title = formatDateTime(run.start);
    const choice = this.choices.get(run.id);
    this.setOpen(entry, choice ?? run.status === JOB_FAILED);
    if (entry.body) this.fill(entry);
  }

  setOpen(entry, open) {
    if (entry.node.open === open) return;
    entry.wanted = open;
    entry.node.open = open;
    if (open) this.fill(entry);
  }

  /** The bars on the build's time axis (its creation to now, or to its last change once it
   * ended) and the durations: they move with the clock while the build runs. */
  paint() {
    const view = this.view;
    if (!view || !this.runs.size) return;
    const now = Date.now();
    const running = ACTIVE.has(view.status);
    const t0 = view.createdAtMs;
    const t1 = Math.max(running ? now : view.updatedAtMs, t0 + 1000);
    setText(this.axisEnd, formatDuration(t1 - t0));
    for (const entry of this.entries.values()) {
      const run = entry.run;
      const end = running && JOB_LIVE.has(run.status) ? Math.max(now, run.end) : run.end;
      setText(entry.took, formatDuration(end - run.start));
      const left = Math.min(100, Math.max(0, (100 * (run.start - t0)) / (t1 - t0)));
      const width = Math.min(100 - left, (100 * (end - run.start)) / (t1 - t0));
      const key = `${left.toFixed(2)}/${width.toFixed(2)}`;
      if (key !== entry.barKey) {
        entry.barKey = key;
        entry.bar.style.left = `${left.toFixed(2)}%`;
        entry.bar.style.width = `${width.toFixed(2)}%`;
      }
    }
  }

  /** The body of an open entry, made once, and its log brought up to the run's. */
  fill(entry) {
    if (!entry.body) this.makeBody(entry);
    const job = entry.run.job;
    const lines = Array.isArray(job.logLines) ? job.logLines : [];
    const cut = Math.max(0, Math.floor(Number(job.truncatedLines)) || 0);  // left out before
    const total = cut + lines.length;
    const targets = (job.targetPartitions || []).map(String);
    if (targets.join("\n") !== entry.targetsShown) {
      entry.targetsShown = targets.join("\n");
      entry.targets.replaceChildren(...targets.map((ref) => el("li", { class: "ref" }, ref)));
    }
    if (total < entry.shownTo) {  // not the log shown: the view was rewritten
      entry.log.replaceChildren();
      entry.lines = [];
      entry.shownTo = 0;
      Object.assign(entry.find, { matches: [], current: -1 });
    }
    const fragment = document.createDocumentFragment();
    if (cut > entry.shownTo) {  // the gateway's kept tail starts after what is shown
      fragment.append(cutMarker(cut - entry.shownTo));
      entry.shownTo = cut;
    }
    const added = [];
    for (let n = entry.shownTo + 1; n <= total; n += 1) {
      const line = LOG_LINE.cloneNode(true);
      const id = logLineId(entry.run.id, n);
      line.id = id;
      line.firstChild.href = `#${encodeURIComponent(id)}`;
      line.firstChild.textContent = n;
      appendAnsi(line.lastChild, lines[n - cut - 1] ?? "");
      fragment.append(line);
      added.push(line);
    }
    entry.shownTo = total;
    entry.log.append(fragment);
    entry.lines.push(...added);
    entry.empty.hidden = total > 0;
    entry.log.hidden = total === 0;
    if (added.length) this.search(entry, added);
  }

  makeBody(entry) {
    const run = entry.run;
    const find = el("input", { type: "search", class: "log-find", placeholder: "Search log",
      "aria-label": "Search this log", autocomplete: "off", spellcheck: "false" });
    const hits = el("span", { class: "log-hits small", "aria-live": "polite" });
    const copy = el("button", { type: "button", class: "btn small-btn" }, "Copy log");
    const download = el("a", { class: "btn small-btn", href: "#", download: `${run.id}.log` },
      "Download");
    entry.targets = el("ul", { class: "targets" });
    entry.targetsShown = null;
    entry.log = el("div", { class: "run-log", tabindex: "0", "aria-label": "Job log" });
    entry.empty = el("p", { class: "small" }, "No log lines yet.");
    entry.find = { input: find, hits, query: "", matches: [], current: -1 };
    entry.body = el("div", { class: "run-body" },
      el("dl", { class: "job-facts" },
        el("dt", {}, "Run id"), el("dd", { class: "mono" }, run.id),
        el("dt", {}, "Targets"), el("dd", {}, entry.targets)),
      el("div", { class: "log-head" }, find, hits, copy, download),
      entry.empty, entry.log);
    entry.node.append(entry.body);
    find.addEventListener("input", () => {
      entry.find.query = find.value.toLowerCase();
      this.search(entry, null);
    });
    find.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      e.preventDefault();
      this.step(entry, e.shiftKey ? -1 : 1);
    });
    copy.addEventListener("click", () => copyLog(copy, entry.log, this.logOf(entry)));
    download.addEventListener("click", () => {
      // The kept lines as they came, escapes and all: what a person greps or attaches.
      if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
      const lines = this.logOf(entry);
      const text = lines.length ? `${lines.join("\n")}\n` : "";
      download.href = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
    });
  }

  logOf(entry) {
    const lines = entry.run.job.logLines;
    return Array.isArray(lines) ? lines.map((line) => String(line ?? "")) : [];
  }

  /** Marks the lines holding the search text (plain text, any case): all of them anew
   * (`added` null, the text changed), or among lines just added. */
  search(entry, added) {
    const find = entry.find;
    const holds = (line) => line.lastChild.textContent.toLowerCase().includes(find.query);
    if (added === null) {
      for (const line of find.matches) line.classList.remove("match", "current");
      find.matches = find.query ? entry.lines.filter(holds) : [];
      find.current = find.matches.length ? 0 : -1;
      for (const line of find.matches) line.classList.add("match");
      this.step(entry, 0);
      return;
    }
    if (!find.query) return;
    const more = added.filter(holds);
    for (const line of more) line.classList.add("match");
    find.matches.push(...more);
    this.step(entry, 0, false);  // the reader's place stays
  }

  /** Goes `by` matches on (-1 back, 0 stays), and brings the match into view (`scroll`). */
  step(entry, by, scroll = true) {
    const find = entry.find;
    const n = find.matches.length;
    if (n) {
      const before = find.matches[find.current];
      if (before) before.classList.remove("current");
      find.current = (Math.max(find.current, 0) + by + n) % n;
      const line = find.matches[find.current];
      line.classList.add("current");
      if (scroll) line.scrollIntoView({ block: "nearest" });
    }
    this.count(entry);
  }

  count(entry) {
    const { query, matches, current, hits } = entry.find;
    setText(hits, !query ? "" : matches.length
      ? `${(current + 1).toLocaleString()} of ${matches.length.toLocaleString()}` : "no match");
  }

  /** Opens the run the address names and brings its line into view, highlighted: now, or
   * once its events (and that line) arrive. */
  reveal() {
    const { runId, line } = this.target;
    const entry = this.entries.get(runId);
    if (!entry) return;  // not yet a run of this build
    this.choices.set(runId, true);
    this.setOpen(entry, true);
    const node = document.getElementById(logLineId(runId, line));
    if (!node && line > entry.shownTo) return;  // not yet in the log
    this.target = null;
    if (this.highlighted) this.highlighted.classList.remove("target");
    this.highlighted = node;
    if (node) node.classList.add("target");
    (node || entry.node).scrollIntoView({ block: "center" });
  }

  /** Opens a run's entry and brings it into view (the timeline's "Open run"). */
  show(runId) {
    if (!this.runs.has(runId)) return;
    this.choices.set(runId, true);
    this.arrange();
    const entry = this.entries.get(runId);
    this.setOpen(entry, true);
    this.paint();
    entry.node.scrollIntoView({ block: "start" });
    entry.node.firstChild.focus({ preventScroll: true });
  }
}

async function copyLog(button, logs, lines) {
  try {
    await navigator.clipboard.writeText(lines.join("\n"));
    button.textContent = "Copied";
  } catch (e) {  // no clipboard permission: select the text, for Ctrl+C
    getSelection().selectAllChildren(logs);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = "Copy log"; }, 2000);
}
