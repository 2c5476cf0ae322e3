"""Sphinx extension for the book build: no chapter waits for a reply that has already arrived.

The build executes each chapter with nbclient, which waits for the kernel's messages through
jupyter_client's asyncio channels. pyzmq integrates its sockets with the event loop through an
edge-triggered file descriptor, and a wake-up can be missed (zeromq/pyzmq#2173). The reply then sits in
the socket until the wait's timeout, whose final non-blocking ``zmq_poll`` finds it: the cell "takes"
the whole cell timeout (300 s) and then passes. Seen here in 4 of 5 builds, one chapter each time, with
the kernel idle and nbclient waiting (py-spy).

Waiting in slices of a second bounds a missed wake-up to a second; the overall timeout is unchanged.
"""
from __future__ import annotations

import time
from queue import Empty

SLICE_S = 1.0


def _sliced(get_msg):
    async def get_msg_in_slices(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await get_msg(self, timeout=min(SLICE_S, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_msg_in_slices.__wrapped__ = get_msg
    return get_msg_in_slices


def wait_in_slices() -> None:
    """Make jupyter_client's asyncio channels wait in slices (once; later calls do nothing). Also used
    by tests/test_binder.py, which runs the chapters with nbclient outside Sphinx."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    if not hasattr(AsyncZMQSocketChannel.get_msg, "__wrapped__"):
        AsyncZMQSocketChannel.get_msg = _sliced(AsyncZMQSocketChannel.get_msg)


def setup(app):
    wait_in_slices()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
