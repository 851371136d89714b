"use strict";
// The build page's partitions: one card per requested ref, created once and updated in place,
// the status filter chips and the ref filter box, the counts and the progress bar. A card
// opens to show its history (history.js); a delegated one shows how its delegate is doing
// (delegates.js). build.js tells it what changed (changed(ref), rebuild(), delegateChanged(id))
// and asks it to draw once per frame (render(view)).

const PARTITION_ORDER = ["PartitionBuilding", "PartitionScheduled", "PartitionRequested",
  "PartitionDelegated", "PartitionFailed", "PartitionAvailable", "Unknown"];
const CARD_CHUNK = 250;  // cards created per frame on a first render: no long freeze
const FILTER_DELAY_MS = 120;  // typing in the filter box redraws once it pauses this long

/** The status a card and the filters count a partition under. */
function statusKey(entry) {
  return (entry && entry.status) || "Unknown";
}

/** A ref that may wrap after each "/" rather than anywhere (a <wbr>, never HTML). */
function fillRef(node, ref) {
  node.title = ref;
  ref.split("/").forEach((part, i) => {
    if (i) node.append("/", document.createElement("wbr"));
    node.append(part);
  });
}

// The ref is the card's button: one handler on the grid opens any card (no listener per card).
const CARD = el("li", { class: "card partition" },
  el("div", { class: "ref", role: "button", tabindex: "0", "aria-expanded": "false" }),
  el("div", { class: "row" }, el("span", { class: "badge" }), el("time", { class: "small" })));

