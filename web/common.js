"use strict";
// Shared by the pages: DOM building that only ever sets text (never HTML), and status colours.

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

const TONES = {
  BuildRequestCompleted: "success", PartitionAvailable: "success", JobCompleted: "success",
  BuildRequestExecuting: "warning", PartitionBuilding: "warning", JobRunning: "warning",
  BuildRequestFailed: "error", PartitionFailed: "error", JobFailed: "error",
};

function badge(status) {
  const text = status || "Unknown";
  return el("span", { class: `badge ${TONES[status] || "neutral"}` }, text);
}

function formatTime(ms) {
  return ms === null || ms === undefined ? "—" : new Date(ms).toLocaleString();
}
