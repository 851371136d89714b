"""The gateway's guard: who may ask what, and how much, before anything else runs.

    tokens.py    access tokens: JWTs (HS256) naming the builds their holder may watch
    http.py      the front door: CORS, connection caps, the token check, security headers
    limits.py    token buckets and open-connection counts, bounded however many clients
    clients.py   who a client is: its address, or a trusted proxy's word for it
    runner.py    aiohttp's runner, answering malformed HTTP without echo or traceback

Checks happen when a connection opens or subscribes, never per message; the
fan-out's hot path knows nothing of them. `docs/security.md` has every limit.
"""
