"""CSV answers of the list endpoints (search, report, alerts): rows streamed as they come, cells a spreadsheet
opens safely (no formula injection), `text/csv; charset=utf-8` as an attachment.

Usage: `csv_response("acme-mentions.csv", ["id", "published_at", ...], rows)` where `rows` is an iterable or an
async iterable of sequences (one per line, in the header's order).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from fastapi.responses import StreamingResponse

from services.api.views import AlertView

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
# Lines written per chunk sent: one chunk per row costs a write (and a syscall) per row.
ROWS_PER_CHUNK = 200
# A cell a spreadsheet may read as a formula (or as a DDE call): = + - @, and tab / carriage return, which
# some spreadsheets strip before looking at the first character (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

Row = Sequence[Any]


def safe_text(text: str) -> str:
    """Text as a spreadsheet will show it rather than evaluate it: a leading apostrophe when it could start a
    formula (the apostrophe is the spreadsheets' own "this is text" mark, and it is not displayed)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def cell(value: Any) -> str:
    """One value as a CSV cell. Numbers and booleans are ours and go as they are (so -0.6 stays a number);
    every text, which may come from anyone posting online, is guarded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return safe_text("; ".join(str(v) for v in value))
    if isinstance(value, dict):
        return safe_text(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    return safe_text(str(value))


def _encode(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data


async def csv_chunks(header: Sequence[str], rows: Iterable[Row] | AsyncIterable[Row]) -> AsyncIterator[bytes]:
    """The CSV document (RFC 4180: CRLF line ends, quotes where needed) in chunks of UTF-8 bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([safe_text(name) for name in header])
    pending = 0
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            writer.writerow([cell(v) for v in row])
            pending += 1
            if pending >= ROWS_PER_CHUNK:
                yield _encode(buffer)
                pending = 0
    else:
        for row in rows:
            writer.writerow([cell(v) for v in row])
            pending += 1
            if pending >= ROWS_PER_CHUNK:
                yield _encode(buffer)
                pending = 0
    yield _encode(buffer)


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII filename, plus RFC 6266's `filename*` when the name is not plain ASCII."""
    ascii_name = _UNSAFE_FILENAME.sub("_", filename).strip("._") or "export.csv"
    if ascii_name == filename:
        return f'attachment; filename="{ascii_name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def csv_response(
    filename: str,
    header: Sequence[str],
    rows: Iterable[Row] | AsyncIterable[Row],
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """A streamed CSV attachment named `filename` with `header` as its first line."""
    return StreamingResponse(
        csv_chunks(header, rows),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": content_disposition(filename), **(headers or {})},
    )


# The OpenAPI description of a CSV answer, for a route's `responses` (merged with its JSON 200).
CSV_RESPONSE_DOC: dict[str, Any] = {
    "text/csv": {"schema": {"type": "string"}, "example": "id,published_at\r\nreddit:t1_abc,2025-03-14T12:31:00Z\r\n"}
}


def with_csv(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A route's documented answers with `text/csv` added to its 200 (for routes taking `format=csv`)."""
    ok = dict(responses.get(200, {"description": "OK"}))
    ok["content"] = {**ok.get("content", {}), **CSV_RESPONSE_DOC}
    return {**responses, 200: ok}


# /v1/alerts?format=csv: the columns, and an alert (alert/1 with its ack, as the views give it) as a row.
ALERT_COLUMNS = (
    "id",
    "brand",
    "kind",
    "severity",
    "created_at",
    "window_start",
    "window_end",
    "observed",
    "baseline",
    "threshold",
    "message",
    "acked",
    "acked_by",
    "acked_at",
)


def alert_row(alert: AlertView) -> tuple[Any, ...]:
    return (
        alert.id,
        alert.brand,
        alert.kind,
        alert.severity,
        alert.created_at,
        alert.window.start,
        alert.window.end,
        alert.observed,
        alert.baseline,
        alert.threshold,
        alert.message,
        alert.acked,
        alert.acked_by,
        alert.acked_at,
    )


__all__ = [
    "ALERT_COLUMNS",
    "CSV_MEDIA_TYPE",
    "CSV_RESPONSE_DOC",
    "alert_row",
    "cell",
    "content_disposition",
    "csv_chunks",
    "csv_response",
    "safe_text",
    "with_csv",
]
