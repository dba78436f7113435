"""The scheduled digest on a real PostgreSQL, a real loopback webhook receiver and a real SMTP server (aiosmtpd):
a due digest goes once to every channel with the numbers recounted here, signed, and never again after a restart
or from a second store instance; a period not due is not made; a webhook outside fetch.allow_networks is refused;
an SMTP server that is down is retried, counted and given up on without stopping anything. "Now" is an injected
clock: nothing waits for a week."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry

from schemas import Alert, ScoredMention, dump, load_config
from schemas.history import migrate
from schemas.webhooks import Outcome
from services.store.digest import (
    ChannelState,
    DigestRecord,
    DigestScheduler,
    after_attempt,
    due_period,
)
from services.store.metrics import StoreMetrics
from services.store.rows import Batch
from services.store.settings import StoreSettings
from services.store.writer import Partitions, write_batch
from tests.api.webhook_receiver import WebhookReceiver
from tests.helpers import async_wait_until

pytestmark = pytest.mark.usefixtures("clean_env")

SECRET = "digest-secret-42"
PERIOD = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
PERIOD_END = PERIOD + timedelta(days=7)
PREVIOUS = PERIOD - timedelta(days=7)
DUE = PERIOD_END + timedelta(hours=8)  # Monday 08:00 UTC, the default send time
KEEP_ALL = datetime(2000, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- data


def mention(brand: str, mention_id: str, at: datetime, label: str, **extra: Any) -> ScoredMention:
    compound = {"positive": 0.7, "neutral": 0.0, "negative": -0.5}[label]
    return ScoredMention.model_validate(
        {
            "id": mention_id,
            "source": "rss",
            "url": extra.get("url", f"https://news.example.org/{brand}/{mention_id}"),
            "published_at": at,
            "brand": brand,
            "text": extra.get("text", f"people talk about {brand} ({mention_id})"),
            "author": extra.get("author", {"id": f"author-{mention_id}"}),
            "engagement": extra.get("engagement", {}),
            "sentiment": {"compound": compound, "pos": 0.4, "neu": 0.5, "neg": 0.1, "label": label},
            "reach": 100,
        }
    )


def alert(alert_id: str, at: datetime, severity: str, kind: str = "volume_spike") -> Alert:
    return Alert.model_validate(
        {
            "id": alert_id,
            "brand": "acme",
            "kind": kind,
            "severity": severity,
            "window": {"start": at - timedelta(minutes=5), "end": at},
            "observed": 40,
            "baseline": 4,
            "threshold": 20,
            "message": f"acme: {kind.replace('_', ' ')} ({alert_id})",
            "created_at": at,
        }
    )


@dataclass
class Data:
    mentions: list[ScoredMention] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    def acme_in(self, start: datetime, end: datetime) -> list[ScoredMention]:
        return [m for m in self.mentions if m.brand == "acme" and start <= m.published_at < end]


def history() -> Data:
    data = Data()
    labels = ("positive", "positive", "neutral", "negative")
    for i in range(30):
        data.mentions.append(
            mention(
                "acme",
                f"p{i}",
                PERIOD + timedelta(hours=5 * i),
                labels[i % 4],
                author={"id": f"a{i % 11}", "handle": f"fan{i % 11}"},
                engagement={"likes": i * 3 % 17, "shares": i % 5, "comments": i % 7},
            )
        )
    # Someone else's text and URL, the top mention by engagement: escaped, and never a link.
    data.mentions.append(
        mention(
            "acme",
            "hostile",
            PERIOD + timedelta(days=3),
            "negative",
            text="<script>alert(1)</script> Acme & co",
            url="javascript:alert(1)",
            author={"id": "eve", "handle": "<b>eve</b>"},
            engagement={"likes": 500},
        )
    )
    for i in range(12):
        data.mentions.append(mention("acme", f"q{i}", PREVIOUS + timedelta(hours=13 * i), labels[i % 4]))
    data.mentions.append(mention("acme", "last-before", PERIOD - timedelta(microseconds=1), "positive"))
    data.mentions.append(mention("acme", "first-after", PERIOD_END, "positive"))  # the next period's
    for i in range(10):
        data.mentions.append(mention("globex", f"g{i}", PERIOD + timedelta(hours=7 * i), "neutral"))
    data.alerts += [
        alert("al-1", PERIOD + timedelta(days=1, hours=3), "warning"),
        alert("al-2", PERIOD + timedelta(days=4, hours=9), "critical", "negative_surge"),
        alert("al-3", PERIOD + timedelta(days=6, hours=23), "info", "influencer"),
        alert("al-before", PERIOD - timedelta(hours=2), "warning"),
    ]
    return data


async def store(url: str, data: Data) -> None:
    await migrate(url)
    batch = Batch()
    for m in data.mentions:
        batch.add("mentions.scored", m.brand.encode(), dump(m))
    for a in data.alerts:
        batch.add("alerts", a.brand.encode(), dump(a))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await write_batch(conn, batch, KEEP_ALL, Partitions())


# ---------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@contextlib.contextmanager
def smtp_server(port: int | None = None) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(secret=SECRET).start()
    yield server
    server.stop()


def write_config(tmp_path: Path, receiver: WebhookReceiver, allow: bool = True) -> Path:
    path = tmp_path / "ecoute.yaml"
    allow_networks = '["127.0.0.0/8"]' if allow else "[]"
    path.write_text(
        f"""
