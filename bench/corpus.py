"""A deterministic corpus of short social posts about the demo brands, shared by the benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

OPENERS = ["Just tried", "Honestly", "Can't believe", "Day 3 with", "PSA:", "Thread:", "Ok so", "Reminder:"]
BODIES = [
    "{b} support answered in 2 minutes, impressed!",
    "the new {b} update drains my battery like crazy :(",
    "{b} prices went up again, way too expensive",
    "{b} delivery was late AGAIN. not happy at all",
    "loving the {b} camera, photos look amazing 😍",
    "is {b} down for anyone else?",
    "{b} customer service is the worst, never again",
    "switched from {b} and I don't miss it",
    "{b} is fine I guess, nothing special",
    "wow, {b} really nailed the screen this time!!!",
]
TAGS = ["", " #tech", " #fail", " lol", " 🙄", " 👍", " #deal"]


def brand_names(count: int) -> tuple[str, ...]:
    """`count` made-up brands, brand00, brand01, … (as wide as the largest number)."""
    width = len(str(max(count - 1, 0)))
    return tuple(f"brand{i:0{width}d}" for i in range(count))


def brands_config(brands: tuple[str, ...]) -> str:
    """An ecoute.yaml with one query per brand (the word or its hashtag) and the demo topics."""
    lines = ["brands:"]
    lines += [f"  {b}: {{query: '{b} OR \"#{b}\"'}}" for b in brands]
    lines += [
        "topics:",
        "  pricing: [price, prices, expensive]",
        '  support: [support, "customer service"]',
        "  product: [battery, camera, screen, update]",
        "",
    ]
    return "\n".join(lines)


def make_corpus(
    n: int,
    brands: tuple[str, ...] = ("acme", "globex"),
    seed: int = 42,
    authors: int = 5000,
    span: timedelta | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """`n` posts drawn from `authors` made-up authors, all published now, or with `span` spread evenly
    over the `span` that ends at `end` (default now), oldest first, as a live stream would bring them."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    now = end.isoformat()
    step = span / n if span is not None and n else None
    start = end - span if span is not None else end
    out = []
    for i in range(n):
        brand = rng.choice(brands)
        text = f"{rng.choice(OPENERS)} {rng.choice(BODIES).format(b=brand)}{rng.choice(TAGS)}"
        out.append(
            {
                "id": f"bench:{seed}:{i}",
                "source": "simulate",
                "published_at": now if step is None else (start + step * (i + 1)).isoformat(),
                "text": text,
                "author": {"id": f"u{rng.randrange(authors)}", "followers": rng.randrange(20000)},
                "engagement": {"likes": rng.randrange(50), "shares": rng.randrange(5), "comments": rng.randrange(5)},
            }
        )
    return out
