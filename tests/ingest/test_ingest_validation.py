"""Pure request parsing and validation: no broker, no HTTP."""

from __future__ import annotations

import orjson
import pytest

from schemas import AccountMetric
from services.ingest.validation import (
    FieldError,
    Refusal,
    field_path,
    parse_body,
    source_label,
    validate_items,
    validate_mentions,
)


def test_a_single_object_and_an_array_are_both_bodies() -> None:
    assert parse_body(b'{"id": "a", "text": "t"}', 10) == ([{"id": "a", "text": "t"}], False)
    assert parse_body(b'[{"id": "a"}, {"id": "b"}]', 10) == ([{"id": "a"}, {"id": "b"}], True)
    assert parse_body(b"[]", 10) == ([], True)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 422, "malformed_json"),
        (b"", 422, "malformed_json"),
        (b"42", 422, "not_an_object"),
        (b"[1, 2, 3]", 413, "too_many"),
    ],
)
def test_bodies_that_are_not_mentions(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_body(body, 2)
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_field_errors_name_item_and_path() -> None:
    items = [
        {"id": "ok", "text": "fine"},
        {"id": "x", "text": "t", "engagement": {"likes": "lots"}},
        {"text": "no id"},
        "not an object",
    ]
    with pytest.raises(Refusal) as refused:
        validate_mentions(items, is_array=True)
    detail = refused.value.detail
    assert "[1].engagement.likes: Input should be a valid integer" in detail
    assert "[2].id: Field required" in detail
    assert "[3]: Input should be a valid dictionary" in detail
    assert refused.value.bad_items == frozenset({1, 2, 3})
    assert "[0]" not in detail


def test_a_single_object_has_no_index() -> None:
    with pytest.raises(Refusal) as refused:
        validate_mentions([{"id": "x"}], is_array=False)
    assert refused.value.detail == "text: Field required"


def test_valid_mentions_get_defaults() -> None:
    [m] = validate_mentions([{"id": "a:1", "text": "hello"}], is_array=False)
    assert m.source == "webhook"
    assert m.fetched_at.tzinfo is not None


def test_many_errors_are_capped_but_counted() -> None:
    with pytest.raises(Refusal) as refused:
        validate_mentions([{"id": i} for i in range(30)], is_array=True)
    assert len(refused.value.errors) == 60
    assert refused.value.detail.endswith("… and 40 more")


def test_paths_and_labels() -> None:
    assert field_path(("engagement", "likes")) == "engagement.likes"
    assert field_path(("tags", 0, "name")) == "tags[0].name"
    assert str(FieldError(None, "", "bad")) == "body: bad"
    assert source_label({"source": "rss"}, "webhook") == "rss"
    assert source_label({"source": "made-up"}, "webhook") == "webhook"
    assert source_label([1], "replay") == "replay"


def test_account_metric_key_and_refusals() -> None:
    [reading] = validate_items(
        AccountMetric, [{"brand": "acme", "platform": "x", "metric": "followers", "value": 10}], True
    )
    assert reading.key == "acme|x|followers"
    assert orjson.loads(orjson.dumps(reading.model_dump(by_alias=True)))["schema"] == "account-metric/1"
    for bad, field in [
        ({"brand": "a|b", "platform": "x", "metric": "m", "value": 1}, "brand"),
        ({"brand": "acme", "platform": "x", "metric": "m", "value": "1"}, "value"),
        ({"brand": "acme", "platform": "x", "metric": "m", "value": True}, "value"),
        ({"brand": "acme", "platform": "x", "metric": "m", "value": float("nan")}, "value"),
        ({"brand": "acme", "metric": "m", "value": 1}, "platform"),
    ]:
        with pytest.raises(Refusal) as refused:
            validate_items(AccountMetric, [bad], False)
        assert refused.value.errors[0].field.startswith(field), (bad, refused.value.detail)
