"""Replay a JSONL file of mentions (one mention/1 object per line) into mentions.raw.

Parsing is pure (`parse_replay_lines`); `replay_file` is the thin part that produces. A bad line is
counted and reported with its line number, never produced; a line without `source` gets "replay".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas import Mention, dump
from services.ingest.metrics import IngestMetrics
from services.ingest.producer import IngestProducer
from services.ingest.validation import describe, errors_of, source_label

logger = logging.getLogger(__name__)

REPLAY_SOURCE = "replay"


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str
    source: str = REPLAY_SOURCE

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


@dataclass
class ReplayResult:
    lines: int = 0  # lines read, blank ones included
    produced: int = 0
    bad: list[BadLine] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return len(self.bad)


def parse_replay_lines(lines: Iterable[str | bytes], first_line: int = 1) -> Iterator[tuple[int, Mention | BadLine]]:
    """(line number, mention or the reason it is refused) for each non-blank line."""
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, BadLine(number, f"malformed JSON: {exc}")
            continue
        if not isinstance(item, dict):
            yield number, BadLine(number, f"expected a JSON object (a mention), got {type(item).__name__}")
            continue
        if item.get("source") is None:
            item["source"] = REPLAY_SOURCE
        try:
            yield number, Mention.model_validate(item)
        except ValidationError as exc:
            yield number, BadLine(number, describe(errors_of(exc, None)), source_label(item, REPLAY_SOURCE))


async def replay_file(
    path: str | Path,
    link: IngestProducer,
    metrics: IngestMetrics,
    *,
    batch_size: int = 500,
    progress_every: float = 5.0,
) -> ReplayResult:
    """Produce every valid line of `path`, in batches acknowledged by the broker; returns the counts.

    A KafkaUnavailable from the producer stops the replay (what was produced so far is logged).
    """
    path = Path(path)
    result = ReplayResult()
    batch: list[Mention] = []
    next_report = time.monotonic() + progress_every
    topic = link.topics.mentions_raw

    async def flush() -> None:
        nonlocal batch
        if batch:
            await link.produce(topic, [(m.id.encode(), dump(m)) for m in batch])
            result.produced += len(batch)
            batch = []

    logger.info("replaying %s into %s", path, topic)
    with path.open("rb") as lines:
        try:
            for number, parsed in parse_replay_lines(lines):
                result.lines = number
                if isinstance(parsed, BadLine):
                    metrics.received.labels(parsed.source).inc()
                    metrics.refused.labels(parsed.source, "invalid").inc()
                    result.bad.append(parsed)
                    logger.warning("%s:%d refused: %s", path, number, parsed.error)
                    continue
                metrics.received.labels(parsed.source).inc()
                batch.append(parsed)
                if len(batch) >= batch_size:
                    await flush()
                if time.monotonic() >= next_report:
                    logger.info("%s: line %d, %d produced, %d refused", path, number, result.produced, result.refused)
                    next_report = time.monotonic() + progress_every
            await flush()
        except Exception:
            logger.error("replay of %s stopped near line %d after %d produced", path, result.lines, result.produced)
            raise
    logger.info("replayed %s: %d lines, %d produced, %d refused", path, result.lines, result.produced, result.refused)
    return result
