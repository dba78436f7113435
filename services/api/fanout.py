"""Fan-out of new alerts to live subscribers (the SSE streams): one bounded queue per subscriber.

The consumer publishes without ever waiting; a subscriber whose queue is full is dropped (its stream
ends and the client reconnects, resuming with Last-Event-ID) rather than slowing everyone down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from schemas import Alert

logger = logging.getLogger(__name__)


class Subscription:
    """One subscriber's queue; `None` in the queue means the stream is over (dropped or shutdown)."""

    def __init__(self, brand: str | None, size: int) -> None:
        self.brand = brand
        self.queue: asyncio.Queue[Alert | None] = asyncio.Queue(maxsize=size)
        self.closed = False

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Pending alerts are discarded, not delivered after a gap: the client resumes with Last-Event-ID
        # (the last alert it did receive) and gets them again in order.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def next(self) -> Alert | None:
        return await self.queue.get()


class AlertFanout:
    def __init__(
        self,
        queue_size: int = 256,
        on_change: Callable[[int], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._on_change = on_change  # told the number of subscribers after each change
        self._on_drop = on_drop  # told each time a slow subscriber is dropped
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self._subscribers))

    def subscribe(self, brand: str | None = None) -> Subscription:
        subscription = Subscription(brand, self.queue_size)
        if self.closed:  # shutting down: the stream ends at once
            subscription._close()
            return subscription
        self._subscribers.add(subscription)
        self._changed()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.discard(subscription)
            self._changed()
        subscription._close()

    def publish(self, alert: Alert) -> None:
        """Hand an alert to every matching subscriber without waiting; drop the ones that fell behind."""
        for subscription in list(self._subscribers):
            if subscription.brand is not None and subscription.brand != alert.brand:
                continue
            try:
                subscription.queue.put_nowait(alert)
            except asyncio.QueueFull:
                self.dropped += 1
                if self._on_drop is not None:
                    self._on_drop()
                logger.warning(
                    "SSE subscriber (brand=%s) has %d alerts pending: dropping it", subscription.brand, self.queue_size
                )
                self.unsubscribe(subscription)

    def close(self) -> None:
        """End every stream, and any opened later (shutdown)."""
        self.closed = True
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription)