class PartitionGrid {
  /** schedule(): ask for another frame (a large first render goes in chunks); delegates: the
   * followed delegations (delegates.js). */
  constructor(schedule, delegates) {
    this.schedule = schedule;
    this.delegates = delegates;
    this.history = new PartitionHistory();
    this.open = null;           // the ref whose card shows its history, or null
    this.grid = document.getElementById("partitions");
    this.meter = { bar: document.getElementById("progress"),
      ok: document.getElementById("bar-ok"), err: document.getElementById("bar-err") };
    this.cards = new Map();     // ref -> {node, badge, time, deleg, status, updated, delegatedTo}
    this.built = 0;             // cards created so far, in requestedPartitions order
    this.filter = "";           // "" = all, else a status key
    this.query = "";            // the ref filter, lower case: "" = all
    this.filterButtons = new Map();
    this.delegations = new Map();  // ref -> the build it was delegated to, from the events
    this.byDelegate = new Map();  // delegate build id -> the refs whose card shows it
    this.dirty = new Set();     // refs whose card must be compared with the view
    this.stale = true;          // the whole grid must be built again
    this.view = null;
    this.grid.addEventListener("click", (e) => this.onClick(e));
    this.grid.addEventListener("keydown", (e) => this.onKey(e));
    const box = document.getElementById("ref-filter");
    let timer = 0;
    box.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.setQuery(box.value), FILTER_DELAY_MS);
    });
  }

  /** A delegate's state changed: its cards are drawn again on the next frame. */
  delegateChanged(id) {
    for (const ref of this.byDelegate.get(id) || []) this.dirty.add(ref);
    this.schedule();
  }

  /** requestedPartitions changed: every card is made anew. */
  rebuild() {
    this.stale = true;
  }

  changed(ref) {
    this.dirty.add(ref);
  }

  /** Delegations the events name (a delegate's entry forgets it once it has built). */
  noteDelegations(events, fresh = false) {
    if (fresh) this.delegations.clear();
    for (const event of events) {
      if (event.delegatedTo && event.partitionRef) {
        this.delegations.set(event.partitionRef, event.delegatedTo);
        this.dirty.add(event.partitionRef);
      }
    }
  }

  /** Whether every card is built and shows the view. */
  get complete() {
    return this.view !== null && this.built === this.view.requestedPartitions.length
      && !this.dirty.size;
  }

  /** Draw what changed; `counts`: redraw the counts even if no card changed. */
  render(view, counts) {
    this.view = view;
    const refs = view.requestedPartitions;
    if (this.stale) {
      this.stale = false;
      this.toggle(null);
      this.cards.clear();
      this.byDelegate.clear();
      this.grid.replaceChildren();
      this.built = 0;
      this.dirty.clear();
    }
    for (const ref of this.dirty) {
      const record = this.cards.get(ref);
      if (record) this.updateCard(record, ref);  // not built yet: it is built from the view
    }
    const hadChanges = this.dirty.size > 0;
    this.dirty.clear();
    if (this.built < refs.length) {
      const fragment = document.createDocumentFragment();
      const stop = Math.min(refs.length, this.built + CARD_CHUNK);
      for (; this.built < stop; this.built += 1) fragment.append(this.createCard(refs[this.built]));
      this.grid.append(fragment);
      this.grid.classList.toggle("many", refs.length > 48);
      if (this.built < refs.length) this.schedule();
    }
    if (hadChanges || counts) this.renderCounts();
    this.history.render(view);
  }

  createCard(ref) {
    const node = CARD.cloneNode(true);  // cheaper than building each card element by element
    node.setAttribute("data-ref", ref);
    fillRef(node.firstChild, ref);
    const row = node.lastChild;
    const record = { node, badge: row.firstChild, time: row.lastChild, deleg: null, live: null,
      status: undefined, updated: undefined, delegatedTo: undefined, key: ref.toLowerCase() };
    this.cards.set(ref, record);
    this.updateCard(record, ref);
    return node;
  }

  updateCard(record, ref) {
    const entry = this.view.partitions[ref];
    const status = (entry && entry.status) || null;
    if (status !== record.status) {
      record.status = status;
      setBadge(record.badge, status);
      record.node.className = `card partition tone-${toneOf(status)}`;
      record.node.classList.toggle("open", this.open === ref);
      record.node.dataset.status = statusKey(entry);
      record.node.hidden = !this.shows(record);
    }
    const updated = entry ? entry.updatedAtMs : null;
    if (updated !== record.updated) {
      record.updated = updated;
      record.time.textContent = updated ? `updated ${formatWhen(updated)}` : "";
      record.time.setAttribute("datetime", isoTime(updated) || "");
      record.time.title = formatDateTime(updated);
    }
    // Once a delegate has built the partition, its entry no longer names it: the events do.
    const delegatedTo = (entry && entry.delegatedTo) || this.delegations.get(ref) || null;
    if (delegatedTo !== record.delegatedTo || (record.deleg && status !== record.delegStatus)) {
      this.indexDelegate(ref, record.delegatedTo, delegatedTo);
      record.delegatedTo = delegatedTo;
      record.delegStatus = status;
      if (record.deleg) record.deleg.remove();
      record.deleg = null;
      record.live = null;
      if (delegatedTo) {
        record.live = el("div", { class: "deleg-live" });
        record.deleg = el("div", { class: "deleg" },
          el("span", { class: "deleg-mark", "aria-hidden": "true" }, "↪ "),
          status === "PartitionDelegated" ? "Delegated to " : "Built by ",
          el("a", { href: `/builds/${encodeURIComponent(delegatedTo)}` }, delegatedTo),
          record.live);
        record.node.insertBefore(record.deleg, this.open === ref ? this.history.panel : null);
        this.delegates.want(delegatedTo);
      }
    }
    if (record.live) this.delegates.render(record.live, delegatedTo);
  }

  /** Keeps which cards show which delegate, for delegateChanged(). */
  indexDelegate(ref, before, after) {
    if (before === after) return;
    if (before) this.byDelegate.get(before)?.delete(ref);
    if (after) {
      if (!this.byDelegate.has(after)) this.byDelegate.set(after, new Set());
      this.byDelegate.get(after).add(ref);
    }
  }

  shows(record) {
    return (this.filter === "" || (record.status || "Unknown") === this.filter)
      && (this.query === "" || record.key.includes(this.query));
  }

  // ------------------------------------------------------------------ opening a card

  onClick(e) {
    const card = e.target.closest(".partition");
    // A link goes where it says; a click in the open history (selecting text) keeps it open.
    if (!card || e.target.closest("a, button, .history")) return;
    this.toggle(card.dataset.ref);
  }

  onKey(e) {
    if ((e.key !== "Enter" && e.key !== " ") || !e.target.matches(".partition > .ref")) return;
    e.preventDefault();  // Space would scroll
    this.toggle(e.target.parentNode.dataset.ref);
  }

  /** Opens `ref`'s card (closing the one open), or closes it when it is the one open. */
  toggle(ref) {
    const before = this.open !== null ? this.cards.get(this.open) : null;
    if (before) {
      before.node.classList.remove("open");
      before.node.firstChild.setAttribute("aria-expanded", "false");
    }
    this.history.close();
    this.open = ref === this.open ? null : ref;
    const record = this.open !== null ? this.cards.get(this.open) : null;
    if (!record) {
      this.open = null;
      return;
    }
    record.node.classList.add("open");
    record.node.firstChild.setAttribute("aria-expanded", "true");
    this.history.open(this.open, record.node, this.view);
  }

  renderCounts() {
    const view = this.view;
    const counts = new Map();  // of the refs the filter box lets through
    let available = 0;
    let failed = 0;
    let matching = 0;
    const query = this.query;
    for (const ref of view.requestedPartitions) {
      const key = statusKey(view.partitions[ref]);
      if (key === "PartitionAvailable") available += 1;
      else if (key === "PartitionFailed") failed += 1;
      if (query && !ref.toLowerCase().includes(query)) continue;
      counts.set(key, (counts.get(key) || 0) + 1);
      matching += 1;
    }
    const total = view.requestedPartitions.length;
    document.getElementById("partition-count").textContent = total.toLocaleString();
    setProgress(this.meter, { total, available, failed });
    const text = document.getElementById("counts");
    text.replaceChildren(
      el("strong", {}, `${available.toLocaleString()} / ${total.toLocaleString()}`), " available");
    if (failed) {
      const failedText = `${failed.toLocaleString()} failed`;
      text.append(" · ", el("span", { class: "failed-count" }, failedText));
    }
    this.renderFilters(counts, matching, total);
  }

  /** The chips, counting what the filter box lets through, and how many cards show. */
  renderFilters(counts, matching, total) {
    const bar = document.getElementById("filters");
    const others = [...counts.keys()].filter((k) => !PARTITION_ORDER.includes(k));  // unknown names
    const keys = ["", ...PARTITION_ORDER, ...others];
    for (const key of keys) {
      const count = key === "" ? matching : counts.get(key) || 0;
      let button = this.filterButtons.get(key);
      if (!button) {
        if (!count && key !== this.filter) continue;
        button = el("button",
          { type: "button", class: `chip tone-${toneOf(key)}`, "data-status": key || "all" },
          el("span", { class: "chip-label" }, key === "" ? "All" : statusLabel(key)), " ",
          el("span", { class: "chip-count" }));
        button.addEventListener("click", () => this.setFilter(this.filter === key ? "" : key));
        this.filterButtons.set(key, button);
        const next = keys.slice(keys.indexOf(key) + 1)
          .map((k) => this.filterButtons.get(k)).find(Boolean);
        bar.insertBefore(button, next || null);  // keep the chips in PARTITION_ORDER
      }
      button.querySelector(".chip-count").textContent = count.toLocaleString();
      button.hidden = !count && key !== this.filter && key !== "";
      button.setAttribute("aria-pressed", String(key === this.filter));
      button.title = key === "" ? "Show every partition" : `Show only ${key}`;
    }
    const shown = this.filter === "" ? matching : counts.get(this.filter) || 0;
    const empty = document.getElementById("partitions-empty");
    empty.hidden = shown > 0;
    setText(empty, this.query ? "No partition matches this filter." : "No partition has this status now.");
    setText(document.getElementById("partitions-shown"), shown === total ? ""
      : `${shown.toLocaleString()} of ${total.toLocaleString()} shown`);
  }

  setFilter(key) {
    this.filter = key;
    this.applyFilters();
  }

  /** The filter box's text: case-insensitive, anywhere in the ref. */
  setQuery(text) {
    const query = text.trim().toLowerCase();
    if (query === this.query) return;
    this.query = query;
    this.applyFilters();
  }

  applyFilters() {
    for (const record of this.cards.values()) {
      const hidden = !this.shows(record);
      if (record.node.hidden !== hidden) record.node.hidden = hidden;
    }
    if (this.view) this.renderCounts();
  }
}
