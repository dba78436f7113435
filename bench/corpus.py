"""A deterministic corpus of short social posts about the demo brands, shared by the benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime
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


def make_corpus(n: int, brands: tuple[str, ...] = ("acme", "globex"), seed: int = 42) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        brand = rng.choice(brands)
        text = f"{rng.choice(OPENERS)} {rng.choice(BODIES).format(b=brand)}{rng.choice(TAGS)}"
        out.append(
            {
                "id": f"bench:{seed}:{i}",
                "source": "simulate",
                "published_at": now,
                "text": text,
                "author": {"id": f"u{rng.randrange(5000)}", "followers": rng.randrange(20000)},
                "engagement": {"likes": rng.randrange(50), "shares": rng.randrange(5), "comments": rng.randrange(5)},
            }
        )
    return out
