"""One event loop per thread for ``async def`` tasks run from synchronous code.

A pool thread, the solo thread, a prefork child's main thread and ``apply()`` all run coroutines
to completion from plain functions; making a loop per task would cost a loop set-up each time and
break tasks that keep loop-bound clients (an aiohttp session, a database pool) between runs. So each
thread makes one on first use and keeps it until the thread retires.
"""

from __future__ import annotations

import asyncio
import logging
import threading

logger = logging.getLogger("celeriac.worker")

_thread_state = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's own event loop for ``async def`` tasks: made once, reused for every task."""
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _thread_state.loop = loop
    return loop


def close_thread_loop(grace: float = 1.0) -> None:
    """Close this thread's task loop when the thread retires; tasks left on it (abandoned at a
    hard limit) are cancelled and get ``grace`` seconds to end. Never raises."""
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    _thread_state.loop = None
    if loop is None or loop.is_closed():
        return
    try:
        left = asyncio.all_tasks(loop)
        for pending in left:
            pending.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=grace))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException as exc:  # a retiring thread must not die noisily; say why it may leak
        logger.debug("closing a retiring thread's event loop: %r", exc)
    finally:
        loop.close()
