"""Find brands and topics in a text: every term of every brand in one automaton pass, on word boundaries
("Acmeville" is not "acme"), case-insensitive; then each brand's query decides on the terms found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ahocorasick

from services.analyzer.query import Node, normalise_term, parse_query


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class TermFinder:
    """All terms of a vocabulary found in a text in one pass of an Aho-Corasick automaton.

    Overlapping terms are all found ("apple" inside "apple music"); a term counts only on word
    boundaries, and "#acme" or "@acme" keep their sigil, so plain "acme" doesn't match inside them.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted({normalise_term(t) for t in terms if t.strip()})
        self._automaton: Any = None
        if self.terms:
            self._automaton = ahocorasick.Automaton()
            for term in self.terms:
                self._automaton.add_word(term, term)
            self._automaton.make_automaton()

    def find(self, text: str) -> set[str]:
        if self._automaton is None or not text:
            return set()
        # Same normalisation as the terms: lowercase, whitespace runs as one space.
        norm = " ".join(text.lower().split())
        found: set[str] = set()
        last = len(norm) - 1
        for end, term in self._automaton.iter(norm):
            start = end - len(term) + 1
            if start > 0 and (_is_word_char(norm[start - 1]) or norm[start - 1] in "#@"):
                continue
            if end < last and _is_word_char(norm[end + 1]):
                continue
            found.add(term)
        return found


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
