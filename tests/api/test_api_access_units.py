"""Pure parts of access, actions and webhooks: keys, rate limit, questions, inbox, response time, acks,
signatures, Slack bodies, retry states and the address policy."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from schemas import AlertAck, ConfigError, EcouteConfig, MentionHandled, WebhookConfig, load_config
from schemas.config import ApiKey
from services.api.actions import (
    AckRemoved,
    HandledRemoved,
    MalformedAction,
    ack_key,
    encode_action,
    handled_key,
    parse_action,
)
from services.api.auth import KeyRing, RateLimiter, bearer_token
from services.api.views import Views, is_question
from services.api.webhooks import (
    DeliveryLog,
    Outcome,
    RetryPolicy,
    address_refusal,
    after_attempt,
    backoff_delay,
    check_webhooks,
    ip_literal,
    new_delivery,
    render_body,
    sign,
    slack_payload,
    verify_signature,
)
from tests.api.api_factories import MINUTE, alert, scored

NOW = datetime(2025, 3, 14, 12, 34, 56, tzinfo=UTC)


# -- keys and rate limit -------------------------------------------------------------------------------


def test_keyring_finds_the_key_role_and_brands_and_refuses_others() -> None:
    ring = KeyRing([ApiKey(key="adm", role="admin"), ApiKey(key="r-acme", role="read", brands=["acme"])])
    admin, reader = ring.authenticate("adm"), ring.authenticate("r-acme")
    assert admin is not None and admin.is_admin and admin.brands is None and admin.can_see("anything")
    assert reader is not None and not reader.is_admin and reader.brands == frozenset({"acme"})
    assert reader.visible(["acme", "globex"]) == ["acme"]
    assert ring.authenticate("adm ") is None and ring.authenticate("") is None and ring.authenticate("r-acm") is None
    assert "adm" not in admin.key_id and admin.key_id != reader.key_id  # a fingerprint, never the key
    assert not KeyRing([]).enabled
    with pytest.raises(ConfigError, match="twice"):
        KeyRing([ApiKey(key="k"), ApiKey(key="k", role="admin")])
    with pytest.raises(ConfigError, match="brands is empty"):
        KeyRing([ApiKey(key="k", brands=[])])


def test_bearer_token_is_read_as_httpbearer_reads_it() -> None:
    assert bearer_token("Bearer k-1") == "k-1"
    assert bearer_token("bearer   k-1  ") == "k-1"  # the scheme in any case, blanks around the key ignored
    assert bearer_token("Basic a2V5") is None
    assert bearer_token("Bearer") is None and bearer_token("Bearer ") is None
    assert bearer_token("") is None and bearer_token(None) is None


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.acquire("b") == 0.0  # each key has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    now[0] += 60  # refills up to the burst, not beyond
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0
    assert RateLimiter(rate=0, burst=1).acquire("a") == 0.0  # 0 turns it off


# -- questions, inbox, response time, acks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("Is acme open on Sundays?", None, True),
        ("does anyone know if acme ships to Canada", "en", True),
        ("@acme how do I reset my phone", "en", True),
        ("Why is my acme battery so bad", None, True),
        ("Do not buy acme, ever.", "en", False),
        ("Can't believe how good acme is", "en", False),
        ("I love acme", "en", False),
        ("Pourquoi acme ne répond pas", "fr", True),
        ("Avez-vous des nouvelles de la commande", "fr", True),
        ("Est-ce que le magasin acme est ouvert", "fr", True),
        ("Y a-t-il un SAV chez acme", "fr", True),
        ("Quel est le prix du nouveau acme", None, True),
        ("J'adore acme", "fr", False),
        ("Comment: acme is great", "en", False),  # French question words are not looked for in English text
        ("", None, False),
    ],
)
def test_questions_are_found_with_or_without_a_question_mark(text: str, lang: str | None, expected: bool) -> None:
    assert is_question(text, lang) is expected


def test_inbox_holds_negative_ones_and_questions_by_reach_then_recency_until_handled() -> None:
    views = Views(mentions_per_brand=2)  # the inbox keeps its own, larger list
    m0 = NOW.replace(second=0)
    views.apply_scored(scored("acme", "happy", m0, label="positive"), NOW)
    views.apply_scored(scored("acme", "angry", m0 - 5 * MINUTE, label="negative", reach=10), NOW)
    views.apply_scored(scored("acme", "asks", m0 - MINUTE, text="Is acme open today?", reach=500), NOW)
    views.apply_scored(scored("acme", "asks-late", m0, text="how do I reach acme support", reach=10), NOW)
    views.apply_scored(scored("acme", "angry-q", m0 - 9 * MINUTE, label="negative", text="why acme?", reach=500), NOW)
    views.apply_scored(scored("globex", "other", m0, label="negative"), NOW)
    for i in range(5):  # chatter pushes them out of the recent list, not out of the inbox
        views.apply_scored(scored("acme", f"chat{i}", m0 + i * MINUTE), NOW)
    inbox = views.inbox("acme", limit=10, now=NOW)
    assert [item.id for item in inbox.items] == ["asks", "angry-q", "asks-late", "angry"]
    assert inbox.pending == 4
    assert inbox.items[1].reasons == ["negative", "question"] and inbox.items[0].reasons == ["question"]
    assert [item.id for item in views.inbox("acme", limit=2, now=NOW).items] == ["asks", "angry-q"]

    views.apply_action(MentionHandled(mention_id="asks", brand="acme", at=NOW, published_at=m0 - MINUTE))
    assert [item.id for item in views.inbox("acme", now=NOW).items] == ["angry-q", "asks-late", "angry"]
    views.apply_action(HandledRemoved("acme", "asks"))  # a tombstone brings it back
    assert views.inbox("acme", now=NOW).pending == 4
    # Re-scored so that it no longer needs an answer: it leaves the inbox.
    views.apply_scored(scored("acme", "angry", m0 - 5 * MINUTE, label="neutral", reach=10), NOW)
    assert "angry" not in [item.id for item in views.inbox("acme", now=NOW).items]


def test_response_time_is_median_and_p90_of_the_last_24_hours() -> None:
    views = Views()
    for i, minutes in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 600]):
        views.apply_action(
            MentionHandled(
                mention_id=f"m{i}",
                brand="acme",
                at=NOW - timedelta(hours=1),
                published_at=NOW - timedelta(hours=1, minutes=minutes),
            )
        )
    views.apply_action(  # handled 25 h ago: out of the window
        MentionHandled(
            mention_id="old", brand="acme", at=NOW - timedelta(hours=25), published_at=NOW - timedelta(days=2)
        )
    )
    views.apply_action(MentionHandled(mention_id="x", brand="globex", at=NOW, published_at=NOW - timedelta(hours=9)))
    rt = views.response_time("acme", NOW)
    assert rt.count == 10
    assert rt.median_seconds == pytest.approx(55 * 60)
    assert rt.p90_seconds == pytest.approx(90 * 60)  # nearest rank: the 9th of 10
    empty = views.response_time("initech", NOW)
    assert (empty.count, empty.median_seconds, empty.p90_seconds) == (0, None, None)


def test_acks_apply_in_any_order_and_tombstones_remove_them() -> None:
    views = Views()
    ack = AlertAck(alert_id="a1", brand="acme", by="jane", note="on it", at=NOW)
    assert views.apply_action(ack)  # the ack was read before its alert (another topic)
    assert not views.apply_action(ack)  # replayed: no change
    views.apply_alert(alert("acme", "a1", NOW - MINUTE))
    shown = views.alert_view(views.alerts()[0])
    assert (shown.acked, shown.acked_at, shown.acked_by, shown.ack_note) == (True, NOW, "jane", "on it")
    assert views.apply_action(AckRemoved("a1"))
    assert views.alert_view(views.alerts()[0]).acked is False


def test_action_records_round_trip_through_their_keys() -> None:
    ack = AlertAck(alert_id="a:1", brand="acme", at=NOW)
    assert ack_key("a:1") == b"alert:a:1"
    assert parse_action(ack_key("a:1"), encode_action(ack)) == ack
    handled = MentionHandled(mention_id="reddit:t1_x", brand="acme", by="jo", at=NOW, published_at=NOW)
    assert handled_key("acme", "reddit:t1_x") == b"mention:acme:reddit:t1_x"
    assert parse_action(handled_key("acme", "reddit:t1_x"), encode_action(handled)) == handled
    assert orjson.loads(encode_action(handled))["schema"] == "mention-handled/1"
    assert parse_action(b"alert:a1", None) == AckRemoved("a1")
    assert parse_action(b"mention:acme:m1", None) == HandledRemoved("acme", "m1")
    with pytest.raises(MalformedAction, match="another alert"):
        parse_action(b"alert:zzz", encode_action(ack))
    with pytest.raises(MalformedAction, match="neither"):
        parse_action(b"what:ever", b"{}")


# -- webhooks ------------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"id":"a1"}'
    header = sign("s3cret", 1_700_000_000, body)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature("s3cret", header, body, now=1_700_000_010)
    assert not verify_signature("other", header, body, now=1_700_000_010)
    assert not verify_signature("s3cret", header, body + b" ", now=1_700_000_010)
    assert not verify_signature("s3cret", header, body, now=1_700_001_000)  # too old: a replay


def test_slack_body_has_text_and_blocks() -> None:
    item = alert(
        "acme",
        "a1",
        NOW,
        kind="negative_surge",
        message="acme: <b>40%</b> negative",
        evidence={"terms": ["recall"], "sample_mentions": ["https://example.org/1", "javascript:alert(1)"]},
    )
    payload = slack_payload(item)
    assert "acme" in payload["text"] and payload["blocks"][0]["type"] == "header"
    section = payload["blocks"][1]["text"]["text"]
    assert "&lt;b&gt;" in section  # Slack mrkdwn escaped
    rendered = orjson.dumps(payload).decode()
    assert "https://example.org/1" in rendered and "javascript:" not in rendered
    assert orjson.loads(render_body(item, "json"))["id"] == "a1"  # json: alert/1 itself


def test_retry_states_back_off_and_give_up() -> None:
    policy = RetryPolicy(max_attempts=4, max_age=timedelta(hours=24), backoff=10.0, backoff_max=25.0)
    rng = random.Random(7)
    delays = [backoff_delay(n, policy, rng) for n in (1, 2, 3, 4)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and all(12.5 <= d <= 25 for d in delays[2:])
    hook = WebhookConfig(url="https://hooks.example/x", secret="s")
    delivery = new_delivery(alert("acme", "a1", NOW), hook, 0, NOW)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 0, NOW)
    failed_once = after_attempt(delivery, Outcome(False, 500, "HTTP 500"), NOW, policy, rng)
    assert failed_once.status == "pending" and failed_once.attempts == 1
    assert failed_once.next_attempt_at is not None and failed_once.next_attempt_at > NOW
    assert failed_once.alert is not None  # kept to retry after a restart
    later = after_attempt(failed_once, Outcome(False, 429, "HTTP 429", retry_after=20), NOW, policy, rng)
    assert later.next_attempt_at is not None and later.next_attempt_at >= NOW + timedelta(seconds=20)
    done = after_attempt(later, Outcome(True, 204), NOW, policy, rng)
    assert (done.status, done.attempts, done.delivered_at, done.next_attempt_at, done.alert) == (
        "delivered",
        3,
        NOW,
        None,
        None,
    )
    last = failed_once.model_copy(update={"attempts": 3})
    assert after_attempt(last, Outcome(False, 500), NOW, policy, rng).status == "failed"  # 4 attempts
    gone = after_attempt(delivery, Outcome(False, 410, permanent=True), NOW, policy, rng)
    assert gone.status == "failed" and gone.attempts == 1
    old = delivery.model_copy(update={"alert_created_at": NOW - timedelta(hours=23, minutes=59, seconds=55)})
    assert after_attempt(old, Outcome(False, 500), NOW, policy, rng).status == "failed"  # next try past 24 h


def test_delivery_log_keeps_the_latest_state_and_filters() -> None:
    log = DeliveryLog(capacity=2)
    hook = WebhookConfig(url="https://hooks.example/x")
    first = new_delivery(alert("acme", "a1", NOW), hook, 0, NOW)
    second = new_delivery(alert("globex", "a2", NOW), hook, 0, NOW)
    log.apply(first)
    log.apply(second)
    log.apply(first.model_copy(update={"status": "delivered"}))
    assert [(d.alert_id, d.status) for d in log.query()] == [("a1", "delivered"), ("a2", "pending")]
    assert [d.alert_id for d in log.query(visible=["globex"])] == ["a2"]
    assert [d.alert_id for d in log.query(status="delivered")] == ["a1"]
    log.apply(new_delivery(alert("acme", "a3", NOW), hook, 0, NOW))
    assert len(log) == 2 and log.get(second.id) is None  # the least recently updated went


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.216.34", None),
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv6-mapped IPv4
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("fd00::1", "private"),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_policy(address: str, refused: str | None) -> None:
    why = address_refusal(ipaddress.ip_address(address), ())
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_allow_networks_and_legacy_literals() -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), loopback) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), loopback) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), loopback) is not None
    assert ip_literal("2130706433") == ipaddress.ip_address("127.0.0.1")
    assert ip_literal("0x7f.1") == ipaddress.ip_address("127.0.0.1")
    assert ip_literal("hooks.example") is None


def hooks_of(*entries: dict[str, object]) -> list[WebhookConfig]:
    return EcouteConfig.model_validate({"webhooks": list(entries)}).webhooks


def test_webhook_config_is_checked_at_load(tmp_path: Path) -> None:
    hooks = check_webhooks(hooks_of({"url": "https://hooks.example/a", "format": "slack", "brands": ["acme"]}))
    assert hooks[0].matches("acme") and not hooks[0].matches("globex")
    assert hooks[0].target == "https://hooks.example/…"  # the path (a Slack secret) is never shown
    assert check_webhooks(hooks_of({"url": "https://hooks.example/b"}))[0].matches("anything")
    # Its shape is the shared config's: the file is refused naming the entry and the field.
    config = tmp_path / "ecoute.yaml"
    for entry, where, problem in (
        ('{url: "ftp://hooks.example/"}', "webhooks.0.url", "only http and https"),
        ('{url: "https://user:pw@hooks.example/"}', "webhooks.0.url", "credentials"),
        ('{url: "https://hooks.example/", format: xml}', "webhooks.0.format", "json"),
        ('{url: "https://hooks.example/", brands: []}', "webhooks.0.brands", "at least 1"),
        ('{url: "https://hooks.example/", sercet: x}', "webhooks.0.sercet", "not permitted"),
    ):
        config.write_text(f"webhooks:\n  - {entry}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=problem) as info:
            load_config(config)
        assert where in str(info.value) and str(config) in str(info.value)
    # The address policy is the API's: IP literals it refuses are refused at load, unless allowed.
    for url, problem in (("http://127.0.0.1:9/", "loopback"), ("http://[::ffff:10.0.0.1]/", "private")):
        with pytest.raises(ConfigError, match=f"webhooks\\[0\\]: .*{problem}"):
            check_webhooks(hooks_of({"url": url}))
    assert check_webhooks(hooks_of({"url": "http://127.0.0.1:9/"}), (ipaddress.ip_network("127.0.0.0/8"),))
