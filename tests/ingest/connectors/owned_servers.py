"""Loopback servers for a brand's own channels, speaking the public APIs' documented shapes: a Mastodon instance's
account lookup and account statuses, a Bluesky AppView's getProfile and getAuthorFeed, and a blog feed with
slash:comments, thr:total and wfw:commentRss comment feeds."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import orjson

from tests.ingest.connectors.web import Reply, Seen, WebServer

JSON = {"Content-Type": "application/json; charset=utf-8"}


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ---------------------------------------------------------------------------------------------- Mastodon


class MastodonAccounts:
    """`GET /api/v1/accounts/lookup?acct=` and `GET /api/v1/accounts/:id/statuses` (limit, max_id,
    exclude_replies, exclude_reblogs; newest first) for the accounts added."""

    def __init__(self, web: WebServer) -> None:
        self.web = web
        self.host = f"{web.host}:{web.port}"
        self.accounts: dict[str, dict[str, Any]] = {}  # acct → account
        self.statuses: dict[str, list[dict[str, Any]]] = {}  # account id → statuses
        self.statuses_reply: Reply | None = None  # answer statuses requests with this instead (e.g. a 503)
        self._lock = threading.Lock()
        web.route("/api/v1/accounts/lookup", self.lookup)

    def add_account(self, acct: str, account_id: str, followers: int) -> dict[str, Any]:
        account = {
            "id": account_id,
            "username": acct,
            "acct": acct,
            "display_name": acct.title(),
            "url": f"http://{self.host}/@{acct}",
            "followers_count": followers,
            "following_count": 12,
            "statuses_count": 0,
        }
        self.accounts[acct] = account
        self.statuses[account_id] = []
        self.web.route(f"/api/v1/accounts/{account_id}/statuses", self.account_statuses)
        return account

    def post(
        self,
        acct: str,
        n: int,
        published: datetime,
        replies: int,
        reblogs: int,
        favourites: int,
        text: str = "Our new X2 is out",
        **extra: Any,
    ) -> dict[str, Any]:
        account = self.accounts[acct]
        status = {
            "id": str(111_000_000_000_000_000 + n),
            "created_at": _iso(published),
            "in_reply_to_id": None,
            "in_reply_to_account_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": "public",
            "language": "en",
            "uri": f"http://{self.host}/users/{acct}/statuses/{n}",
            "url": f"http://{self.host}/@{acct}/{111_000_000_000_000_000 + n}",
            "replies_count": replies,
            "reblogs_count": reblogs,
            "favourites_count": favourites,
            "content": f'<p>{text} <a href="https://acme.example/x2">acme.example/x2</a></p>',
            "reblog": None,
            "account": account,
            **extra,
        }
        with self._lock:
            self.statuses[account["id"]].append(status)
        return status

    def react(self, status: dict[str, Any], **counts: int) -> None:
        """Change a status's counts (replies_count=…, reblogs_count=…, favourites_count=…)."""
        with self._lock:
            status.update(counts)

    def lookup(self, seen: Seen) -> Reply:
        account = self.accounts.get(seen.query.get("acct", ""))
        if account is None:
            return Reply(404, b'{"error":"Record not found"}', JSON)
        return Reply(200, orjson.dumps(account), JSON)

    def account_statuses(self, seen: Seen) -> Reply:
        if self.statuses_reply is not None:
            return self.statuses_reply
        account_id = seen.path.split("/")[4]
        with self._lock:
            selected = sorted(self.statuses[account_id], key=lambda s: int(s["id"]), reverse=True)
        if seen.query.get("exclude_replies") == "true":
            selected = [s for s in selected if s["in_reply_to_id"] is None]
        if seen.query.get("exclude_reblogs") == "true":
            selected = [s for s in selected if s["reblog"] is None]
        if "max_id" in seen.query:
            selected = [s for s in selected if int(s["id"]) < int(seen.query["max_id"])]
        limit = min(int(seen.query.get("limit", "20")), 40)
        return Reply(200, orjson.dumps(selected[:limit]), JSON)


# ---------------------------------------------------------------------------------------------- Bluesky


