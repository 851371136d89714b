"use strict";
// The builds this build's partitions were delegated to, followed on the page's own stream
// (one connection for all), so that a delegated partition's card shows how the other build
// is doing: its status, and how many of its requested partitions are available.
//
// build.js routes every message of another build here; the grid asks for the delegates it
// sees (want) and draws each one's state into its cards (render), redrawn when told (changed).

const DELEGATES_MAX = RULES.streamBuilds - 1;  // what one stream carries, less the page's build

class Delegates {
  /** changed(id): a delegate's state changed, its cards need drawing again. */
  constructor(stream, ownId, changed) {
    this.stream = stream;
    this.ownId = ownId;
    this.changed = changed;
    this.followed = new Map();  // id -> {view: its view without events, or null; gone: text}
    this.refused = false;       // the gateway would not stream them: the cards link only
    this.queued = false;
  }

  /** Follows `id` too, unless it is beyond the stream's cap (its card then links only). */
  want(id) {
    if (this.refused || this.followed.has(id) || this.followed.size >= DELEGATES_MAX) return;
    if (id === this.ownId || !isBuildId(id)) return;
    this.followed.set(id, { view: null, gone: null });
    if (!this.queued) {  // all the delegates of one render, in one reopening of the stream
      this.queued = true;
      queueMicrotask(() => this.sync());
    }
  }

  sync() {
    this.queued = false;
    if (this.refused) return;
    const live = [...this.followed].filter(([, d]) => !d.gone).map(([id]) => id);
    this.stream.follow([this.ownId, ...live]);
  }

  snapshot(id, message) {
    const delegate = this.followed.get(id);
    if (!delegate) return;
    delegate.view = { ...message.view, events: [] };  // its events are not shown here
    delegate.gone = null;
    this.changed(id);
  }

  delta(id, message) {
    const delegate = this.followed.get(id);
    if (!delegate || !delegate.view) return;
    const changes = { ...message.changes };
    delete changes.events;
    applyDelta(delegate.view, message.seq, changes);
    this.changed(id);
  }

  /** The gateway ended a delegate's stream (not found upstream, say): the page goes on. */
  end(id, { code, message }) {
    const delegate = this.followed.get(id);
    if (!delegate) return;
    delegate.gone = code === RULES.codes.NOT_FOUND ? "not found" : message || code || "not followed";
    this.changed(id);
  }

  /** The stream with the delegates was refused for good (the token does not name them,
   * say): follow the page's own build alone, once. False when that was already tried. */
  giveUp(refusal) {
    if (this.refused || !this.followed.size || refusal.status === 401) return false;
    this.refused = true;
    this.stream.follow([this.ownId]);
    for (const id of this.followed.keys()) this.changed(id);
    return true;
  }

  /** Draws delegate `id`'s state into `node` (a card's), hidden when it is not followed. */
  render(node, id) {
    const delegate = this.refused ? undefined : this.followed.get(id);
    node.hidden = !delegate;
    if (!delegate) return;
    const view = delegate.view;
    if (delegate.gone || !view) {
      node.dataset.state = delegate.gone ? "gone" : "waiting";
      node.replaceChildren(el("span", { class: "small" }, delegate.gone || "following…"));
      return;
    }
    const counts = partitionCounts(view);
    const { total, available, failed } = counts;
    const meter = progressBar("span", "progress mini");
    setProgress(meter, counts);
    node.dataset.state = ENDED.has(view.status) ? "ended" : "live";
    node.replaceChildren(badge(view.status), meter.bar,
      el("span", { class: "deleg-count" }, `${available} / ${total} available`,
        failed ? ` · ${failed} failed` : ""));
  }
}
