"""The simulated Build Graph Service: its API (`docs/upstream.md`) over simulated builds.

`model` is the deterministic state machine (a seed and an injected clock, no I/O);
`server` serves it over HTTP with a control API under `/_sim/` for tests, fault
injection and request counting, and an optional ticker for lively demos.
"""

from gateway.simulator.model import HOSTILE_LOG_LINE, BuildExists, Simulator
from gateway.simulator.server import create_simulator_app

__all__ = [
    "HOSTILE_LOG_LINE",
    "BuildExists",
    "Simulator",
    "create_simulator_app",
]
