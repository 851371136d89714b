"""Buildcast: a real-time build-status gateway for DataBuild's Build Graph Service.

One poller per watched build reads the upstream, computes what changed and
publishes it on a bus; every gateway replica fans the changes out to its
browsers and services over SSE. Upstream load does not grow with viewers.
"""

__version__ = "0.1.0"
