"use strict";
// Knowing when a build ends without watching its tab: the favicon carries the build's status
// as the title does, and "Notify me" raises one browser notification when the build ends.
// A reload in the same tab does not notify again: the tab's sessionStorage remembers, per
// build, that it was asked to notify and that it did.

/** A small round icon drawn as SVG (a data: URL: the CSP allows those as images). */
function statusIcon(colour, mark) {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">`
    + `<circle cx="8" cy="8" r="7.5" fill="${colour}"/>${mark}</svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

const STROKE = 'fill="none" stroke="#fff" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round"';
const FAVICONS = {
  running: statusIcon("#9a6700", '<circle cx="8" cy="8" r="2.8" fill="#fff"/>'),
  BuildRequestCompleted: statusIcon("#1a7f37", `<path d="M4.5 8.4l2.3 2.3 4.7-5" ${STROKE}/>`),
  BuildRequestFailed: statusIcon("#cf222e", `<path d="M5.3 5.3l5.4 5.4M10.7 5.3l-5.4 5.4" ${STROKE}/>`),
  BuildRequestCancelled: statusIcon("#57606a", `<path d="M4.6 8h6.8" ${STROKE}/>`),
};

const NOTIFY_KEY = "buildcast.notify.";  // + build id: "armed", then "sent"

function sessionValue(key, value) {
  try {
    if (value === undefined) return sessionStorage.getItem(key);
    sessionStorage.setItem(key, value);
  } catch (e) { /* storage blocked: this page alone remembers */ }
  return value ?? null;
}

class BuildEnding {
  constructor(buildId) {
    this.buildId = buildId;
    this.icon = document.getElementById("favicon");
    this.button = document.getElementById("notify");
    this.supported = typeof window.Notification === "function";
    this.state = sessionValue(NOTIFY_KEY + buildId);  // null, "armed" or "sent"
    this.blocked = this.supported && Notification.permission === "denied";
    this.view = null;
    this.button.addEventListener("click", () => this.toggle());
  }

  /** The build's view changed: the favicon, the button, and the notification once it ends. */
  show(view) {
    this.view = view;
    const icon = ACTIVE.has(view.status) ? FAVICONS.running : FAVICONS[view.status];
    if (icon && this.icon.getAttribute("href") !== icon) this.icon.setAttribute("href", icon);
    const ended = ENDED.has(view.status);
    if (ended && this.state === "armed") this.notify(view);
    this.renderButton(ended);
  }

  renderButton(ended) {
    const button = this.button;
    button.hidden = !this.supported || ended || !this.view;
    const armed = this.state === "armed";
    button.disabled = this.blocked;
    button.setAttribute("aria-pressed", String(armed));
    setText(button, this.blocked ? "Notifications blocked" : armed ? "Notifying when it ends" : "Notify me");
    button.title = this.blocked
      ? "This browser blocks notifications from this site: allow them in its site settings."
      : armed ? "A notification comes when the build ends; click to cancel it."
        : "Get a browser notification when this build ends.";
  }

  async toggle() {
    if (this.state === "armed") {
      this.remember(null);
    } else if (Notification.permission === "granted") {
      this.remember("armed");
    } else if (Notification.permission !== "denied") {
      const answer = await Notification.requestPermission();
      if (answer === "granted") this.remember("armed");
    }
    this.blocked = Notification.permission === "denied";
    this.renderButton(ENDED.has(this.view && this.view.status));
    if (this.state === "armed" && this.view) this.show(this.view);  // it may have ended meanwhile
  }

  remember(state) {
    this.state = state;
    sessionValue(NOTIFY_KEY + this.buildId, state ?? "");
  }

  notify(view) {
    this.remember("sent");  // whatever happens next, never twice
    if (Notification.permission !== "granted") return;
    const outcome = statusLabel(view.status).toLowerCase();
    const { total, available } = partitionCounts(view);
    const took = formatDuration(view.updatedAtMs - view.createdAtMs);
    try {
      const note = new Notification(`Build ${view.buildId} ${outcome}`, {
        body: `${statusLabel(view.status)} after ${took}: `
          + `${available} of ${total} partitions available.`,
        tag: `buildcast:${view.buildId}`,
        icon: FAVICONS[view.status],
      });
      note.addEventListener("click", () => {
        window.focus();
        note.close();
      });
    } catch (e) { /* a browser that only notifies from a service worker: the favicon says it */ }
  }
}
