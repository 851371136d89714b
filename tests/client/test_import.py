"""The client is a room of its own: following builds loads none of the server's libraries."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_client_loads_neither_aiohttp_nor_pydantic_nor_redis() -> None:
    probe = (
        "import sys, gateway.client, gateway.client.tail, gateway.client.wait;"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.strip().strip("[]").replace("'", "").split(", "))
    assert "httpx" in loaded, "the probe saw the client's own dependency"
    assert not loaded & {"aiohttp", "pydantic", "redis", "yaml", "uvloop"}, loaded
