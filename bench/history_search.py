"""Search of the history store over a million mentions: latency of GET /v1/brands/{brand}/mentions/search.

    .venv/bin/python bench/history_search.py [--mentions 1000000] [--per-kind 60] [--data DIR] [--explain]

Starts PostgreSQL (ecoute.postgres.LocalPostgres), applies the migrations, and writes --mentions scored mentions
with the store's writer (services/store/writer.write_batch, batches of 5,000, oldest first as the sink would):
short posts about six brands of unequal volume (30 % to 8 %), 62 % English, 33 % French, the rest Spanish or of
no known language, published over the last 13 months, each from a template with everyday words plus one to
four words drawn from a Zipf-distributed vocabulary of 30,000 made-up words (so there are common, middling
and rare terms, as in real text), 60,000 authors of Zipf-distributed activity. Then ANALYZE, and `ecoute api`
as a process (one uvicorn worker, no Kafka: the history routes do not need it), and one client times requests
one at a time, the kinds shuffled together:
  recent      no q: the brand's newest page (50)
  common      q = an English word in ~8 % of posts ("battery")
  french      q = French words or a phrase ("livraison", "prix élevés", '"service client"')
  middling    q = a made-up word in ~0.05-0.1 % of posts
  rare        q = a made-up word in 10-40 posts overall, or in none
  filters     no q; sentiment, lang, since (90 days)
  q+filters   q = a common word, sentiment=negative, a 30-day window some months back
  author      author = the handle of an author with ~10-50 posts
  topic       topic = pricing, a 60-day window
  deep        pages 5 to 15 of q = battery, each from the previous page's next_cursor
  old cursor  a page of q = battery starting from a cursor 11 months back
  other brand q = another brand's name: in 8-30 % of all posts, in none of this brand's
Prints p50/p95/p99/max per kind and for the whole mix, against the target (p95 <= 200 ms), then times two CSV
exports of the largest brand streamed to the end (rows/s). --data DIR keeps
the database there and reuses it on the next run (loading takes minutes); --explain prints EXPLAIN ANALYZE of
each kind's query as the API builds it. Not a test; results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecoute.brokers import free_port  # noqa: E402
from ecoute.postgres import LocalPostgres  # noqa: E402
from schemas import ScoredMention, load  # noqa: E402
from schemas.history import migrate  # noqa: E402
from services.api.history_search import (  # noqa: E402
    _NO_JIT,
    _TEXT_INDEX_ONLY,
    SearchFilter,
    _page_query,
    time_windows,
)
from services.store.rows import Batch  # noqa: E402
from services.store.writer import Partitions, write_batch  # noqa: E402

API_KEY = "bench-history-key"
TARGET_P95_MS = 200.0
CHUNK = 5000
KEEP_ALL = datetime(2000, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=395)  # 13 months
BRANDS = {"acme": 30, "globex": 22, "initech": 16, "umbrella": 12, "hooli": 12, "stark": 8}
SOURCES = ["reddit", "mastodon", "bluesky", "rss", "hackernews"]
AUTHORS = 60_000
TAIL_WORDS = 30_000

# (text, label, topics): {b} the brand, {p} a product word, {t} the made-up tail words.
EN_TEMPLATES: list[tuple[str, str, list[str]]] = [
    ("the new {b} update drains my battery like crazy {t}", "negative", ["product"]),
    ("{b} support answered in 2 minutes, impressed! {t}", "positive", ["support"]),
    ("{b} prices went up again, way too expensive {t}", "negative", ["pricing"]),
    ("{b} delivery was late again, not happy at all {t}", "negative", ["delivery"]),
    ("loving the {b} {p}, photos look amazing {t}", "positive", ["product"]),
    ("is {b} down for anyone else? {t}", "neutral", []),
    ("{b} customer service is the worst, never again {t}", "negative", ["support"]),
    ("switched from {b} and I don't miss it {t}", "negative", []),
    ("{b} is fine I guess, nothing special {t}", "neutral", []),
    ("wow, {b} really nailed the {p} this time {t}", "positive", ["product"]),
    ("my {b} {p} battery lasts two days now {t}", "positive", ["product"]),
    ("anyone tried the {b} {p} yet? thinking about it {t}", "neutral", ["product"]),
    ("{b} refund took three weeks, ridiculous {t}", "negative", ["support"]),
    ("great deal on {b} {p} today, grab it {t}", "positive", ["pricing"]),
    ("{b} app keeps crashing after the update {t}", "negative", ["product"]),
    ("thread: everything wrong with the {b} {p} {t}", "negative", ["product"]),
    ("{b} shipping was fast, well packed {t}", "positive", ["delivery"]),
    ("why is the {b} {p} so expensive here {t}", "negative", ["pricing"]),
    ("just ordered from {b}, fingers crossed {t}", "neutral", ["delivery"]),
    ("the {b} store staff were really helpful {t}", "positive", ["support"]),
]
FR_TEMPLATES: list[tuple[str, str, list[str]]] = [
    ("les prix {b} sont trop élevés {t}", "negative", ["pricing"]),
    ("le service client {b} ne répond jamais {t}", "negative", ["support"]),
    ("livraison {b} rapide, rien à dire {t}", "positive", ["delivery"]),
    ("mon {p} {b} est super, je recommande {t}", "positive", ["product"]),
    ("encore un retard de livraison chez {b} {t}", "negative", ["delivery"]),
    ("quelqu'un a essayé le nouveau {p} {b} ? {t}", "neutral", ["product"]),
    ("la batterie de mon {p} {b} ne tient pas {t}", "negative", ["product"]),
    ("{b} baisse ses prix cette semaine {t}", "positive", ["pricing"]),
    ("remboursement {b} toujours pas reçu {t}", "negative", ["support"]),
    ("bon rapport qualité prix chez {b} {t}", "positive", ["pricing"]),
    ("l'application {b} plante depuis la mise à jour {t}", "negative", ["product"]),
    ("{b} c'est correct, sans plus {t}", "neutral", []),
]
ES_TEMPLATES: list[tuple[str, str, list[str]]] = [
    ("el servicio de {b} es muy lento {t}", "negative", ["support"]),
    ("me encanta mi {p} de {b} {t}", "positive", ["product"]),
]
PRODUCTS = ["phone", "laptop", "camera", "watch", "tablet", "headphones", "charger", "screen", "speaker", "router"]
PRODUITS = ["téléphone", "ordinateur", "appareil", "casque", "chargeur", "écran", "montre", "tablette"]
SYLLABLES = [
    "ba", "be", "bri", "ca", "co", "da", "de", "dro", "fa", "fi", "ga", "gu", "ka", "ki", "la", "li", "lo", "ma",
    "me", "mi", "na", "no", "pa", "pe", "qua", "ra", "re", "ri", "sa", "se", "sho", "ta", "te", "tri", "va", "ve",
    "vo", "xa", "za", "zu",
]  # fmt: skip


def tail_vocabulary(count: int) -> list[str]:
    """`count` distinct made-up words (3-4 syllables and a consonant), the same on every run."""
    rng = random.Random(11)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((3, 4)))) + rng.choice("nrstxlk")
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_cumulative(count: int, s: float) -> list[float]:
    total, out = 0.0, []
    for rank in range(1, count + 1):
        total += 1.0 / rank**s
        out.append(total)
    return out


@dataclass
class Corpus:
    """What the generator put in the store, for choosing queries of known frequency."""

    total: int = 0
    tail: Counter[str] = field(default_factory=Counter)
    authors: Counter[str] = field(default_factory=Counter)
    end: datetime = field(default_factory=lambda: datetime.now(UTC))


def generate(n: int, corpus: Corpus) -> Iterator[list[tuple[str, bytes]]]:
    """Batches of (brand, scored-mention/1 JSON), oldest first, over the 13 months up to corpus.end."""
    rng = random.Random(42)
    words = tail_vocabulary(TAIL_WORDS)
    word_cum = zipf_cumulative(TAIL_WORDS, 1.07)
    author_cum = zipf_cumulative(AUTHORS, 0.8)
    brands, brand_weights = list(BRANDS), list(BRANDS.values())
    start = corpus.end - SPAN
    step = SPAN / n
    batch: list[tuple[str, bytes]] = []
    for i in range(n):
        brand = rng.choices(brands, brand_weights)[0]
        roll = rng.random()
        if roll < 0.62:
            lang, (template, label, topics), product = "en", rng.choice(EN_TEMPLATES), rng.choice(PRODUCTS)
        elif roll < 0.95:
            lang, (template, label, topics), product = "fr", rng.choice(FR_TEMPLATES), rng.choice(PRODUITS)
        else:
            lang, (template, label, topics), product = rng.choice(("es", None)), rng.choice(ES_TEMPLATES), "móvil"
        tail = [words[bisect.bisect_left(word_cum, rng.random() * word_cum[-1])] for _ in range(rng.randint(1, 4))]
        corpus.tail.update(set(tail))
        if rng.random() < 0.15:  # tone is not the template's every time
            label = rng.choice(("positive", "neutral", "negative", "unscored"))
        compound = {"positive": 0.55, "negative": -0.6}.get(label, 0.0)
        who = bisect.bisect_left(author_cum, rng.random() * author_cum[-1])
        handle = f"user{who}"
        corpus.authors[handle] += 1
        source = SOURCES[i % len(SOURCES)]
        stamp = (start + step * i + timedelta(seconds=rng.random() * 30)).isoformat().replace("+00:00", "Z")
        followers = rng.randrange(50_000)
        record = {
            "schema": "scored-mention/1",
            "id": f"{source}:b{i:07d}",
            "source": source,
            "url": f"https://{source}.example/p/{i}",
            "site": f"{source}.example",
            "published_at": stamp,
            "fetched_at": stamp,
            "author": {"id": f"id{who}" if who % 10 else None, "handle": handle, "followers": followers},
            "text": template.format(b=brand, p=product, t=" ".join(tail)),
            "lang": lang,
            "engagement": {"likes": rng.randrange(60), "shares": rng.randrange(6), "comments": rng.randrange(8)},
            "brand": brand,
            "sentiment": {"compound": compound, "pos": 0.3, "neu": 0.5, "neg": 0.2, "label": label},
            "topics": topics,
            "matched": [brand],
            "reach": followers,
            "scored_at": stamp,
        }
        batch.append((brand, orjson.dumps(record)))
        if len(batch) == CHUNK:
            yield batch
            batch = []
    corpus.total = n
    if batch:
        yield batch


async def fill(url: str, n: int, corpus: Corpus) -> float:
    """Write the corpus with the store's writer; returns the seconds it took."""
    await migrate(url)
    started = time.perf_counter()
    partitions = Partitions()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for number, chunk in enumerate(generate(n, corpus)):
            if number == 0:
                load(ScoredMention, chunk[0][1])  # the hand-built records are valid ones
            batch = Batch()
            for brand, value in chunk:
                batch.add("mentions.scored", brand.encode(), value)
            await write_batch(conn, batch, KEEP_ALL, partitions)
            if (number + 1) % 40 == 0:
                print(
                    f"    {(number + 1) * CHUNK:,} mentions stored ({time.perf_counter() - started:.0f} s)", flush=True
                )
    return time.perf_counter() - started


