"""The wire contract of Buildcast, with no I/O: what server and clients agree on.

    rules.py     error codes and their HTTP statuses, the build-id rule, limits
    view.py      the build view, its statuses and its summary
    diff.py      view, view -> changes, and applying changes to a view
    messages.py  snapshot, delta and error: one change of one build at one position
    codec.py     their encodings: JSON, SSE frames, WebSocket frames, the Redis envelope
    resume.py    positions, resume tokens and multi-build cursors
    endings.py   why a stream or socket ends, and what its client does then

Importing it loads neither aiohttp, pydantic, redis nor httpx: the client
(`gateway.client`) and the server share it. `docs/protocol.md` is the reader's
version; `web/protocol.js` mirrors `rules` for the pages (a test keeps them equal).
"""
