"""Find brands and topics in a text: every term of every brand in one automaton pass, on word boundaries
("Acmeville" is not "acme"), case-insensitive; then each brand's query decides on the terms found, and
the text's language which topic terms count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from schemas.config import ANY_LANGUAGE, TopicTerms
from services.analyzer.query import Facts, Node, QueryError, filter_fields, normalise_term, parse_query


class TermFinder:
    """All terms of a vocabulary found in a text in one pass of an Aho-Corasick automaton.

    Overlapping terms are all found ("apple" inside "apple music"); a term counts only on word
    boundaries, and "#acme" or "@acme" keep their sigil, so plain "acme" doesn't match inside them.
    A term ending in `*` ("acme*") matches any word that starts with it; it is reported as "acme*".
    """

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = sorted({normalise_term(t) for t in terms if t.strip()})
        self._automaton: Any = None
        entries: dict[str, list[tuple[str, bool]]] = {}
        for term in self.terms:
            prefix = term.endswith("*")
            entries.setdefault(term.rstrip("*") if prefix else term, []).append((term, prefix))
        if entries:
            self._automaton = ahocorasick.Automaton()
            for base, keys in entries.items():
                self._automaton.add_word(base, (len(base), tuple(keys)))
            self._automaton.make_automaton()

    def find(self, text: str) -> set[str]:
        if self._automaton is None or not text:
            return set()
        # Same normalisation as the terms: lowercase, whitespace runs as one space.
        norm = " ".join(text.lower().split())
        found: set[str] = set()
        last = len(norm) - 1
        for end, (length, keys) in self._automaton.iter(norm):
            start = end - length + 1
            if start > 0:
                before = norm[start - 1]
                if before.isalnum() or before in "_#@":  # inside a word, or the tail of a #tag/@handle
                    continue
            if end < last:
                after = norm[end + 1]
                whole_word = not (after.isalnum() or after == "_")
            else:
                whole_word = True
            for key, prefix in keys:
                if prefix or whole_word:
                    found.add(key)
        return found


@dataclass(frozen=True)
class BrandMatch:
    brand: str
    matched: list[str]


class BrandMatcher:
    """Which configured brands a text mentions, and by which terms."""

    def __init__(self, queries: Mapping[str, str | list[str]]) -> None:
        self.queries: dict[str, Node] = {}
        for brand, query in queries.items():
            try:
                self.queries[brand] = parse_query(query)
            except QueryError as exc:
                raise QueryError(exc.query, exc.position, f"brand {brand!r}: {exc.reason}") from None
        self._finder = TermFinder(t for node in self.queries.values() for t in node.terms())
        self.terms: list[str] = self._finder.terms
        self._brand_terms = {brand: node.terms() for brand, node in self.queries.items()}
        self.filter_fields: set[str] = set().union(*(filter_fields(n) for n in self.queries.values()))

    def match(self, text: str, facts: Facts | None = None) -> list[BrandMatch]:
        """Brands whose query holds for `text`; `facts` gives the fields filters read (lang, source, site, author)."""
        return self.match_terms(self._finder.find(text), facts)

    def match_terms(self, found: set[str], facts: Facts | None = None) -> list[BrandMatch]:
        """Brands whose query holds for a text in which a TermFinder (of at least `terms`) found `found`."""
        if not found:
            return []
        return [
            BrandMatch(brand, sorted(found & self._brand_terms[brand]))
            for brand, node in self.queries.items()
            if not found.isdisjoint(self._brand_terms[brand]) and node.evaluate(found, facts)
        ]


class TopicClassifier:
    """Topics of a text from the configured taxonomy (topic → terms per language, `*` for any language).

    A text in language L gets each topic whose terms for L or for `*` occur in it; a text of unknown
    language, or of a language a topic has no entry for, gets that topic only by its `*` terms. The terms
    of every topic and language share one automaton: one pass over the text, then the hits are kept by
    language.
    """

    def __init__(self, taxonomy: Mapping[str, Sequence[str] | Mapping[str, Sequence[str]]]) -> None:
        # normalised term → language ("*" for any) → topics the term counts for in that language
        self._topics_of: dict[str, dict[str, set[str]]] = {}
        for topic, terms in taxonomy.items():
            try:
                by_language = TopicTerms.parse(terms).by_language
            except ValueError as exc:
                raise ValueError(f"topic {topic!r}: {exc}") from None
            for lang, words in by_language.items():
                for word in words:
                    self._topics_of.setdefault(normalise_term(word), {}).setdefault(lang, set()).add(topic)
        self._finder = TermFinder(self._topics_of)
        self.terms: list[str] = self._finder.terms

    def classify(self, text: str, lang: str | None = None) -> list[str]:
        """Sorted topics of `text`, written in `lang` (an ISO 639-1 code; None: unknown)."""
        return self.classify_terms(self._finder.find(text), lang)

    def classify_terms(self, found: set[str], lang: str | None = None) -> list[str]:
        """Sorted topics of a text in which a TermFinder (of at least `terms`) found `found`."""
        topics: set[str] = set()
        for term in found:
            by_language = self._topics_of.get(term)
            if by_language is None:  # another vocabulary's term
                continue
            topics.update(by_language.get(ANY_LANGUAGE, ()))
            if lang and lang != ANY_LANGUAGE:
                topics.update(by_language.get(lang, ()))
        return sorted(topics)
