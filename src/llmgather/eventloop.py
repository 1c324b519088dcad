"""Running a coroutine to completion on the fastest event loop installed.

uvloop, installed with llmgather wherever it has a wheel, makes each request cost the client less CPU;
without it (Windows, PyPy) the standard loop runs everything the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner, _heap_frozen():
        return runner.run(main)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Leave what the process held before the run out of the garbage collector's full passes meanwhile.

    In a process with a large heap (a notebook, a test runner, an evaluation harness) a full pass can stall
    the loop for tens of milliseconds, and requests paced to arrive just inside the provider's second then
    arrive together. Frozen, a pass looks only at what the run itself made. A caller that froze the heap
    itself is left as it is.
    """
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
