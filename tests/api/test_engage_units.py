"""The pure parts of replies and follows: record keys, the author's @mention, accounts, the outreach records and
the accounts config (whose secrets never show)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import EcouteConfig, dump
from schemas.config import ApiKey, MastodonAccount
from schemas.models import Outreach
from services.api.actions import OutreachRemoved, action_key, parse_action
from services.api.engage import OutreachLog, request_digest
from services.api.engage_clients import MastodonClient, post_url, record_key, split_acct
from services.store.rows import Batch

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def outreach(**extra: object) -> Outreach:
    fields: dict[str, object] = {
        "kind": "reply",
        "state": "sent",
        "request_id": "r1",
        "brand": "acme",
        "platform": "bluesky",
        "digest": request_digest(kind="reply", mention_id="m", text="hi"),
        "at": AT,
        "post_id": "at://did:plc:acme/app.bsky.feed.post/3k",
    }
    fields.update(extra)
    return Outreach.model_validate(fields)


def test_record_keys_are_tids_made_from_the_request_only() -> None:
    key = record_key("acme", "reply", "r1")
    assert re.fullmatch(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}", key)
    assert key == record_key("acme", "reply", "r1")  # every replica, every retry
    assert (
        len(
            {
                key,
                record_key("acme", "reply", "r2"),
                record_key("globex", "reply", "r1"),
                record_key("acme", "follow", "r1"),
            }
        )
        == 4
    )


def test_mastodon_replies_name_the_author_as_clients_do() -> None:
    client = MastodonClient(MastodonAccount(instance="https://home.example", token="t"), (), 5)
    assert client.reply_text("Thanks!", "jane@social.example") == "@jane@social.example Thanks!"
    assert client.reply_text("Thanks!", "jane@home.example") == "@jane Thanks!"  # same instance: short form
    assert client.reply_text("@Jane@social.example thanks", "jane@social.example") == "@Jane@social.example thanks"
    assert client.reply_text("@jane@social.examples hi", "jane@social.example").startswith("@jane@social.example ")
    assert client.reply_text("Thanks!", None) == "Thanks!"
    assert split_acct("mastodon:jane@Social.Example") == ("jane", "social.example")
    assert split_acct("@jane") == ("jane", None)
    with pytest.raises(ValueError, match="not a Mastodon account"):
        split_acct("jane@@x")
    assert post_url("at://did:plc:a/app.bsky.feed.post/3k") == "https://bsky.app/profile/did:plc:a/post/3k"


def test_outreach_records_round_trip_on_the_actions_topic() -> None:
    sent = outreach()
    assert action_key(sent) == b"reply:acme:r1"
    assert parse_action(b"reply:acme:r1", dump(sent)) == sent
    assert parse_action(b"follow:acme:r1", None) == OutreachRemoved("follow:acme:r1")
    with pytest.raises(ValueError, match="another request"):
        parse_action(b"reply:acme:r2", dump(sent))
    log = OutreachLog()
    log.apply_record("alerts.actions", b"reply:acme:r1", dump(sent), AT)
    log.apply_record("alerts.actions", b"alert:a1", b"{}", AT)  # the views' records are left alone
    assert log.get("reply", "acme", "r1") == sent and log.get("reply", "globex", "r1") is None
    log.apply_record("alerts.actions", b"reply:acme:r1", None, AT)
    assert log.get("reply", "acme", "r1") is None
    log.apply_record("alerts.actions", b"reply:acme:r1", dump(sent), AT)
    assert log.evict(AT + timedelta(days=6)) == 0 and log.get("reply", "acme", "r1") == sent
    assert log.evict(AT + timedelta(days=7, seconds=1)) == 1 and log.get("reply", "acme", "r1") is None
    # The history store keeps them with the acks and handled marks.
    batch = Batch()
    batch.add("alerts.actions", b"reply:acme:r1", dump(sent))
    assert batch.actions["reply:acme:r1"][:3] == ("acme", "reply", AT)


def test_accounts_config_keeps_its_secrets() -> None:
    config = EcouteConfig.model_validate(
        {
            "brands": {
                "acme": {
                    "query": "acme",
                    "accounts": {
                        "mastodon": {"instance": "https://mastodon.social/", "token": "tok-123"},
                        "bluesky": {"handle": "acme.bsky.social", "app_password": "pw-456"},
                    },
                }
            },
        }
    )
    accounts = config.brands["acme"].accounts
    assert accounts is not None and accounts.mastodon is not None and accounts.bluesky is not None
    assert accounts.mastodon.instance == "https://mastodon.social"
    assert accounts.bluesky.service == "https://bsky.social"
    assert accounts.mastodon.token.get_secret_value() == "tok-123"
    for shown in (repr(config), str(config), config.model_dump_json()):
        assert "tok-123" not in shown and "pw-456" not in shown
    with pytest.raises(ValidationError, match="instance"):
        MastodonAccount(instance="ftp://x", token="t")
    with pytest.raises(ValidationError, match="credentials in the URL"):
        MastodonAccount(instance="https://user:pw@x.example", token="t")
    assert ApiKey(key="k", role="responder").role == "responder"
