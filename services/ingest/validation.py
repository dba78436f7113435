"""Turn a request body into validated messages, or into a refusal naming every bad field.

Pure: no FastAPI, no Kafka. A batch is all-or-nothing, so validation finishes before anything is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas import Mention
from schemas.models import SOURCES

M = TypeVar("M", bound=BaseModel)

# At most this many field errors are spelled out in a 422 detail; the count says how many there were.
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `index` is the item's position in an array body (None for a single object)."""

    index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = "" if self.index is None else f"[{self.index}]"
        if self.field:
            where = f"{where}.{self.field}" if where and not self.field.startswith("[") else f"{where}{self.field}"
        return f"{where or 'body'}: {self.message}"


@dataclass
class Refusal(Exception):
    """The request can't be ingested; `status` and `detail` are what the client gets back."""

    status: int
    reason: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    # Indexes of the items at fault (for metrics); empty when the whole body is at fault.
    bad_items: frozenset[int] = frozenset()

    def __str__(self) -> str:
        return self.detail


def field_path(loc: Sequence[int | str]) -> str:
    """('engagement', 'likes') → 'engagement.likes'; ('tags', 0) → 'tags[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def errors_of(exc: ValidationError, index: int | None) -> list[FieldError]:
    return [FieldError(index, field_path(err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]


def describe(errors: Sequence[FieldError]) -> str:
    shown = "; ".join(str(e) for e in errors[:MAX_REPORTED_ERRORS])
    hidden = len(errors) - MAX_REPORTED_ERRORS
    return f"{shown}; … and {hidden} more" if hidden > 0 else shown


def parse_body(body: bytes, max_batch: int, what: str = "mentions") -> tuple[list[Any], bool]:
    """JSON bytes → (items, is_array). A body is one object or an array of at most `max_batch` objects."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal(422, "malformed_json", f"malformed JSON: {exc}") from None
    if isinstance(parsed, dict):
        return [parsed], False
    if isinstance(parsed, list):
        if len(parsed) > max_batch:
            raise Refusal(
                413,
                "too_many",
                f"too many {what} in one request: {len(parsed)} > {max_batch}; split the array into smaller requests",
            )
        return parsed, True
    raise Refusal(
        422,
        "not_an_object",
        f"the body must be a JSON object or an array of objects ({what}), not {type(parsed).__name__}",
    )


def validate_items(model: type[M], items: Sequence[Any], is_array: bool) -> list[M]:
    """Validate every item; one bad item refuses the whole batch, and every bad field is named."""
    valid: list[M] = []
    errors: list[FieldError] = []
    bad: set[int] = set()
    for index, item in enumerate(items):
        try:
            valid.append(model.model_validate(item))
        except ValidationError as exc:
            errors.extend(errors_of(exc, index if is_array else None))
            bad.add(index)
    if errors:
        raise Refusal(422, "invalid", describe(errors), errors, frozenset(bad))
    return valid


def validate_mentions(items: Sequence[Any], is_array: bool) -> list[Mention]:
    return validate_items(Mention, items, is_array)


def source_label(item: Any, default: str) -> str:
    """The `source` metric label of a raw item: its own source when it is a known one, else `default`."""
    if isinstance(item, dict):
        source = item.get("source")
        if isinstance(source, str) and source in SOURCES:
            return source
    return default
