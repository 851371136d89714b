"use strict";
// ANSI colour codes in job logs. Build tools colour their output (errors red, warnings
// yellow), and a log that shows "\x1b[31m" instead is hard to read. SGR colours and bold are
// kept; every other escape sequence (cursor moves, OSC titles and links, lone ESCs) and
// control character is dropped. The result is data: text goes into the page as text nodes in
// spans whose colours are classes (jobs.css) or CSSOM properties, never as HTML.

// One token of a line: a CSI sequence ($1 parameters, $2 intermediates, $3 final byte, which
// a line may cut off), a string sequence (OSC, DCS, SOS, PM, APC: up to BEL or ST), another
// escape sequence or a lone ESC, or a control character (but tab).
const ANSI_TOKEN = new RegExp([
  "(?:\\x1b\\[|\\x9b)([0-?]*)([ -/]*)([@-~]?)",
  "(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[^\\x07\\x1b\\x9c]*(?:\\x07|\\x1b\\\\|\\x9c)?",
  "\\x1b[ -/]*[0-~]?",
  "[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]",
].join("|"), "g");
const ANSI_ANY = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/;  // a line without these is plain text

const CUBE = [0, 95, 135, 175, 215, 255];  // the 256-colour cube's levels

function hexColor(r, g, b) {
  return `#${[r, g, b].map((c) => c.toString(16).padStart(2, "0")).join("")}`;
}

/** A 256-colour index as a colour: 0-15 are the named ones (a number), the rest "#rrggbb". */
function color256(n) {
  if (n < 16) return n;
  if (n < 232) return hexColor(CUBE[Math.floor((n - 16) / 36)], CUBE[Math.floor((n - 16) / 6) % 6],
    CUBE[(n - 16) % 6]);
  const level = 8 + (n - 232) * 10;
  return hexColor(level, level, level);
}

const isByte = (n) => Number.isInteger(n) && n >= 0 && n <= 255;

/** The colour of an extended SGR (38 or 48) from its arguments (`5;n` or `2;r;g;b`), or
 * undefined when they name none. */
function extendedColor(args) {
  if (args[0] === 5 && isByte(args[1])) return color256(args[1]);
  if (args[0] === 2 && args.slice(1, 4).length === 3 && args.slice(1, 4).every(isByte)) {
    return hexColor(args[1], args[2], args[3]);
  }
  return undefined;
}

/** The style after an SGR sequence's parameters ("1;31", "38;5;208", "" for a reset). */
function applySgr(style, params) {
  const next = { ...style };
  const list = params.split(";");
  for (let i = 0; i < list.length; i += 1) {
    // A colon carries sub-parameters: 38:5:n, 38:2:r:g:b or 38:2:space:r:g:b.
    const parts = list[i].split(":").map((p) => (p === "" ? 0 : Number(p)));
    const code = parts[0];
    if (code === 0) Object.assign(next, { bold: false, fg: null, bg: null });
    else if (code === 1) next.bold = true;
    else if (code === 22) next.bold = false;
    else if (code >= 30 && code <= 37) next.fg = code - 30;
    else if (code >= 90 && code <= 97) next.fg = code - 90 + 8;
    else if (code >= 40 && code <= 47) next.bg = code - 40;
    else if (code >= 100 && code <= 107) next.bg = code - 100 + 8;
    else if (code === 39) next.fg = null;
    else if (code === 49) next.bg = null;
    else if (code === 38 || code === 48) {
      let args;
      if (parts.length > 1) {
        args = parts[1] === 2 && parts.length > 5 ? [2, ...parts.slice(3, 6)] : parts.slice(1);
      } else {  // the arguments are the next parameters
        args = list.slice(i + 1, i + 5).map(Number);
        i += args[0] === 5 ? 2 : args[0] === 2 ? 4 : 0;
      }
      const color = extendedColor(args);
      if (color !== undefined) next[code === 38 ? "fg" : "bg"] = color;
    }
  }
  return next;
}

/**
 * A log line as styled segments: [{text, bold, fg, bg}], where fg and bg are null (the log's
 * own colours), 0 to 15 (the named colours) or "#rrggbb". Adjacent text of one style is one
 * segment; escape sequences and control characters are gone.
 */
function ansiSegments(line) {
  const text = String(line);
  let style = { bold: false, fg: null, bg: null };
  if (!ANSI_ANY.test(text)) return text ? [{ text, ...style }] : [];
  const segments = [];
  const add = (chunk) => {
    if (!chunk) return;
    const last = segments[segments.length - 1];
    if (last && last.bold === style.bold && last.fg === style.fg && last.bg === style.bg) {
      last.text += chunk;
    } else {
      segments.push({ text: chunk, ...style });
    }
  };
  let at = 0;
  for (const match of text.matchAll(ANSI_TOKEN)) {
    add(text.slice(at, match.index));
    at = match.index + match[0].length;
    const [, params, intermediates, final] = match;
    if (final === "m" && !intermediates && /^[\d;:]*$/.test(params)) style = applySgr(style, params);
  }
  add(text.slice(at));
  return segments;
}

/** Perceived brightness, 0 to 255. */
function brightness(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/** A colour made light enough to read on the log's dark background: mixed with white. */
function readableOnDark(hex) {
  const y = brightness(hex);
  if (y >= 110) return hex;
  const t = (110 - y) / (255 - y);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return hexColor(...[r, g, b].map((c) => Math.round(c + t * (255 - c))));
}

/** How a segment is drawn: its classes (jobs.css has the 16 colours), and the colours CSSOM
 * sets (256 colours, truecolor). A light background with the log's own light text gets dark
 * text. */
function segmentStyle({ bold, fg, bg }) {
  const classes = [];
  let color = null;
  let background = null;
  if (bold) classes.push("ansi-bold");
  if (typeof fg === "number") classes.push(`ansi-fg-${fg}`);
  else if (fg) color = readableOnDark(fg);
  if (typeof bg === "number") classes.push(`ansi-bg-${bg}`);
  else if (bg) {
    background = bg;
    if (fg === null && brightness(bg) > 140) color = "#0d1117";
  }
  return { className: classes.join(" "), color, background };
}

/** Appends a log line to `node`: plain text as a text node, styled text in spans. */
function appendAnsi(node, line) {
  for (const segment of ansiSegments(line)) {
    const { className, color, background } = segmentStyle(segment);
    if (!className && !color && !background) {
      node.append(segment.text);
      continue;
    }
    const span = el("span", { class: className || null }, segment.text);
    if (color) span.style.color = color;
    if (background) span.style.backgroundColor = background;
    node.append(span);
  }
}
