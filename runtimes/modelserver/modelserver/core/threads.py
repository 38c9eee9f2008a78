"""Long work (loading a model, fetching one) off the event loop, in threads that never hold the
process up: a worker stopping on SIGTERM exits within its grace period even while a load runs
(a ThreadPoolExecutor's threads are joined at exit, so a 40 s load kept the process 40 s)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


def in_thread(function: Callable[..., Any], *args: Any, name: str = "load") -> asyncio.Future:
    """`function(*args)` in a daemon thread of its own; the future has its result. The thread
    lets go of the function and its arguments before the result is handed over, so that what
    they hold (a model being unloaded, say) can be collected the moment the caller goes on."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    work = [function, args]

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # not cancelled meanwhile
            setter(value)

    def run() -> None:
        call, arguments = work.pop(0), work.pop(0)
        try:
            outcome = (future.set_result, call(*arguments))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (future.set_exception, exc)
        del call, arguments
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop has closed: nobody waits any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
