"""Stage 1's fast mention decoder gives pydantic's answer on every input: the same record, or a refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import Mention, load
from services.analyzer.decode import decode_mention

TIMESTAMPS = st.one_of(
    st.datetimes(timezones=st.sampled_from([None]) | st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-11-26T01:45:44Z",
            "2026-11-26T01:45:44.123456789Z",  # more than microseconds
            "2026-11-26t01:45:44z",
            "2026-11-26 01:45:44+01:00",
            "2026-11-26T01:45Z",
            "2026-11-26",
            "2026-02-30T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T01:45:44+25:00",
            "1700000000",
            "",
            "yesterday",
        ]
    ),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
SHORT = st.one_of(st.none(), st.text(max_size=8), st.text(min_size=2040, max_size=2060), st.integers(), st.booleans())
COUNT = st.one_of(
    st.integers(min_value=-3, max_value=2**40), st.floats(allow_nan=False), st.booleans(), st.text(max_size=3)
)


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


AUTHOR = st.one_of(
    _optional({"id": SHORT, "handle": SHORT, "name": SHORT, "followers": st.one_of(st.none(), COUNT), "url": SHORT}),
    st.none(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)
ENGAGEMENT = st.one_of(
    _optional({"likes": COUNT, "shares": COUNT, "comments": COUNT, "views": COUNT}), st.none(), st.integers()
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from(["mention/1", "mention/2", None, 1]),
        "id": st.one_of(st.text(max_size=10), st.text(min_size=510, max_size=515), st.integers(), st.none()),
        "source": st.sampled_from(["rss", "reddit", "mastodon", "simulate", "RSS", "twitter"]) | st.integers(),
        "url": SHORT,
        "site": SHORT,
        "published_at": TIMESTAMPS,
        "fetched_at": TIMESTAMPS,
        "author": AUTHOR,
        "title": st.one_of(st.none(), st.text(max_size=8), st.text(min_size=4090, max_size=4100), st.integers()),
        "text": st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.text(max_size=2), max_size=2)),
        "lang": st.one_of(st.sampled_from(["en", "fr", "EN", "eng", "e", "é€", ""]), st.none(), st.integers()),
        "thread_id": SHORT,
        "parent_id": SHORT,
        "engagement": ENGAGEMENT,
        "query": SHORT,
        "links": st.one_of(
            st.lists(SHORT, max_size=3),
            st.lists(st.just("https://acme.com/"), min_size=255, max_size=258),
            st.none(),
            st.text(max_size=3),
        ),
        "extra": st.integers(),
    },
)


GOOD_TIMESTAMPS = st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
GOOD_SHORT = st.none() | st.text(max_size=12)
GOOD_COUNT = st.integers(min_value=0, max_value=2**40)
VALID = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=12), "text": st.text(max_size=60)},
    optional={
        "schema": st.just("mention/1"),
        "source": st.sampled_from(["rss", "reddit", "mastodon", "bluesky", "hackernews", "webhook", "simulate"]),
        "url": GOOD_SHORT,
        "site": GOOD_SHORT,
        "published_at": GOOD_TIMESTAMPS,
        "fetched_at": GOOD_TIMESTAMPS,
        "author": _optional(
            {"id": GOOD_SHORT, "handle": GOOD_SHORT, "name": GOOD_SHORT, "followers": st.none() | GOOD_COUNT}
        ),
        "title": GOOD_SHORT,
        "lang": st.none() | st.sampled_from(["en", "fr", "de"]),
        "thread_id": GOOD_SHORT,
        "engagement": _optional({"likes": GOOD_COUNT, "shares": GOOD_COUNT, "comments": GOOD_COUNT}),
        "query": GOOD_SHORT,
        "links": st.lists(st.text(max_size=30), max_size=4),
    },
)


@st.composite
def one_field_off(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with one field (maybe) spoilt: the refusals that sit right next to acceptance."""
    record = draw(VALID)
    wide = draw(RECORDS)
    if wide:
        name = draw(st.sampled_from(sorted(wide)))
        record[name] = wide[name]
    return record


def pydantic_answer(raw: bytes) -> dict[str, Any] | None:
    try:
        return load(Mention, raw).model_dump(by_alias=True)
    except (ValidationError, ValueError):
        return None


def assert_same_answer(raw: bytes) -> None:
    expected = pydantic_answer(raw)
    if expected is None:
        with pytest.raises((ValidationError, ValueError)):
            decode_mention(raw)
        return
    got = decode_mention(raw)
    assert list(got) == list(expected)  # same keys, same order: the scored records are built from it
    document = json.loads(raw)
    for name in ("published_at", "fetched_at"):  # absent: both say "now", a few µs apart
        if name not in document:
            assert abs((got.pop(name) - expected.pop(name)).total_seconds()) < 5
    assert got == expected
    for name in ("published_at", "fetched_at"):
        if name in got:
            assert got[name].utcoffset() is not None and got[name].utcoffset().total_seconds() == 0


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(VALID, one_field_off(), RECORDS))
def test_same_answer_as_pydantic_on_generated_records(record: dict[str, Any]) -> None:
    assert_same_answer(json.dumps(record).encode())  # json: integers beyond 64 bits too


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"m1","text":"acme rocks","published_at":"2026-11-26T01:45:44.882789+00:00"}',
        b'{"id":"m1","text":"acme","published_at":"2026-11-26T03:45:44+02:00","author":{"followers":5}}',
        b'{"id":"m1","text":"acme","published_at":"2026-11-26T01:45:44"}',  # naive: taken as UTC
        b'{"id":"m1","text":"acme","engagement":{"likes":1.0}}',
        b'{"id":"m1","text":"acme","engagement":{"likes":true}}',
        b'{"id":"m1","text":"acme","author":{"followers":-1}}',
        b'{"id":"m1","text":"acme","lang":"en\\n"}',
        ('{"id":"m1","text":"' + "é" * 100_000 + '"}').encode(),
        ('{"id":"m1","text":"' + "é" * 100_001 + '"}').encode(),
        b'{"id":"m1","text":"acme","id":"m2"}',  # a repeated key: the last one
        b'{"id":"m1","text":"acme\\u0000"}',
        b'{"id":"m1","text":"\\ud800"}',  # a lone surrogate
        b'{"id":"m1","text":"acme"} trailing',
        b'{"id":"m1","text":"acme",}',
        b"[1, 2]",
        b"null",
        b"\xff\xfe",
        b"",
    ],
)
def test_same_answer_as_pydantic_on_edge_cases(raw: bytes) -> None:
    assert_same_answer(raw)


def test_refusals_name_the_field_as_pydantic_does() -> None:
    with pytest.raises(ValidationError) as caught:
        decode_mention(b'{"id":"m1","text":"acme","engagement":{"likes":"many"}}')
    assert caught.value.errors()[0]["loc"] == ("engagement", "likes")
