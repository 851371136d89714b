"""What the tests share, in one place; no test module imports another.

gateways.py       the simulator's control API, URLs, driving builds, waiting for a condition
views.py          hand-made views and messages for unit tests
sse.py            an SSE reader and a viewer that applies what it reads
proxy.py          a TCP proxy on a fixed port: a gateway that dies and comes back
procs.py          real buildcast processes, and a viewer that follows them
redis_servers.py  real redis-server processes and a Redis Cluster
clock.py          a fake clock: cadence and timeouts tested without waiting
browser.py        the one Chromium of the session, and page helpers
deploy.py         the deployment files read as the tests need them (compose, nginx)
"""
