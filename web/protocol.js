"use strict";
// The protocol's rules as the pages read them, and what every page builds from them.
//
// The object between the markers is gateway/protocol/rules.py's for_clients(), verbatim: a
// test (tests/web/test_protocol_js.py) fails when the two differ, so a rule changes in one
// place and the pages follow. Everything below it is derived, never written out again.

const RULES = /* rules: begin */ {
  "codes": {
    "INVALID_BUILD_ID": "invalid_build_id",
    "BAD_REQUEST": "bad_request",
    "UNAUTHORIZED": "unauthorized",
    "FORBIDDEN": "forbidden",
    "NOT_FOUND": "not_found",
    "TOO_MANY": "too_many",
    "UPSTREAM_UNAVAILABLE": "upstream_unavailable",
    "NOT_READY": "not_ready",
    "INTERNAL": "internal"
  },
  "paused": "upstream_unavailable",
  "gone": [
    "invalid_build_id",
    "not_found"
  ],
  "buildId": {
    "maxLength": 200,
    "forbidden": [
      [
        0,
        32
      ],
      [
        47,
        47
      ],
      [
        127,
        160
      ],
      [
        173,
        173
      ],
      [
        1536,
        1541
      ],
      [
        1564,
        1564
      ],
      [
        1757,
        1757
      ],
      [
        1807,
        1807
      ],
      [
        2192,
        2193
      ],
      [
        2274,
        2274
      ],
      [
        5760,
        5760
      ],
      [
        6158,
        6158
      ],
      [
        8192,
        8207
      ],
      [
        8232,
        8239
      ],
      [
        8287,
        8292
      ],
      [
        8294,
        8303
      ],
      [
        12288,
        12288
      ],
      [
        65279,
        65279
      ],
      [
        65529,
        65531
      ],
      [
        69821,
        69821
      ],
      [
        69837,
        69837
      ],
      [
        78896,
        78911
      ],
      [
        113824,
        113827
      ],
      [
        119155,
        119162
      ],
      [
        917505,
        917505
      ],
      [
        917536,
        917631
      ]
    ]
  },
  "activeStatuses": [
    "BuildRequestExecuting",
    "BuildRequestPlanning",
    "BuildRequestReceived"
  ],
  "terminalStatuses": [
    "BuildRequestCancelled",
    "BuildRequestCompleted",
    "BuildRequestFailed"
  ],
  "streamBuilds": 50,
  "heartbeatMs": 15000
} /* rules: end */;

// The build id pattern, from the forbidden code point ranges rather than `\s`, which Python
// and JavaScript read differently. The `u` flag makes both the ranges and the length count
// code points, as Python does: an id of 200 emoji is 200 characters, not 400.
const BUILD_ID = (() => {
  const point = (n) => `\\u{${n.toString(16)}}`;
  const forbidden = RULES.buildId.forbidden.map(([lo, hi]) => `${point(lo)}-${point(hi)}`).join("");
  return new RegExp(`^[^${forbidden}]{1,${RULES.buildId.maxLength}}$`, "u");
})();

/** Whether `text` may be a build id: what the gateway would accept, checked before asking it. */
function isBuildId(text) {
  return typeof text === "string" && BUILD_ID.test(text);
}

/** Statuses of a build still under way, and of one that is over. */
const ACTIVE = new Set(RULES.activeStatuses);
const ENDED = new Set(RULES.terminalStatuses);

/**
 * Applies a delta to `view` in place (docs/protocol.md): top-level keys replace, `partitions`
 * merges by ref, `events` appends, and `view.seq` becomes `seq`. In place because a large
 * build's view holds thousands of events: a copy per delta would cost more than the rest.
 */
function applyDelta(view, seq, changes) {
  for (const [key, value] of Object.entries(changes)) {
    if (key === "partitions") {
      Object.assign(view.partitions, value);
    } else if (key === "events") {
      for (const event of value) view.events.push(event);  // not push(...value): no argument limit
    } else {
      view[key] = value;
    }
  }
  view.seq = seq;
  return view;
}
