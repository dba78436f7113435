"""Find brands and topics in a text: every term of every brand in one pass, on word boundaries
("Acmeville" is not "acme"), case-insensitive; then each brand's query decides on the terms found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.analyzer.query import Node, normalise_term, parse_query


def _term_pattern(term: str) -> str:
    # Words of a phrase may be separated by any run of whitespace.
    return r"\s+".join(re.escape(word) for word in term.split())


class TermFinder:
    """All terms of a vocabulary found in a text, with one compiled alternation (longest first)."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted({normalise_term(t) for t in terms if t.strip()}, key=lambda t: (-len(t), t))
        if self.terms:
            body = "|".join(_term_pattern(t) for t in self.terms)
            # Lookarounds instead of \b so "#acme" and "@acme" keep their sigil as part of the term.
            self._regex: re.Pattern[str] | None = re.compile(rf"(?<![\w#@])(?:{body})(?!\w)", re.IGNORECASE)
        else:
            self._regex = None

    def find(self, text: str) -> set[str]:
        if self._regex is None or not text:
            return set()
        return {normalise_term(m.group(0)) for m in self._regex.finditer(text)}


@dataclass(frozen=True)
class BrandMatch:
    brand: str
    matched: list[str]


class BrandMatcher:
    """Which configured brands a text mentions, and by which terms."""

    def __init__(self, queries: Mapping[str, str | list[str]]) -> None:
        self.queries: dict[str, Node] = {brand: parse_query(q) for brand, q in queries.items()}
        self._finder = TermFinder(t for node in self.queries.values() for t in node.terms())
        self._brand_terms = {brand: node.terms() for brand, node in self.queries.items()}

    def match(self, text: str) -> list[BrandMatch]:
        found = self._finder.find(text)
        if not found:
            return []
        return [
            BrandMatch(brand, sorted(found & self._brand_terms[brand]))
            for brand, node in self.queries.items()
            if node.evaluate(found)
        ]


class TopicClassifier:
    """Topics of a text from the configured keyword taxonomy (topic → terms)."""

    def __init__(self, taxonomy: Mapping[str, list[str]]) -> None:
        self._topics_of: dict[str, set[str]] = {}
        for topic, terms in taxonomy.items():
            for term in terms:
                self._topics_of.setdefault(normalise_term(term), set()).add(topic)
        self._finder = TermFinder(self._topics_of)

    def classify(self, text: str) -> list[str]:
        topics: set[str] = set()
        for term in self._finder.find(text):
            topics |= self._topics_of.get(term, set())
        return sorted(topics)
