"""Inbound links: the links of a mention that point to a site the brand owns (`brands.<b>.owned_domains`).

A mention's links are the URLs its connector kept (`links`: HTML anchors, Bluesky link facets and cards, a
story's or a link post's URL) and the http(s):// and www. URLs written in its title and text, each URL once.
A link is inbound when its host is an owned domain or one of its subdomains (`www.acme.com`, `blog.acme.com` →
`acme.com`) and the mention itself is not on an owned site (the brand's own blog linking to itself is no
inbound link). The link counts for the most specific owned domain it falls under. Pure functions, shared by the
API's views and whoever else counts links.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.models import Mention

# URLs written in text: http(s)://… or www.…, up to a space, quote or bracket; trailing punctuation is not part of it.
_URL_IN_TEXT = re.compile(r"(?:https?://|(?<![\w.@/])www\.)[^\s<>\"'`()\[\]{}|\\^]+", re.IGNORECASE)
_TRAILING = ".,;:!?…»”’"
MAX_TEXT_LINKS = 100


@dataclass(frozen=True, slots=True)
class InboundLink:
    """One link of a mention to an owned domain."""

    url: str
    domain: str  # the owned domain it falls under (the most specific one configured)


def normalise_domain(value: str) -> str:
    """'https://WWW.Acme.com/' → 'acme.com': lowercased, without scheme, path, port, trailing dot or `www.`."""
    text = value.strip().lower()
    if "//" in text:
        text = urlsplit(text).hostname or ""
    text = text.split("/", 1)[0].split(":", 1)[0].rstrip(".")
    return text.removeprefix("www.")


def host_of(url: str) -> str | None:
    """The lowercased host of an http(s) URL (or a `www.` one written without scheme); None otherwise."""
    text = url.strip()
    if text.lower().startswith("www."):
        text = "http://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host.rstrip(".")


def owner_of(host: str, owned: Sequence[str]) -> str | None:
    """The most specific owned domain `host` is, or is a subdomain of; None when it is none of them."""
    best: str | None = None
    for domain in owned:
        if (host == domain or host.endswith("." + domain)) and (best is None or len(domain) > len(best)):
            best = domain
    return best


def urls_in_text(text: str | None) -> list[str]:
    """The http(s):// and www. URLs written in a text, in order (at most MAX_TEXT_LINKS)."""
    if not text:
        return []
    found = []
    for match in _URL_IN_TEXT.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        if host_of(url):
            found.append(url)
            if len(found) >= MAX_TEXT_LINKS:
                break
    return found


def mention_links(mention: Mention) -> list[str]:
    """Every URL the mention links to, each once: the connector's `links`, then those written in title and text."""
    urls: dict[str, None] = {}
    for url in [*mention.links, *urls_in_text(mention.title), *urls_in_text(mention.text)]:
        key = url.strip()
        if key and host_of(key):
            urls.setdefault(key, None)
    return list(urls)


def linking_site(mention: Mention) -> str:
    """Where the mention was published: its `site`, else its URL's host without `www.`, else 'unknown'."""
    if mention.site and mention.site.strip():
        return mention.site.strip().lower()
    host = host_of(mention.url) if mention.url else None
    return host.removeprefix("www.") if host else "unknown"


def inbound_links(mention: Mention, owned_domains: Iterable[str]) -> list[InboundLink]:
    """The mention's links to the owned domains (none when the mention is itself on an owned site)."""
    owned = [d for d in (normalise_domain(x) for x in owned_domains) if d]
    if not owned:
        return []
    site = linking_site(mention).split("/", 1)[0]
    own_host = host_of(mention.url) if mention.url else None
    if owner_of(site, owned) or (own_host and owner_of(own_host, owned)):
        return []
    links = []
    for url in mention_links(mention):
        host = host_of(url)
        domain = owner_of(host, owned) if host else None
        if domain:
            links.append(InboundLink(url, domain))
    return links


__all__ = [
    "InboundLink",
    "host_of",
    "inbound_links",
    "linking_site",
    "mention_links",
    "normalise_domain",
    "owner_of",
    "urls_in_text",
]
