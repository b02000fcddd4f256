"""Overlap CPU preparation with accelerator work: compute ``fn(next item)`` in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], fn: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` in order, computing the next ``fn`` in a loader thread meanwhile.

    While the caller works on batch k (e.g. a GPU forward pass, which releases the GIL), batch
    k+1 is decoded/resized/normalized. Exceptions of ``fn`` surface at that item.
    """
    it = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfpo-prefetch") as pool:
        try:
            current = next(it)
        except StopIteration:
            return
        pending: Future[R] = pool.submit(fn, current)
        for upcoming in it:
            following = pool.submit(fn, upcoming)
            yield current, pending.result()
            current, pending = upcoming, following
        yield current, pending.result()
