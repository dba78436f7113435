"""Python's cyclic garbage collector in a process whose views hold hundreds of thousands of long-lived objects.

A full collection walks every tracked object while the event loop, and every request with it, waits (~100 ms
for views of 100,000 mentions). `GcPauses` times each collection (through `gc.callbacks`); `FreezeSurvivors`
moves what survives a collection to the permanent generation, which later collections skip: the consumer
calls it once the views have caught up and then every few seconds, so a collection only walks what was
allocated since. The views hold acyclic data (models, dicts, lists, tuples) that reference counting frees
when it is dropped, frozen or not; cyclic garbage made of frozen objects waits for the hourly thaw.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any


class GcPauses:
    """Calls `observe(generation, seconds)` after every collection while installed (process-wide)."""

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._observe(info["generation"], time.perf_counter() - self._started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


# Collection thresholds while the freeze policy runs. Python's (700, 10, 10) let the views' new objects pile up
# between two collections of the young generation: at 1,000 mentions/s the API collected it twice a second,
# ~6 ms each, and the middle one every few seconds, ~25 ms each, all of it time the event loop and every
# request waited. 100 and 50 collect ~150 and 3 times a second, ~0.1 and ~2.5 ms. Once the views have caught
# up the oldest generation is never collected on its own: CPython 3.11-3.13 resets its count at each freeze,
# the freezes keep what it holds to ten seconds of objects, frozen without a walk, and the hourly thaw collects
# the whole heap. Before that (a catch-up), it is collected after 1000 collections of the middle one.
YOUNG_THRESHOLDS = (100, 50, 1000)

# The thresholds and the frozen generation belong to the process, not to one app: several apps in one process
# (tests) share them. The first `start` saves the thresholds, the last `stop` restores them and unfreezes.
_lock = threading.Lock()
_started: list[FreezeSurvivors] = []
_saved_thresholds: list[tuple[int, int, int]] = []


class FreezeSurvivors:
    """Collect garbage, then freeze every survivor; returns how many objects are frozen.

    The first call collects the whole heap. Later calls collect the young generations only and freeze what
    the oldest one gathered since without walking it: a full collection of ten seconds of views (~0.5 million
    objects at 1,000 mentions/s) held the event loop ~70 ms, the young ones take about a millisecond, and
    freezing itself only splices lists. A garbage cycle that got old within those seconds is frozen with the
    rest. Once every `thaw_every` seconds everything is unfrozen first and the whole heap collected again:
    such cycles, and those that formed among frozen objects (a request in flight when they were frozen that
    later failed, its exception and frames referencing each other), are reclaimed then, at the cost of one
    full-length pause."""

    def __init__(
        self,
        thaw_every: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        thresholds: tuple[int, int, int] = YOUNG_THRESHOLDS,
    ) -> None:
        self.thaw_every = thaw_every
        self.clock = clock
        self.thresholds = thresholds
        self._thawed = clock()
        self._full = True  # the next call collects every generation

    def start(self) -> None:
        """Set the collection thresholds of the policy (process-wide; the last `stop` puts the previous ones back)."""
        with _lock:
            if not _started:
                _saved_thresholds[:] = [gc.get_threshold()]
            if self not in _started:
                _started.append(self)
            gc.set_threshold(*self.thresholds)

    def stop(self) -> None:
        """The last policy to stop leaves the collector as it was found: nothing frozen, the previous thresholds."""
        with _lock:
            if self in _started:
                _started.remove(self)
            if _started:
                return
            self.thaw()
            if _saved_thresholds:
                gc.set_threshold(*_saved_thresholds.pop())

    def __call__(self) -> int:
        if self.clock() - self._thawed >= self.thaw_every:
            self.thaw()
        gc.collect(2 if self._full else 1)
        self._full = False
        gc.freeze()
        return gc.get_freeze_count()

    def thaw(self) -> None:
        """Unfreeze everything; the next call collects the whole heap."""
        gc.unfreeze()
        self._thawed = self.clock()
        self._full = True