brands:
  acme: {{query: acme, competitors: [globex]}}
  globex: {{query: globex}}
  initech: {{query: initech}}
fetch:
  allow_networks: {allow_networks}
webhooks:
  - {{url: "{receiver.url("/hook")}", format: json, secret: {SECRET}, brands: [acme]}}
  - {{url: "{receiver.url("/slack")}", format: slack, brands: [acme, initech]}}
  - {{url: "{receiver.url("/globex")}", format: json, brands: [globex]}}
digest:
  to: [cm@example.org, lead@example.org]
  brands: [acme, initech]
""",
        encoding="utf-8",
    )
    return path


def settings(url: str, config: Path, smtp_port: int | None, **extra: Any) -> StoreSettings:
    values: dict[str, Any] = {
        "database_url": url,
        "config": config,
        "smtp_host": "127.0.0.1" if smtp_port else None,
        "smtp_port": smtp_port or 25,
        "smtp_from": "ecoute@example.org",
        "public_url": "https://ecoute.example.org/",
        "digest_check_every": 0.05,
        "digest_timeout": 5,
        **extra,
    }
    return StoreSettings(**values)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler(
    config_settings: StoreSettings, clock: Callable[[], datetime]
) -> tuple[DigestScheduler, CollectorRegistry]:
    registry = CollectorRegistry()
    made = DigestScheduler(
        config_settings, load_config(config_settings.config), StoreMetrics.build(registry), clock=clock
    )
    return made, registry


def sent(registry: CollectorRegistry, channel: str, outcome: str) -> float:
    return registry.get_sample_value("ecoute_store_digests_total", {"channel": channel, "outcome": outcome}) or 0.0


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn


def records(url: str) -> dict[tuple[str, datetime], DigestRecord]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT brand, period_start, doc FROM digests").fetchall()
    return {(brand, start): DigestRecord.model_validate(doc) for brand, start, doc in found}


@contextlib.asynccontextmanager
async def running(made: DigestScheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(made.run())
    try:
        yield task
    finally:
        made.stop()
        await asyncio.wait_for(task, 30)


# ---------------------------------------------------------------------------------------------- tests


def test_due_periods() -> None:
    monday_8 = datetime(2026, 3, 9, 8, tzinfo=UTC)
    week = due_period(monday_8, "week")
    assert week is not None and (week.start, week.end) == (PERIOD, PERIOD_END)
    # A minute earlier the week just ended is not due: the week before is the most recent due one.
    early = due_period(monday_8 - timedelta(minutes=1), "week")
    assert early is not None and (early.start, early.end) == (PREVIOUS, PERIOD)
    # Sent on Wednesdays at 06:00: the week of 2–9 March is due on Wednesday 11 March 06:00.
    wednesday = due_period(datetime(2026, 3, 11, 6, tzinfo=UTC), "week", "wednesday", 6)
    assert wednesday is not None and wednesday.start == PERIOD
    before = due_period(datetime(2026, 3, 11, 5, 59, tzinfo=UTC), "week", "wednesday", 6)
    assert before is not None and before.start == PREVIOUS
    day = due_period(datetime(2026, 3, 5, 8, 30, tzinfo=UTC), "day")
    assert day is not None and (day.start, day.end) == (
        datetime(2026, 3, 4, tzinfo=UTC),
        datetime(2026, 3, 5, tzinfo=UTC),
    )
    not_yet = due_period(datetime(2026, 3, 5, 7, 59, tzinfo=UTC), "day")
    assert not_yet is not None and not_yet.start == datetime(2026, 3, 3, tzinfo=UTC)
    assert due_period(monday_8, "off") is None


def test_retries_double_then_give_up() -> None:
    now = DUE
    channel = ChannelState(kind="email", target="cm@example.org", next_attempt_at=now)
    failed = Outcome(False, error="connection refused")
    first = after_attempt(channel, failed, now, max_attempts=3, backoff=60)
    assert (first.status, first.attempts, first.next_attempt_at) == ("pending", 1, now + timedelta(seconds=60))
    second = after_attempt(first, failed, now, max_attempts=3, backoff=60)
    assert (second.status, second.next_attempt_at) == ("pending", now + timedelta(seconds=120))
    third = after_attempt(second, failed, now, max_attempts=3, backoff=60)
    assert (third.status, third.attempts, third.next_attempt_at) == ("failed", 3, None)
    refused = after_attempt(channel, Outcome(False, error="550 no such user", permanent=True), now, 3, 60)
    assert (refused.status, refused.attempts) == ("failed", 1)
    done = after_attempt(first, Outcome(True, status_code=200), now, 3, 60)
    assert (done.status, done.delivered_at, done.attempts) == ("delivered", now, 2)


async def test_a_due_digest_goes_once_to_every_channel_with_the_right_numbers(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    data = history()
    await store(database_url, data)
    config = write_config(tmp_path, receiver)
    with smtp_server() as (inbox, port):
        # Two store instances at once: one sends, the other stands by.
        first, first_metrics = scheduler(settings(database_url, config, port), Clock(DUE))
        second, second_metrics = scheduler(settings(database_url, config, port), Clock(DUE))
        async with running(first), running(second):

            async def delivered() -> bool:
                return len(receiver.received) >= 2 and len(inbox.messages) >= 1

            await async_wait_until(delivered, 30, what="the digest on both webhooks and by e-mail")

            async def a_few_more_rounds() -> bool:
                return first.rounds + second.rounds >= 5

            await async_wait_until(a_few_more_rounds, 30, what="more scheduler rounds")
        assert not (first.rounds and second.rounds), "both instances sent digests"

        # --- what the webhooks got: once each, the JSON one signed
        by_path = {r.path: r for r in receiver.received}
        assert sorted(r.path for r in receiver.received) == ["/hook", "/slack"]  # globex has no digest
        hook = by_path["/hook"]
        assert hook.signed_ok is True
        assert hook.headers["x-ecoute-event"] == "digest"
        digest_id = "acme|2026-03-02T00:00:00Z"
        assert hook.delivery.startswith(f"{digest_id}|wh-")
        body = hook.json
        assert (body["schema"], body["id"], body["brand"], body["every"]) == ("digest/1", digest_id, "acme", "week")
        assert body["period"] == {"start": "2026-03-02T00:00:00Z", "end": "2026-03-09T00:00:00Z"}

        # --- the numbers, recounted from what was written
        current, previous = data.acme_in(PERIOD, PERIOD_END), data.acme_in(PREVIOUS, PERIOD)
        assert (len(current), len(previous)) == (31, 13)
        figures = {f["name"]: f for f in body["figures"]}
        assert (figures["mentions"]["current"], figures["mentions"]["previous"]) == (31, 13)
        assert figures["mentions"]["change_pct"] == round((31 - 13) / 13 * 100, 2)
        positive = sum(m.sentiment.label == "positive" for m in current)
        negative = sum(m.sentiment.label == "negative" for m in current)
        assert figures["positive_share"]["current"] == round(positive / (positive + negative), 4)
        engagement = sum(m.engagement.likes + m.engagement.shares + m.engagement.comments for m in current)
        assert figures["engagement"]["current"] == engagement
        assert figures["unique_authors"]["current"] == len({m.author.id for m in current})
        assert figures["reach"]["current"] == 100 * 31
        assert figures["share_of_voice"]["current"] == round(31 / (31 + 10), 4)
        top = sorted(
            current,
            key=lambda m: (
                -(m.engagement.likes + m.engagement.shares + m.engagement.comments),
                -m.published_at.timestamp(),
                m.id,
            ),
        )[:5]
        assert [m["id"] for m in body["top_mentions"]] == [m.id for m in top]
        assert body["top_mentions"][0]["author"] == "<b>eve</b>" and body["top_mentions"][0]["engagement"] == 500
        assert body["alerts_total"] == 3
        assert body["alerts_by_severity"] == {"critical": 1, "info": 1, "warning": 1}
        assert [a["id"] for a in body["alerts"]] == ["al-3", "al-2", "al-1"]  # newest first
        assert body["link"] == "https://ecoute.example.org/#history"

        slack = by_path["/slack"]
        assert slack.signed_ok is None  # no secret, no signature
        assert "acme" in slack.json["text"] and slack.json["blocks"][0]["type"] == "header"
        assert "javascript:" not in slack.body.decode()  # the unsafe URL is not made a link

        # --- the e-mail: one message to both recipients, text and HTML
        assert len(inbox.messages) == 1
        recipients, message = inbox.messages[0]
        assert sorted(recipients) == ["cm@example.org", "lead@example.org"]
        assert message["X-Ecoute-Digest"] == digest_id
        assert "acme" in message["Subject"] and "31 mentions" in message["Subject"]
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        assert text_part is not None and html_part is not None
        text, page = text_part.get_content(), html_part.get_content()
        mentions_line = next(line for line in text.splitlines() if line.startswith("Mentions:"))
        assert "31" in mentions_line and f"{(31 - 13) / 13 * 100:+.1f} %" in mentions_line
        assert "Alerts (3)" in text and "critical" in text
        assert all(m.id in text or m.text[:40] in text for m in top[1:])
        assert "<script>" not in page and "&lt;script&gt;" in page
        assert "javascript:" not in page  # the unsafe URL is not made a link
        assert "https://ecoute.example.org/#history" in page

        # --- what the table says, and what was counted
        kept = records(database_url)
        assert set(kept) == {("acme", PERIOD), ("initech", PERIOD)}
        acme = kept[("acme", PERIOD)]
        assert not acme.pending and {c.status for c in acme.channels.values()} == {"delivered"}
        assert len(acme.channels) == 3  # two webhooks and the e-mail
        assert kept[("initech", PERIOD)].skipped and not kept[("initech", PERIOD)].channels  # nothing to report
        counted = first_metrics if first.rounds else second_metrics
        assert sent(counted, "webhook", "delivered") == 2 and sent(counted, "email", "delivered") == 1

        # --- a restart sends nothing again
        again, again_metrics = scheduler(settings(database_url, config, port), Clock(DUE + timedelta(hours=3)))
        async with running(again):

            async def rounds() -> bool:
                return again.rounds >= 5

            await async_wait_until(rounds, 30, what="rounds of the restarted scheduler")
        assert len(receiver.received) == 2 and len(inbox.messages) == 1
        assert sent(again_metrics, "webhook", "delivered") == 0 and sent(again_metrics, "email", "delivered") == 0


async def test_a_period_not_due_is_not_made_and_only_the_latest_is_caught_up(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await store(database_url, history())
    clock = Clock(DUE - timedelta(seconds=1))
    made, _ = scheduler(settings(database_url, write_config(tmp_path, receiver), None), clock)
    try:
        async with connection(database_url) as conn:
            await made.tick(conn)
            # One second early: the week of 2 March is not made; the week before it (due a week ago) is.
            assert set(records(database_url)) == {("acme", PREVIOUS), ("initech", PREVIOUS)}
            assert {r.delivery.split("|")[1] for r in receiver.received} == {
                PREVIOUS.isoformat().replace("+00:00", "Z")
            }

            clock.now = DUE
            await made.tick(conn)
            assert ("acme", PERIOD) in records(database_url)
            assert len(receiver.received) == 4

            # Down for two weeks and back on a Wednesday: only the most recent due week is made.
            clock.now = DUE + timedelta(days=16)
            await made.tick(conn)
            kept = set(records(database_url))
            assert ("acme", PERIOD_END + timedelta(days=7)) in kept
            assert ("acme", PERIOD_END) not in kept
    finally:
        await made.aclose()


async def test_a_webhook_outside_allow_networks_is_refused(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await store(database_url, history())
    clock = Clock(DUE)
    made, registry = scheduler(settings(database_url, write_config(tmp_path, receiver, allow=False), None), clock)
    try:
        async with connection(database_url) as conn:
            await made.tick(conn)
            clock.now = DUE + timedelta(days=1)
            await made.tick(conn)  # refused for good: not tried again
    finally:
        await made.aclose()
    assert receiver.received == []
    acme = records(database_url)[("acme", PERIOD)]
    assert {c.status for c in acme.channels.values()} == {"failed"}
    assert all(c.attempts == 1 and "refused" in (c.last_error or "") for c in acme.channels.values())
    assert sent(registry, "webhook", "failed") == 2 and sent(registry, "webhook", "retry") == 0


async def test_smtp_down_is_retried_counted_and_then_delivered(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await store(database_url, history())
    port = free_port()  # nothing listens there yet
    clock = Clock(DUE)
    made, registry = scheduler(
        settings(database_url, write_config(tmp_path, receiver), port, digest_attempts=4, digest_backoff=60), clock
    )
    try:
        async with connection(database_url) as conn:
            await made.tick(conn)
            email_state = records(database_url)[("acme", PERIOD)].channels["email"]
            assert (email_state.status, email_state.attempts) == ("pending", 1)
            assert email_state.next_attempt_at == DUE + timedelta(seconds=60)
            assert sent(registry, "email", "retry") == 1 and sent(registry, "webhook", "delivered") == 2

            await made.tick(conn)  # not due again yet
            assert sent(registry, "email", "retry") == 1

            clock.now = DUE + timedelta(seconds=61)
            await made.tick(conn)
            assert sent(registry, "email", "retry") == 2

            with smtp_server(port) as (inbox, _):
                clock.now = DUE + timedelta(seconds=61 + 121)
                await made.tick(conn)
                assert len(inbox.messages) == 1
            acme = records(database_url)[("acme", PERIOD)]
            assert (acme.channels["email"].status, acme.channels["email"].attempts) == ("delivered", 3)
            assert not acme.pending
            assert sent(registry, "email", "delivered") == 1
            assert sent(registry, "webhook", "delivered") == 2  # the webhooks were not sent again
            assert len(receiver.received) == 2
    finally:
        await made.aclose()


async def test_smtp_that_stays_down_is_given_up_and_the_scheduler_keeps_running(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await store(database_url, history())
    started = time.monotonic()

    def fast_clock() -> datetime:  # one real second is ten minutes
        return DUE + timedelta(seconds=(time.monotonic() - started) * 600)

    made, registry = scheduler(
        settings(database_url, write_config(tmp_path, receiver), free_port(), digest_attempts=3, digest_backoff=60),
        fast_clock,
    )
    async with running(made) as task:

        async def given_up() -> bool:
            return sent(registry, "email", "failed") == 1

        await async_wait_until(given_up, 30, what="the e-mail given up on")
        rounds = made.rounds

        async def still_running() -> bool:
            return made.rounds >= rounds + 3

        await async_wait_until(still_running, 30, what="rounds after giving up")
        assert not task.done()
    assert sent(registry, "email", "retry") == 2 and sent(registry, "email", "failed") == 1
    assert sent(registry, "webhook", "delivered") == 2
    email_state = records(database_url)[("acme", PERIOD)].channels["email"]
    assert (email_state.status, email_state.attempts) == ("failed", 3)
    assert "Connection" in (email_state.last_error or "") or "refused" in (email_state.last_error or "")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ECOUTE_")}
    return subprocess.run(
        [sys.executable, "-m", "ecoute.cli", "store", "digest", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def test_the_cli_prints_or_sends_one_digest_now(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await store(database_url, history())
    env = {"ECOUTE_DATABASE_URL": database_url, "ECOUTE_CONFIG": str(write_config(tmp_path, receiver))}
    period = ["--since", "2026-03-02", "--until", "2026-03-09T00:00:00Z"]

    printed = await asyncio.to_thread(run_cli, ["--brand", "acme", *period, "--dry-run"], env)
    assert printed.returncode == 0, printed.stderr
    mentions_line = next(line for line in printed.stdout.splitlines() if line.startswith("Mentions:"))
    assert "31" in mentions_line and "Alerts (3)" in printed.stdout
    as_json = await asyncio.to_thread(run_cli, ["--brand", "acme", *period, "--dry-run", "--json"], env)
    assert as_json.returncode == 0, as_json.stderr
    assert '"schema":"digest/1"' in as_json.stdout and '"every":"period"' in as_json.stdout
    assert receiver.received == []

    sent_now = await asyncio.to_thread(run_cli, ["--brand", "acme", *period], env)
    assert sent_now.returncode == 0, sent_now.stdout + sent_now.stderr
    assert sorted(r.path for r in receiver.received) == ["/hook", "/slack"]
    assert all("|manual-" in r.delivery for r in receiver.received)
    assert records(database_url) == {}  # a manual send is not the scheduled one

    unknown = await asyncio.to_thread(run_cli, ["--brand", "nope"], env)
    assert unknown.returncode == 2 and "no brand 'nope'" in unknown.stderr
    half = await asyncio.to_thread(run_cli, ["--brand", "acme", "--since", "2026-03-02"], env)
    assert half.returncode == 2 and "--since and --until go together" in half.stderr
    backwards = await asyncio.to_thread(
        run_cli, ["--brand", "acme", "--since", "2026-03-09", "--until", "2026-03-02"], env
    )
    assert backwards.returncode == 2 and "must be before" in backwards.stderr
