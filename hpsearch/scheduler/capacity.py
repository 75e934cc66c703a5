"""Which worker gets the next task, in O(log n) of the workers: :class:`FreeCapacity`."""

from __future__ import annotations

import heapq
import itertools

__all__ = ["FreeCapacity"]


class FreeCapacity:
    """Workers by free capacity: the one with the most, the first to join among equals
    (what ``max`` over the workers in join order gives, without scanning them all).

    A heap of ``(-free, join order, name)`` entries, checked lazily: an entry whose
    worker left or whose free capacity changed since is skipped when it comes up.

    Examples
    --------
    >>> free = FreeCapacity()
    >>> free.update("a", 2); free.update("b", 3); free.update("c", 3)
    >>> free.most()
    'b'
    >>> free.update("b", 0); free.remove("c")
    >>> free.most()
    'a'
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._free: dict[str, int] = {}
        self._order: dict[str, int] = {}
        self._joins = itertools.count()

    def update(self, name: str, free: int) -> None:
        """Record ``name``'s free capacity (a new name joins last)."""
        if name not in self._order:
            self._order[name] = next(self._joins)
        self._free[name] = free
        if free > 0:
            heapq.heappush(self._heap, (-free, self._order[name], name))
        if len(self._heap) > 2 * len(self._free) + 64:  # stale entries: rebuild
            self._heap = [(-f, self._order[n], n) for n, f in self._free.items() if f > 0]
            heapq.heapify(self._heap)

    def remove(self, name: str) -> None:
        self._free.pop(name, None)
        self._order.pop(name, None)

    def most(self) -> str | None:
        """The worker with the most free capacity, or None if none has any."""
        heap = self._heap
        while heap:
            negative, order, name = heap[0]
            if self._order.get(name) == order and self._free[name] == -negative:
                return name
            heapq.heappop(heap)
        return None
