"""Buses carry each build's messages from its one poller to every replica's fan-out."""

from gateway.bus.base import Bus, Deliver
from gateway.bus.memory import MemoryBus

__all__ = ["Bus", "Deliver", "MemoryBus"]
