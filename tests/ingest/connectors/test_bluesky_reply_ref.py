"""The Jetstream connector keeps what a reply to a post needs: the post's and its thread root's uri and cid."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import Mention
from services.ingest.connectors.bluesky import event_fields
from tests.ingest.connectors.social import post_event, rkey

NOW = datetime(2025, 3, 5, 10, 1, tzinfo=UTC)


def test_a_post_keeps_its_reply_ref() -> None:
    event = post_event(1, 1_741_168_800_000_000)
    m = Mention.model_validate(event_fields(event, event["commit"]["record"], "Acme", NOW).fields)
    own = {"uri": f"at://did:plc:alice/app.bsky.feed.post/{rkey(1)}", "cid": event["commit"]["cid"]}
    assert m.reply_ref is not None and m.reply_ref.model_dump() == {"root": own, "parent": own}


def test_a_reply_keeps_its_thread_root() -> None:
    root = {"uri": "at://did:plc:bob/app.bsky.feed.post/3kroot", "cid": "bafyreiroot"}
    parent = {"uri": "at://did:plc:carol/app.bsky.feed.post/3kparent", "cid": "bafyreiparent"}
    event = post_event(2, 1_741_168_800_000_000, reply={"root": root, "parent": parent})
    m = Mention.model_validate(event_fields(event, event["commit"]["record"], "Acme", NOW).fields)
    own = {"uri": f"at://did:plc:alice/app.bsky.feed.post/{rkey(2)}", "cid": event["commit"]["cid"]}
    # Replying to this post: the thread's root stays the root, this post is the parent.
    assert m.reply_ref is not None and m.reply_ref.model_dump() == {"root": root, "parent": own}


def test_without_a_cid_there_is_no_reply_ref() -> None:
    event = post_event(3, 1_741_168_800_000_000)
    del event["commit"]["cid"]
    m = Mention.model_validate(event_fields(event, event["commit"]["record"], "Acme", NOW).fields)
    assert m.reply_ref is None
    # A root without a cid: the post itself stands as the root.
    event = post_event(4, 1_741_168_800_000_000, reply={"root": {"uri": "at://did:plc:bob/app.bsky.feed.post/3k"}})
    m = Mention.model_validate(event_fields(event, event["commit"]["record"], "Acme", NOW).fields)
    assert m.reply_ref is not None and m.reply_ref.root == m.reply_ref.parent