async def settle(url: str) -> float:
    """VACUUM ANALYZE, as autovacuum would have done by the time anyone searches: statistics for the planner,
    and hint bits set (else the first reads of freshly loaded pages write them back)."""
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("VACUUM (ANALYZE) mentions")
    return time.perf_counter() - started


async def corpus_from_store(url: str) -> Corpus:
    """The frequencies of a database loaded by an earlier run (--data), read back from the store."""
    corpus = Corpus(tail=Counter(), authors=Counter())
    words = set(tail_vocabulary(TAIL_WORDS))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*), max(published_at) FROM mentions")
        row = await cur.fetchone()
        assert row is not None
        corpus.total, last = row
        corpus.end = last + timedelta(seconds=60)
        cur = await conn.execute("SELECT word, ndoc FROM ts_stat('SELECT search FROM mentions')")
        for word, ndoc in await cur.fetchall():
            if word in words:
                corpus.tail[word] = ndoc
        cur = await conn.execute("SELECT author_handle, count(*) FROM mentions GROUP BY author_handle")
        for handle, count in await cur.fetchall():
            corpus.authors[handle] = count
    return corpus


async def stored_count(url: str) -> int:
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute("SELECT count(*) FROM mentions")
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


# ---------------------------------------------------------------------------------------------- the requests


