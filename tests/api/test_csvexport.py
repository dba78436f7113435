"""The shared CSV helper: cells a spreadsheet will not evaluate, streamed documents the csv module reads back."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from services.api.csvexport import cell, content_disposition, csv_chunks, safe_text


def test_formula_starts_get_an_apostrophe() -> None:
    for text in ("=1+1", "+33 6", "-2", "@SUM(A1)", "\tx", "\r=cmd"):
        assert safe_text(text) == "'" + text
    for text in ("prix élevés", "a=b", "", "'quoted"):
        assert safe_text(text) == text


def test_cells_of_each_type() -> None:
    assert cell(None) == ""
    assert cell(True) == "true"
    assert cell(-0.6) == "-0.6"  # our numbers stay numbers
    assert cell(-3) == "-3"
    assert cell(datetime(2025, 3, 14, 12, 0, tzinfo=UTC)) == "2025-03-14T12:00:00Z"
    assert cell(["pricing", "support"]) == "pricing; support"
    assert cell(["-x"]) == "'-x"
    assert cell({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert cell('=HYPERLINK("http://evil")') == '\'=HYPERLINK("http://evil")'


async def _collect(chunks: AsyncIterator[bytes]) -> str:
    return b"".join([c async for c in chunks]).decode("utf-8")


async def test_sync_and_async_rows_read_back() -> None:
    rows = [("m1", 'say "hi", then\nleave', 1), ("m2", "=2+2", -1)]

    async def async_rows() -> AsyncIterator[tuple[object, ...]]:
        for row in rows:
            yield row

    for source in (rows, async_rows()):
        text = await _collect(csv_chunks(["id", "text", "n"], source))
        assert text.endswith("\r\n")
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert parsed == [["id", "text", "n"], ["m1", 'say "hi", then\nleave', "1"], ["m2", "'=2+2", "-1"]]


async def test_many_rows_come_in_several_chunks() -> None:
    chunks = [c async for c in csv_chunks(["n"], ([i] for i in range(1000)))]
    assert len(chunks) > 1
    assert list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))[1:] == [[str(i)] for i in range(1000)]


def test_content_disposition() -> None:
    assert content_disposition("acme-mentions.csv") == 'attachment; filename="acme-mentions.csv"'
    header = content_disposition('café"; x.csv')
    assert header.startswith("attachment; filename=\"caf_x.csv\"; filename*=UTF-8''")
    assert "caf%C3%A9%22%3B%20x.csv" in header
