"""Wildcards and mention filters in brand queries."""

from __future__ import annotations

import pytest

from services.analyzer.matching import BrandMatcher, TermFinder
from services.analyzer.query import QueryError, parse_query


def brands(matcher: BrandMatcher, text: str, **facts: str) -> list[str]:
    return [m.brand for m in matcher.match(text, facts)]


def test_wildcard_suffix_matches_words_starting_with_it_only() -> None:
    finder = TermFinder(["acme*", "acme"])
    assert finder.find("Acmephone and ACMEPAY") == {"acme*"}
    assert finder.find("acme") == {"acme", "acme*"}
    assert finder.find("superacme") == set()


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"lang": "fr", "source": "reddit", "site": "reddit.com/r/france", "author": "jdoe"}, ["acme"]),
        ({"lang": "en", "source": "reddit", "site": "reddit.com/r/france", "author": "jdoe"}, []),
        ({"lang": "fr", "source": "rss", "site": "reddit.com/r/france", "author": "jdoe"}, []),
        ({"lang": "fr", "source": "reddit", "site": "old.reddit.com", "author": "jdoe"}, ["acme"]),
        ({"lang": "fr", "source": "reddit", "site": "notreddit.com", "author": "jdoe"}, []),
        ({"lang": "fr", "source": "reddit", "site": "reddit.com", "author": "spammer"}, []),
    ],
)
def test_filters_read_the_mention(facts: dict[str, str], expected: list[str]) -> None:
    matcher = BrandMatcher({"acme": "acme lang:fr source:reddit site:reddit.com NOT author:@spammer"})
    assert brands(matcher, "acme est super", **facts) == expected


@pytest.mark.parametrize(
    ("query", "position"),
    [("lang: acme", 5), ("a* OR acme", 0), ("ac*me", 0), ("lang:fr", 0), ("acme OR site:", 13)],
)
def test_bad_wildcards_and_filters_name_the_position(query: str, position: int) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(query)
    assert info.value.position == position