@dataclass
class Request:
    kind: str
    brand: str
    params: dict[str, Any]
    pages: int = 1  # deep: how many pages to follow; each page after `first_timed` is timed


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def plan_requests(corpus: Corpus, per_kind: int, rng: random.Random) -> list[Request]:
    brands = list(BRANDS)
    total = corpus.total
    middling = [w for w, c in corpus.tail.items() if 0.0005 * total <= c <= 0.001 * total]
    rare = [w for w, c in corpus.tail.items() if 10 <= c <= 40]
    authors = [a for a, c in corpus.authors.items() if 10 <= c <= 50]
    french = ["livraison", "prix élevés", '"service client"', "remboursement", "batterie"]
    end = corpus.end
    out: list[Request] = []
    for _ in range(per_kind):
        brand = rng.choice(brands)
        out.append(Request("recent", brand, {}))
        out.append(Request("common", rng.choice(brands), {"q": "battery"}))
        out.append(Request("french", rng.choice(brands), {"q": rng.choice(french)}))
        out.append(Request("middling", rng.choice(brands), {"q": rng.choice(middling)}))
        rare_q = rng.choice(rare) if rng.random() < 0.8 else "nowhereword" + str(rng.randrange(1000))
        out.append(Request("rare", rng.choice(brands), {"q": rare_q}))
        out.append(
            Request(
                "filters",
                rng.choice(brands),
                {
                    "sentiment": rng.choice(("negative", "positive")),
                    "lang": rng.choice(("fr", "en")),
                    "since": iso(end - timedelta(days=90)),
                },
            )
        )
        months_back = rng.randrange(2, 11)
        window_end = end - timedelta(days=30 * months_back)
        out.append(
            Request(
                "q+filters",
                rng.choice(brands),
                {
                    "q": rng.choice(("battery", "expensive", "delivery", "prix")),
                    "sentiment": "negative",
                    "since": iso(window_end - timedelta(days=30)),
                    "until": iso(window_end),
                },
            )
        )
        out.append(Request("author", rng.choice(brands), {"author": rng.choice(authors)}))
        out.append(
            Request(
                "topic",
                rng.choice(brands),
                {"topic": "pricing", "since": iso(end - timedelta(days=60 * rng.randrange(1, 6)))},
            )
        )
        out.append(Request("old cursor", rng.choice(brands), {"q": "battery", "until": iso(end - timedelta(days=330))}))
        brand = rng.choice(brands)
        out.append(Request("other brand", brand, {"q": rng.choice([b for b in brands if b != brand])}))
    for _ in range(max(1, per_kind // 10)):
        out.append(Request("deep", rng.choice(brands), {"q": "battery"}, pages=15))
    rng.shuffle(out)
    return out


def time_exports(api_url: str, end: datetime) -> list[str]:
    """CSV exports of the largest brand, streamed to the end: rows, seconds, rows/s (best of two)."""
    cases = [
        ("acme, q=battery, 13 months", {"q": "battery"}),
        ("acme, every mention of 60 days", {"since": iso(end - timedelta(days=60))}),
    ]
    lines = []
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300) as http:
        for name, params in cases:
            best = None
            for _ in range(2):
                started = time.perf_counter()
                rows = -1  # the header line
                with http.stream(
                    "GET", "/v1/brands/acme/mentions/search", params={**params, "format": "csv"}
                ) as answer:
                    if answer.status_code != 200:
                        raise SystemExit(f"export {params}: {answer.status_code}")
                    for line in answer.iter_lines():
                        rows += 1 if line else 0
                seconds = time.perf_counter() - started
                best = min(best or seconds, seconds)
            assert best is not None
            lines.append(f"| {name} | {rows:,} | {best:.2f} | {rows / best:,.0f} |")
    return lines


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_requests(api_url: str, requests: list[Request]) -> dict[str, list[float]]:
    """Each request (deep: each page from 5 on) timed alone, one at a time; ms by kind."""
    timings: dict[str, list[float]] = {}
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:

        def get(brand: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            answer = http.get(f"/v1/brands/{brand}/mentions/search", params=params)
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code != 200:
                raise SystemExit(f"{brand} {params}: {answer.status_code} {answer.text[:300]}")
            return elapsed, answer.json()

        for request in requests:
            if request.kind == "deep":
                cursor = None
                for page in range(1, request.pages + 1):
                    elapsed, body = get(request.brand, {**request.params, **({"cursor": cursor} if cursor else {})})
                    if page >= 5:
                        timings.setdefault("deep", []).append(elapsed)
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
            elif request.kind == "old cursor":
                # A cursor 11 months back (from a page bounded there), then the page after it without the bound.
                _, body = get(request.brand, {**request.params, "limit": 1})
                if body["next_cursor"] is None:
                    continue
                params = {k: v for k, v in request.params.items() if k != "until"}
                elapsed, _ = get(request.brand, {**params, "cursor": body["next_cursor"]})
                timings.setdefault(request.kind, []).append(elapsed)
            else:
                elapsed, _ = get(request.brand, request.params)
                timings.setdefault(request.kind, []).append(elapsed)
    return timings


async def explain(url: str, corpus: Corpus, requests: list[Request]) -> None:
    """EXPLAIN ANALYZE of one query per kind, as the API builds it."""
    seen: set[str] = set()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for request in requests:
            if request.kind in seen:
                continue
            seen.add(request.kind)
            params = dict(request.params)
            after = None
            if request.kind in ("old cursor", "deep"):
                params.pop("until", None)
                after = (corpus.end - timedelta(days=330), "zzz")
            search = SearchFilter(
                brand=request.brand,
                q=params.get("q"),
                since=datetime.fromisoformat(params["since"]) if "since" in params else None,
                until=datetime.fromisoformat(params["until"]) if "until" in params else None,
                sentiment=params.get("sentiment"),
                lang=params.get("lang"),
                author=params.get("author"),
                topic=params.get("topic"),
            )
            # Window after window, with the API's settings, until the page (50 + 1) is full.
            found = 0
            await conn.execute("BEGIN")
            await conn.execute(_TEXT_INDEX_ONLY if search.q is not None else _NO_JIT)
            for window in time_windows(search, after, datetime.now(UTC)):
                query, values = _page_query(search, after, 51 - found, window)
                cur = await conn.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + query, values, prepare=False)
                plan = "\n".join(f"      {row[0]}" for row in await cur.fetchall())
                cur = await conn.execute(query, values, prepare=False)
                found += len(await cur.fetchall())
                print(f"\n  {request.kind} {request.brand} {request.params} in {window}: {found} rows so far\n{plan}")
                if found >= 51:
                    break
            await conn.execute("COMMIT")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_api(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "ecoute.yaml"
    brands = "\n".join(f"  {b}: {{query: {b}}}" for b in BRANDS)
    config.write_text(
        f"brands:\n{brands}\napi_keys:\n  - {{key: {API_KEY}, role: admin, brands: ['*']}}\n", encoding="utf-8"
    )
    port = free_port()
    env = {
        **os.environ,
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_DATABASE_URL": database_url,
        # No broker: the live views keep retrying in the background; the history routes do not need them.
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "ECOUTE_API_PORT": str(port),
        "ECOUTE_API_RATE_LIMIT_PER_SECOND": "1000000",
        "ECOUTE_API_RATE_LIMIT_BURST": "1000000",
    }
    log = workdir / "api.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecoute.cli", "api"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the API did not start; see {log}")
        try:
            if httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    # The views load the store's recent rows at start: wait until the process is idle (under 5 % of a core).
    previous = cpu_seconds(proc.pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(proc.pid)
        if now - previous < 0.05:
            break
        previous = now
    return proc, api_url


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1, load5, _ = os.getloadavg()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()},"
        f" load average {load1:.1f} / {load5:.1f} at the start"
    )


async def table_size(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT pg_size_pretty(sum(pg_table_size(c.oid))), pg_size_pretty(sum(pg_indexes_size(c.oid)))"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'mentions'"
        )
        row = await cur.fetchone()
        cur = await conn.execute(
            "SELECT server_version FROM (SELECT current_setting('server_version')) s(server_version)"
        )
        version = await cur.fetchone()
    assert row is not None and version is not None
    return f"mentions: {row[0]} of tables, {row[1]} of indexes (PostgreSQL {version[0]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mentions", type=int, default=1_000_000)
    parser.add_argument("--per-kind", type=int, default=60, help="requests of each kind (deep: a tenth, 11 pages)")
    parser.add_argument("--data", type=Path, default=None, help="keep the database here; reuse it when loaded")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each kind's query")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print("machine:", machine())

    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-history-"))

    def interrupted(*_: object) -> None:
        raise SystemExit("terminated")  # so the finally below stops the API and PostgreSQL

    signal.signal(signal.SIGTERM, interrupted)
    server = LocalPostgres(data_dir=args.data).start()
    proc = None
    try:
        url = server.url
        loaded = asyncio.run(stored_count(url))
        if loaded >= args.mentions:
            print(f"reusing the {loaded:,} mentions stored in {args.data}")
            asyncio.run(migrate(url))  # a migration added since the data was loaded
            corpus = asyncio.run(corpus_from_store(url))
        else:
            if loaded:
                raise SystemExit(f"{args.data} holds {loaded:,} mentions, not {args.mentions:,}: give another --data")
            corpus = Corpus()
            seconds = asyncio.run(fill(url, args.mentions, corpus))
            print(f"stored {args.mentions:,} mentions in {seconds:.0f} s ({args.mentions / seconds:,.0f}/s)")
        print(f"VACUUM (ANALYZE) in {asyncio.run(settle(url)):.0f} s")
        print(asyncio.run(table_size(url)))
        requests = plan_requests(corpus, args.per_kind, random.Random(args.seed))
        if args.explain:
            asyncio.run(explain(url, corpus, requests))
        proc, api_url = start_api(url, workdir)
        warm = plan_requests(corpus, 2, random.Random(args.seed + 1))
        run_requests(api_url, warm)  # the first requests of each kind open connections and read cold pages
        started = time.perf_counter()
        timings = run_requests(api_url, requests)
        wall = time.perf_counter() - started
        exports = time_exports(api_url, corpus.end)
    finally:
        if proc is not None:
            stop(proc)
        server.stop(remove=args.data is None)

    every = [t for values in timings.values() for t in values]
    print(f"\n{len(every)} timed requests in {wall:.0f} s, one at a time; ms (target: p95 <= {TARGET_P95_MS:.0f})")
    print("| kind | requests | p50 | p95 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for kind in sorted(timings, key=lambda k: statistics.median(timings[k])):
        values = timings[kind]
        print(
            f"| {kind} | {len(values)} | {percentile(values, 50):.1f} | {percentile(values, 95):.1f} |"
            f" {percentile(values, 99):.1f} | {max(values):.1f} |"
        )
    print(
        f"| **mix** | {len(every)} | {percentile(every, 50):.1f} | **{percentile(every, 95):.1f}** |"
        f" {percentile(every, 99):.1f} | {max(every):.1f} |"
    )
    misses = [k for k, v in timings.items() if percentile(v, 95) > TARGET_P95_MS]
    print("target met by every kind" if not misses else f"p95 over the target: {', '.join(misses)}")
    print("\nCSV exports (format=csv), streamed to the end, best of two:")
    print("| export | rows | seconds | rows/s |")
    print("|---|---|---|---|")
    print("\n".join(exports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
