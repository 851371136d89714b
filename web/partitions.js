"use strict";
// The build page's partitions: one card per requested ref, created once and updated in place,
// the status filter chips, the counts and the progress bar. build.js tells it what changed
// (changed(ref), rebuild()) and asks it to draw once per frame (render(view)).

const PARTITION_ORDER = ["PartitionBuilding", "PartitionScheduled", "PartitionRequested",
  "PartitionDelegated", "PartitionFailed", "PartitionAvailable", "Unknown"];
const CARD_CHUNK = 250;  // cards created per frame on a first render: no long freeze

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

const CARD = el("li", { class: "card partition" }, el("div", { class: "ref" }),
  el("div", { class: "row" }, el("span", { class: "badge" }), el("time", { class: "small" })));

class PartitionGrid {
  /** schedule(): ask for another frame (a large first render goes in chunks). */
  constructor(schedule) {
    this.schedule = schedule;
    this.grid = document.getElementById("partitions");
    this.meter = { bar: document.getElementById("progress"),
      ok: document.getElementById("bar-ok"), err: document.getElementById("bar-err") };
    this.cards = new Map();     // ref -> {node, badge, time, deleg, status, updated, delegatedTo}
    this.built = 0;             // cards created so far, in requestedPartitions order
    this.filter = "";           // "" = all, else a status key
    this.filterButtons = new Map();
    this.delegations = new Map();  // ref -> the build it was delegated to, from the events
    this.dirty = new Set();     // refs whose card must be compared with the view
    this.stale = true;          // the whole grid must be built again
    this.view = null;
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
      this.cards.clear();
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
  }

  createCard(ref) {
    const node = CARD.cloneNode(true);  // cheaper than building each card element by element
    node.setAttribute("data-ref", ref);
    fillRef(node.firstChild, ref);
    const row = node.lastChild;
    const record = { node, badge: row.firstChild, time: row.lastChild, deleg: null,
      status: undefined, updated: undefined, delegatedTo: undefined };
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
      record.delegatedTo = delegatedTo;
      record.delegStatus = status;
      if (record.deleg) record.deleg.remove();
      record.deleg = null;
      if (delegatedTo) {
        record.deleg = el("div", { class: "deleg" },
          el("span", { class: "deleg-mark", "aria-hidden": "true" }, "↪ "),
          status === "PartitionDelegated" ? "Delegated to " : "Built by ",
          el("a", { href: `/builds/${encodeURIComponent(delegatedTo)}` }, delegatedTo));
        record.node.append(record.deleg);
      }
    }
  }

  shows(record) {
    return this.filter === "" || (record.status || "Unknown") === this.filter;
  }

  renderCounts() {
    const view = this.view;
    const counts = new Map();
    let available = 0;
    let failed = 0;
    for (const ref of view.requestedPartitions) {
      const key = statusKey(view.partitions[ref]);
      counts.set(key, (counts.get(key) || 0) + 1);
      if (key === "PartitionAvailable") available += 1;
      else if (key === "PartitionFailed") failed += 1;
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
    this.renderFilters(counts, total);
  }

  renderFilters(counts, total) {
    const bar = document.getElementById("filters");
    const others = [...counts.keys()].filter((k) => !PARTITION_ORDER.includes(k));  // unknown names
    const keys = ["", ...PARTITION_ORDER, ...others];
    for (const key of keys) {
      const count = key === "" ? total : counts.get(key) || 0;
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
    const shown = this.filter === "" ? total : counts.get(this.filter) || 0;
    document.getElementById("partitions-empty").hidden = shown > 0;
  }

  setFilter(key) {
    this.filter = key;
    for (const record of this.cards.values()) record.node.hidden = !this.shows(record);
    this.renderCounts();
  }
}
