"""Inbound links of a mention: links (kept by the connector or written in the text) to the brand's owned domains."""

from __future__ import annotations

from schemas import Mention
from schemas.config import EcouteConfig
from schemas.links import inbound_links, mention_links, normalise_domain, urls_in_text

OWNED = ["acme.com", "blog.acme.com"]


def mention(text: str, **fields: object) -> Mention:
    return Mention.model_validate({"id": "m1", "text": text, **fields})


def test_links_come_from_the_connector_and_from_the_text_each_once() -> None:
    m = mention(
        "Read https://acme.com/pricing. And www.acme.com/about, (https://example.org/x) — https://acme.com/pricing",
        title="New post https://blog.acme.com/launch!",
        links=["https://acme.com/pricing", "https://shop.acme.com/cart"],
    )
    assert mention_links(m) == [
        "https://acme.com/pricing",
        "https://shop.acme.com/cart",
        "https://blog.acme.com/launch",
        "www.acme.com/about",
        "https://example.org/x",
    ]


def test_inbound_links_count_subdomains_under_the_most_specific_owned_domain() -> None:
    m = mention(
        "see https://WWW.Acme.com/a and https://blog.acme.com/b https://notacme.com/c https://acme.com.evil.io/d",
        site="news.ycombinator.com",
        links=["https://docs.acme.com/e", "ftp://acme.com/f", "mailto:x@acme.com"],
    )
    got = [(link.url, link.domain) for link in inbound_links(m, OWNED)]
    assert got == [
        ("https://docs.acme.com/e", "acme.com"),
        ("https://WWW.Acme.com/a", "acme.com"),
        ("https://blog.acme.com/b", "blog.acme.com"),
    ]


def test_a_mention_on_an_owned_site_is_not_an_inbound_link() -> None:
    own_blog = mention("our post https://acme.com/x", url="https://blog.acme.com/post", site="blog.acme.com")
    assert inbound_links(own_blog, OWNED) == []
    from_site = mention("https://acme.com/x", site="www.acme.com")
    assert inbound_links(from_site, ["acme.com"]) == []
    assert inbound_links(mention("https://acme.com/x"), []) == []


def test_text_urls_lose_trailing_punctuation_and_emails_are_not_urls() -> None:
    assert urls_in_text("go to https://acme.com/a?b=1, then https://acme.com/c… mail me@www.acme.com") == [
        "https://acme.com/a?b=1",
        "https://acme.com/c",
    ]


def test_owned_domains_are_normalised_in_the_config() -> None:
    config = EcouteConfig.model_validate(
        {"brands": {"acme": {"query": "acme", "owned_domains": ["https://www.Acme.com/", "blog.acme.com", "acme.com"]}}}
    )
    assert config.brands["acme"].owned_domains == ["acme.com", "blog.acme.com"]
    assert normalise_domain("HTTPS://www.acme.com:443/x") == "acme.com"
