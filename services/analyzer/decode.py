"""mention/1 records decoded for stage 1: msgspec first, pydantic when msgspec says no.

pydantic (`schemas.Mention`) is the contract and the source of every error message, but it takes
~8 µs to validate a tweet-sized record and ~3 µs more to turn the model into a dict. msgspec checks
the same constraints on the JSON bytes into a struct in ~1 µs. The struct below mirrors `Mention`
field for field; msgspec is the stricter of the two (RFC 3339 timestamps only, no numeric ones), and
whatever it refuses goes through pydantic, which either accepts it (the same mention, its way) or
names the bad field. tests/analyzer/test_decode.py holds the two to the same answers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from schemas import Mention, load, utc_now
from schemas.models import MAX_LINKS, as_utc

_Short = Annotated[str, msgspec.Meta(max_length=2048)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Source = Literal["rss", "reddit", "mastodon", "bluesky", "hackernews", "webhook", "simulate", "replay"]


class _Author(msgspec.Struct):
    id: _Short | None = None
    handle: _Short | None = None
    name: _Short | None = None
    followers: _Count | None = None
    url: _Short | None = None


class _Engagement(msgspec.Struct):
    likes: _Count = 0
    shares: _Count = 0
    comments: _Count = 0
    views: _Count = 0


class _PostRef(msgspec.Struct):
    uri: _Short
    cid: _Short


class _ReplyRef(msgspec.Struct):
    root: _PostRef
    parent: _PostRef


class _Mention(msgspec.Struct):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    text: Annotated[str, msgspec.Meta(max_length=100_000)]
    schema: Literal["mention/1"] = "mention/1"
    source: _Source = "webhook"
    url: _Short | None = None
    site: _Short | None = None
    published_at: datetime = msgspec.field(default_factory=utc_now)
    fetched_at: datetime = msgspec.field(default_factory=utc_now)
    author: _Author = msgspec.field(default_factory=_Author)
    title: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    lang: Annotated[str, msgspec.Meta(pattern=r"\A[a-z]{2}\Z")] | None = None  # Python re: "$" would allow "en\n"
    thread_id: _Short | None = None
    parent_id: _Short | None = None
    engagement: _Engagement = msgspec.field(default_factory=_Engagement)
    query: _Short | None = None
    reply_ref: _ReplyRef | None = None
    links: Annotated[list[_Short], msgspec.Meta(max_length=MAX_LINKS)] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(_Mention)
# Seconds with more than 6 decimals: msgspec rounds them to the microsecond, pydantic truncates.
_SUB_MICROSECONDS = re.compile(rb":\d\d\.\d{7}")


def decode_mention(raw: bytes) -> dict[str, Any]:
    """A mention/1 record as `load(Mention, raw).model_dump(by_alias=True)` returns it, keys in order.

    Raises pydantic.ValidationError (naming the field) or ValueError for what pydantic refuses too.
    """
    try:
        if _SUB_MICROSECONDS.search(raw):
            raise msgspec.ValidationError("sub-microsecond timestamp")
        mention = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return load(Mention, raw).model_dump(by_alias=True)
    author, engagement = mention.author, mention.engagement
    return {
        "schema": mention.schema,
        "id": mention.id,
        "source": mention.source,
        "url": mention.url,
        "site": mention.site,
        "published_at": as_utc(mention.published_at),
        "fetched_at": as_utc(mention.fetched_at),
        "author": {
            "id": author.id,
            "handle": author.handle,
            "name": author.name,
            "followers": author.followers,
            "url": author.url,
        },
        "title": mention.title,
        "text": mention.text,
        "lang": mention.lang,
        "thread_id": mention.thread_id,
        "parent_id": mention.parent_id,
        "engagement": {
            "likes": engagement.likes,
            "shares": engagement.shares,
            "comments": engagement.comments,
            "views": engagement.views,
        },
        "query": mention.query,
        "reply_ref": None
        if (ref := mention.reply_ref) is None
        else {
            "root": {"uri": ref.root.uri, "cid": ref.root.cid},
            "parent": {"uri": ref.parent.uri, "cid": ref.parent.cid},
        },
        "links": mention.links,
    }
