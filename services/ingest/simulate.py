"""A realistic simulated stream of social posts about the configured brands, for demos and load.

`generate_mentions` is pure and deterministic for a seed: it yields each mention with its offset (seconds
from the start), following a base rate, volume spikes and sentiment shifts per brand. `run_simulation`
paces that stream in real time and hands batches to a send function (Kafka in the service and CLI).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import EcouteConfig, Mention, utc_now
from schemas.config import Seconds
from schemas.models import Author, Engagement

logger = logging.getLogger(__name__)

# Share of each tone when no sentiment shift applies.
BASE_NEGATIVE_SHARE = 0.2
POSITIVE_OF_REST = 0.55
# Generation step: mentions of one step are spread evenly inside it.
TICK_SECONDS = 0.1


class Spike(BaseModel):
    """`brand`'s volume is multiplied by `factor` from `at` seconds after start, for `duration` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    brand: str
    at: Seconds | float = 0.0
    duration: Seconds
    factor: float = Field(gt=0)


class SentimentShift(BaseModel):
    """`brand`'s share of negative posts becomes `negative_share` from `at`, for `duration` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    brand: str
    at: Seconds | float = 0.0
    duration: Seconds
    negative_share: float = Field(ge=0, le=1)


class SimulateOptions(BaseModel):
    """Options of a `{type: simulate, ...}` source (and of `ecoute ingest simulate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rate: float = Field(20.0, gt=0, le=1_000_000, description="mentions per second, all brands together")
    count: int | None = Field(None, ge=0)
    duration: Seconds | None = None
    seed: int | None = None
    brands: list[str] | None = Field(None, description="a subset of the configured brands (default: all)")
    french_share: float = Field(0.15, ge=0, le=1)
    spikes: list[Spike] = Field(default_factory=list)
    sentiment_shifts: list[SentimentShift] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_brands_only(self) -> SimulateOptions:
        if self.brands is not None and not self.brands:
            raise ValueError("brands: give at least one brand, or leave it out for all")
        return self

    @classmethod
    def from_source(cls, source: Mapping[str, Any]) -> SimulateOptions:
        return cls.model_validate({k: v for k, v in source.items() if k != "type"})


@dataclass(frozen=True)
class BrandProfile:
    name: str
    terms: tuple[str, ...]
    competitors: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimulatedMention:
    offset: float  # seconds from the start of the simulation
    mention: Mention
    brand: str  # the brand the post is about (it may name a competitor too)
    tone: str  # positive | neutral | negative: what the post was written to say


_QUERY_TOKEN = re.compile(r'"([^"]+)"|([^\s()]+)')


def brand_terms(name: str, query: str | Sequence[str]) -> tuple[str, ...]:
    """The positive terms of a brand query, so simulated posts match it: '(acme OR "#acme") AND NOT x' → acme, #acme."""
    queries = [query] if isinstance(query, str) else list(query)
    terms: list[str] = []
    for text in queries:
        positive = re.split(r"\bNOT\b", text, maxsplit=1)[0]
        for quoted, bare in _QUERY_TOKEN.findall(positive):
            term = quoted or bare
            if term in ("AND", "OR") or not term.strip():
                continue
            if term not in terms:
                terms.append(term)
    return tuple(terms) or (name,)


def brand_profiles(config: EcouteConfig, only: Sequence[str] | None = None) -> list[BrandProfile]:
    names = list(config.brands) if only is None else list(only)
    unknown = [n for n in names if n not in config.brands]
    if unknown:
        raise ValueError(f"unknown brands {unknown}; configured: {sorted(config.brands)}")
    return [BrandProfile(n, brand_terms(n, config.brands[n].query), tuple(config.brands[n].competitors)) for n in names]


# ---------------------------------------------------------------------------------------------------------------
# What the posts say. {b} is the brand as people write it, {t} a topic term, {c} a competitor.

_EN = {
    "positive": [
        "Honestly {b} nailed it this time. Really impressed 👏",
        "Switched from {c} to {b} last month and I love it",
        "{b} {t} was fantastic today, quick and friendly. Great job!",
        "Big thanks to {b} — the new update is awesome",
        "Can't believe how good {b} has become. Highly recommend",
        "{b} just keeps getting better. The {t} is excellent",
        "Shoutout to {b} for the amazing {t}, best I've had in years",
        "Really happy with {b}, works perfectly and looks great",
    ],
    "neutral": [
        "Anyone tried {b} yet? Thinking about it",
        "{b} announced a new version today, details in the thread",
        "Comparing {b} and {c} for work, any opinions on {t}?",
        "Is {b} {t} available on weekends?",
        "Reading the {b} release notes. Some changes to {t}",
        "{b} will be at the trade fair next week",
        "Question for {b} users: how do you handle {t}?",
        "New {b} store opening downtown on Monday",
    ],
    "negative": [
        "{b} {t} is terrible. Waited 2 hours and nobody answered",
        "Really disappointed with {b}, it broke after a week",
        "Worst experience ever with {b}. Never again",
        "{b} raised the price again?! Awful, switching to {c}",
        "Is {b} down again? This is so frustrating",
        "Hate the new {b} update, everything is slower and buggy",
        "{b} support ignored my refund request. Angry and fed up",
        "Stay away from {b}, the {t} is a joke",
    ],
}

_FR = {
    "positive": [
        "Franchement {b} a fait du super travail, bravo !",
        "Très content de {b}, le {t} est excellent",
        "J'adore le nouveau {b}, parfait pour moi",
        "Merci {b} pour le service client, rapide et efficace",
    ],
    "neutral": [
        "Quelqu'un a testé {b} ? Des avis sur le {t} ?",
        "{b} annonce une nouvelle version aujourd'hui",
        "Comparatif {b} et {c} à lire ce matin",
        "Le {t} de {b} change le mois prochain",
    ],
    "negative": [
        "Vraiment déçu par {b}, nul et trop cher",
        "{b} ne répond jamais, le service client est horrible",
        "Encore une panne chez {b}, c'est insupportable",
        "Le {t} de {b} est une arnaque, je résilie",
    ],
}

_SUBREDDITS = ("technology", "gadgets", "BuyItForLife", "personalfinance", "france", "CustomerService", "startups")
_NEWS_EN = ("techcrunch.com", "theverge.com", "reuters.com", "bbc.co.uk", "wired.com")
_NEWS_FR = ("lemonde.fr", "lesechos.fr", "01net.com", "numerama.com")
_FIRST = (
    "alex",
    "sam",
    "maria",
    "jordan",
    "li",
    "fatima",
    "noah",
    "emma",
    "lucas",
    "chloe",
    "omar",
    "julie",
    "kenji",
    "sofia",
    "tom",
    "ines",
    "priya",
    "leo",
    "nina",
    "hugo",
)
_LAST = ("smith", "martin", "nguyen", "garcia", "dubois", "kim", "rossi", "patel", "bernard", "lee", "moreau", "brown")
_INFLUENCERS = ("techreviewdaily", "gadgetguru", "consumerwatch", "lesbonsplans", "marketpulse", "thedealhunter")
_TOPIC_FALLBACK = ("support", "price", "delivery", "app", "quality")


@dataclass(frozen=True)
class _Author:
    handle: str
    name: str
    followers: int
    influencer: bool


def _authors(rng: random.Random, n: int = 400) -> list[_Author]:
    out: list[_Author] = []
    for handle in _INFLUENCERS:
        out.append(_Author(handle, handle.title(), int(rng.uniform(20_000, 1_500_000)), True))
    for i in range(n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        followers = int(min(5_000_000, rng.lognormvariate(5.0, 1.8)))
        out.append(_Author(f"{first}{last[:3]}{i}", f"{first.title()} {last.title()}", followers, followers >= 10_000))
    return out


def _rate_factor(brand: str, t: float, spikes: Sequence[Spike]) -> float:
    factor = 1.0
    for spike in spikes:
        if spike.brand == brand and spike.at <= t < spike.at + spike.duration:
            factor *= spike.factor
    return factor


def negative_share_at(brand: str, t: float, shifts: Sequence[SentimentShift]) -> float:
    for shift in shifts:
        if shift.brand == brand and shift.at <= t < shift.at + shift.duration:
            return shift.negative_share
    return BASE_NEGATIVE_SHARE


class _Writer:
    """Writes one post: author, site, words, engagement."""

    def __init__(self, rng: random.Random, topics: Mapping[str, Sequence[str]], french_share: float) -> None:
        self.rng = rng
        self.french_share = french_share
        self.terms = [t for terms in topics.values() for t in terms] or list(_TOPIC_FALLBACK)
        self.authors = _authors(rng)
        self.influencers = [a for a in self.authors if a.influencer]

    def write(
        self, mention_id: str, brand: BrandProfile, all_brands: Sequence[BrandProfile], tone: str, when: datetime
    ) -> Mention:
        rng = self.rng
        french = rng.random() < self.french_share
        templates = (_FR if french else _EN)[tone]
        others = list(brand.competitors) + [b.name for b in all_brands if b.name != brand.name]
        competitor = rng.choice(others).title() if others else "the competition"
        term = rng.choice(brand.terms)
        shown = term if term.startswith(("#", "@")) or rng.random() < 0.5 else term.title()
        text = rng.choice(templates).format(b=shown, t=rng.choice(self.terms), c=competitor)
        if rng.random() < 0.15:
            text += f" #{brand.name}"
        author = rng.choice(self.influencers) if rng.random() < 0.03 else rng.choice(self.authors)
        site, url, title = self._where(author, french, text)
        post_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        reach = author.followers
        likes = int(rng.expovariate(1.0) * (2 + reach * 0.01))
        return Mention(
            schema="mention/1",
            id=mention_id,
            source="simulate",
            url=url.format(id=post_id.hex[:12]),
            site=site,
            published_at=when,
            fetched_at=when,
            author=Author(
                id=f"simulate:{author.handle}",
                handle=author.handle,
                name=author.name,
                followers=author.followers,
                url=f"https://mastodon.social/@{author.handle}",
            ),
            title=title,
            text=text,
            lang="fr" if french else "en",
            engagement=Engagement(
                likes=likes,
                shares=int(likes * rng.uniform(0.0, 0.3)),
                comments=int(likes * rng.uniform(0.0, 0.2)),
                views=int(likes * rng.uniform(10, 60)) + rng.randint(0, 50),
            ),
        )

    def _where(self, author: _Author, french: bool, text: str) -> tuple[str, str, str | None]:
        roll = self.rng.random()
        if roll < 0.4:
            return "mastodon.social", f"https://mastodon.social/@{author.handle}/{{id}}", None
        if roll < 0.7:
            sub = "france" if french else self.rng.choice(_SUBREDDITS)
            return f"reddit.com/r/{sub}", f"https://www.reddit.com/r/{sub}/comments/{{id}}/", text[:80]
        if roll < 0.85:
            return "bsky.app", f"https://bsky.app/profile/{author.handle}.bsky.social/post/{{id}}", None
        site = self.rng.choice(_NEWS_FR if french else _NEWS_EN)
        return site, f"https://{site}/articles/{{id}}", text[:80]


def generate_mentions(
    brands: Sequence[BrandProfile | str],
    topics: Mapping[str, Sequence[str]] | None = None,
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    seed: int | None = None,
    spikes: Sequence[Spike] = (),
    sentiment_shifts: Sequence[SentimentShift] = (),
    start: datetime | None = None,
    french_share: float = 0.15,
    run: str | None = None,
) -> Iterator[SimulatedMention]:
    """Mentions in offset order: `rate` per second split evenly across brands, shaped by spikes and shifts.

    Volumes are exact (a fractional accumulator per brand, no sampling noise); the words, authors and
    tone draws come from `random.Random(seed)`. Stops after `count` mentions or `duration` seconds,
    whichever comes first; with neither, the stream is endless. Ids are `simulate:<run>-<n>`; `run`
    defaults to one drawn from the seed — pass a fresh one per real run, or a restarted seeded
    simulation would repeat ids that a deduplicating reader has already seen.
    """
    profiles = [b if isinstance(b, BrandProfile) else BrandProfile(b, (b,)) for b in brands]
    if not profiles:
        raise ValueError("no brands to simulate: configure `brands:` or pass some")
    if rate <= 0:
        raise ValueError("rate must be > 0 mentions per second")
    rng = random.Random(seed)
    writer = _Writer(rng, topics or {}, french_share)
    run = run or f"{rng.getrandbits(48):012x}"
    start = start or utc_now()
    base = rate / len(profiles)
    owed = dict.fromkeys((p.name for p in profiles), 0.0)
    produced = 0
    step = 0
    while True:
        t = step * TICK_SECONDS
        if duration is not None and t >= duration - 1e-9:
            return
        due: list[tuple[float, BrandProfile]] = []
        for profile in profiles:
            owed[profile.name] += base * _rate_factor(profile.name, t, spikes) * TICK_SECONDS
            n = math.floor(owed[profile.name] + 1e-9)
            owed[profile.name] -= n
            due.extend((t + (i + 0.5) * TICK_SECONDS / n, profile) for i in range(n))
        due.sort(key=lambda d: d[0])
        for offset, profile in due:
            if count is not None and produced >= count:
                return
            negative = negative_share_at(profile.name, t, sentiment_shifts)
            roll = rng.random()
            if roll < negative:
                tone = "negative"
            elif roll < negative + (1 - negative) * POSITIVE_OF_REST:
                tone = "positive"
            else:
                tone = "neutral"
            when = start + timedelta(seconds=offset)
            mention = writer.write(f"simulate:{run}-{produced}", profile, profiles, tone, when)
            yield SimulatedMention(offset, mention, profile.name, tone)
            produced += 1
        step += 1


def simulation_from_options(
    config: EcouteConfig, options: SimulateOptions, start: datetime | None = None, run: str | None = None
) -> Iterator[SimulatedMention]:
    profiles = brand_profiles(config, options.brands)
    known = {p.name for p in profiles}
    for kind, brand in [("spike", s.brand) for s in options.spikes] + [
        ("sentiment shift", s.brand) for s in options.sentiment_shifts
    ]:
        if brand not in known:
            raise ValueError(f"simulate: {kind} for unknown brand {brand!r}; simulated brands: {sorted(known)}")
    return generate_mentions(
        profiles,
        config.topics,
        rate=options.rate,
        count=options.count,
        duration=options.duration,
        seed=options.seed,
        spikes=options.spikes,
        sentiment_shifts=options.sentiment_shifts,
        start=start,
        french_share=options.french_share,
        run=run,
    )


SendBatch = Callable[[Sequence[Mention]], Awaitable[None]]


async def run_simulation(
    stream: Iterable[SimulatedMention],
    send: SendBatch,
    *,
    max_batch: int = 500,
    progress_every: float = 10.0,
    name: str = "simulate",
) -> int:
    """Send the stream in real time: each mention when its offset comes, batched; returns how many were sent.

    published_at and fetched_at are set to the moment of sending. When `send` is slow (broker down),
    the stream falls behind and catches up in batches of at most `max_batch`.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    batch: list[Mention] = []
    sent = 0
    next_report = time.monotonic() + progress_every

    async def flush() -> None:
        nonlocal sent, next_report, batch
        if not batch:
            return
        now = utc_now()
        await send([m.model_copy(update={"published_at": now, "fetched_at": now}) for m in batch])
        sent += len(batch)
        batch = []
        if time.monotonic() >= next_report:
            logger.info("%s: %d mentions sent in %.0fs", name, sent, loop.time() - began)
            next_report = time.monotonic() + progress_every

    for item in stream:
        wait = began + item.offset - loop.time()
        if wait > 0:
            await flush()
            await asyncio.sleep(wait)
        batch.append(item.mention)
        if len(batch) >= max_batch:
            await flush()
    await flush()
    logger.info("%s: done, %d mentions sent in %.1fs", name, sent, loop.time() - began)
    return sent