class BlueskyAppView:
    """`app.bsky.actor.getProfile` and `app.bsky.feed.getAuthorFeed` (actor, limit, cursor, filter) of an AppView."""

    def __init__(self, web: WebServer) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}  # did → profile
        self.feeds: dict[str, list[dict[str, Any]]] = {}  # did → feed entries, newest first
        self.feed_reply: Reply | None = None
        self._lock = threading.Lock()
        web.route("/xrpc/app.bsky.actor.getProfile", self.get_profile)
        web.route("/xrpc/app.bsky.feed.getAuthorFeed", self.get_author_feed)

    def add_profile(self, did: str, handle: str, followers: int) -> dict[str, Any]:
        profile = {
            "did": did,
            "handle": handle,
            "displayName": handle.split(".")[0].title(),
            "followersCount": followers,
            "followsCount": 3,
            "postsCount": 0,
            "indexedAt": "2025-01-01T00:00:00.000Z",
        }
        self.profiles[did] = profile
        self.feeds[did] = []
        return profile

    def _actor(self, did: str) -> dict[str, Any]:
        profile = self.profiles[did]
        return {"did": did, "handle": profile["handle"], "displayName": profile["displayName"]}

    def post(
        self, did: str, rkey: str, published: datetime, replies: int, reposts: int, likes: int, text: str = "Hello"
    ) -> dict[str, Any]:
        post = {
            "uri": f"at://{did}/app.bsky.feed.post/{rkey}",
            "cid": f"bafyreib{rkey}",
            "author": self._actor(did),
            "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": _iso(published), "langs": ["en"]},
            "replyCount": replies,
            "repostCount": reposts,
            "likeCount": likes,
            "quoteCount": 0,
            "indexedAt": _iso(published + timedelta(seconds=1)),
            "labels": [],
        }
        with self._lock:
            self.feeds[did].insert(0, {"post": post})
        return post

    def repost_of_other(self, did: str, other_did: str, rkey: str, at: datetime) -> None:
        """The account reposted someone else's post: the feed shows it with a reasonRepost."""
        other = {"did": other_did, "handle": "someone.bsky.social", "displayName": "Someone"}
        post = {
            "uri": f"at://{other_did}/app.bsky.feed.post/{rkey}",
            "cid": f"bafyreio{rkey}",
            "author": other,
            "record": {"$type": "app.bsky.feed.post", "text": "not ours", "createdAt": _iso(at)},
            "replyCount": 50,
            "repostCount": 50,
            "likeCount": 500,
            "indexedAt": _iso(at),
        }
        reason = {"$type": "app.bsky.feed.defs#reasonRepost", "by": self._actor(did), "indexedAt": _iso(at)}
        with self._lock:
            self.feeds[did].insert(0, {"post": post, "reason": reason})

    def reply_post(self, did: str, rkey: str, at: datetime) -> None:
        """A reply by the account (left out by filter=posts_no_replies)."""
        post = self.post(did, rkey, at, 0, 0, 99, text="thanks!")
        post["record"]["reply"] = {"root": {"uri": "at://did:plc:x/app.bsky.feed.post/1", "cid": "c"}}

    def react(self, post: dict[str, Any], **counts: int) -> None:
        with self._lock:
            post.update(counts)

    def get_profile(self, seen: Seen) -> Reply:
        actor = seen.query.get("actor", "")
        profile = self.profiles.get(actor) or next((p for p in self.profiles.values() if p["handle"] == actor), None)
        if profile is None:
            return Reply(400, b'{"error":"InvalidRequest","message":"Profile not found"}', JSON)
        return Reply(200, orjson.dumps(profile), JSON)

    def get_author_feed(self, seen: Seen) -> Reply:
        if self.feed_reply is not None:
            return self.feed_reply
        did = seen.query.get("actor", "")
        if did not in self.feeds:
            return Reply(400, b'{"error":"InvalidRequest","message":"Profile not found"}', JSON)
        with self._lock:
            feed = list(self.feeds[did])
        if seen.query.get("filter") == "posts_no_replies":
            feed = [e for e in feed if "reply" not in e["post"]["record"]]
        start = int(seen.query.get("cursor", "0"))
        limit = min(int(seen.query.get("limit", "50")), 100)
        page = feed[start : start + limit]
        body: dict[str, Any] = {"feed": page}
        if start + limit < len(feed):
            body["cursor"] = str(start + limit)
        return Reply(200, orjson.dumps(body), JSON)


# ---------------------------------------------------------------------------------------------- blog feed


def blog_feed(web: WebServer, posts: list[dict[str, Any]]) -> str:
    """Serve an RSS 2.0 feed of `posts` ({n, title, published, slash?, thr?, comments_feed?: [comment titles]})
    at /feed, with each post's comment feed at /comments/<n>; returns the feed URL."""
    items = []
    for post in posts:
        n = post["n"]
        extra = ""
        if "slash" in post:
            extra += f"<slash:comments>{post['slash']}</slash:comments>"
        if "thr" in post:
            extra += f"<thr:total>{post['thr']}</thr:total>"
        if "comments_feed" in post:
            extra += f"<wfw:commentRss>{web.url(f'/comments/{n}')}</wfw:commentRss>"
            comments = "".join(
                f'<item><title>{title}</title><guid isPermaLink="false">c-{n}-{i}</guid></item>'
                for i, title in enumerate(post["comments_feed"])
            )
            web.route(
                f"/comments/{n}",
                Reply(
                    200,
                    f'<?xml version="1.0"?><rss version="2.0"><channel><title>Comments on {n}</title>'
                    f"{comments}</channel></rss>".encode(),
                    {"Content-Type": "application/rss+xml"},
                ),
            )
        published = post["published"].strftime("%a, %d %b %Y %H:%M:%S +0000")
        items.append(
            f"<item><title>{post['title']}</title><link>https://blog.acme.example/{n}</link>"
            f"<guid>https://blog.acme.example/{n}</guid><pubDate>{published}</pubDate>"
            f"<description>&lt;p&gt;All about {post['title']}&lt;/p&gt;</description>{extra}</item>"
        )
    feed = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:slash="http://purl.org/rss/1.0/modules/slash/"'
        ' xmlns:wfw="http://wellformedweb.org/CommentAPI/" xmlns:thr="http://purl.org/syndication/thread/1.0">'
        f"<channel><title>Acme blog</title><link>https://blog.acme.example/</link>{''.join(items)}</channel></rss>"
    )
    web.route("/feed", Reply(200, feed.encode(), {"Content-Type": "application/rss+xml; charset=utf-8"}))
    return web.url("/feed")
