"""Brand queries as listening tools write them: terms, "quoted phrases", #hashtags, @handles,
combined with AND, OR, NOT and parentheses (`acme OR "#acme"`, `(acme OR @acme) AND NOT layoffs`).

A query compiles to a boolean expression over terms; `terms()` lists every term so all brands'
terms can be found in one pass over a text, and `evaluate()` decides on the set of terms found.
Juxtaposed terms mean AND, as in most listening tools. `acme*` matches any word starting with
acme. Filters `lang:fr`, `source:reddit`, `site:reddit.com`, `author:jdoe` test the mention itself;
a query needs at least one term besides its filters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+))')
_OPERATORS = {"AND", "OR", "NOT"}
FILTER_FIELDS = ("lang", "source", "site", "author")
Facts = Mapping[str, str | None]


class QueryError(ValueError):
    """A brand query doesn't parse; `position` is the 0-based character offset of the problem."""

    def __init__(self, query: str, position: int, reason: str) -> None:
        super().__init__(f"{reason} at position {position} in query {query!r}")
        self.query = query
        self.position = position
        self.reason = reason


@dataclass(frozen=True)
class Term:
    text: str  # lowercased, whitespace-normalised

    def evaluate(self, found: frozenset[str] | set[str], facts: Facts | None = None) -> bool:
        return self.text in found

    def terms(self) -> set[str]:
        return {self.text}


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, found: frozenset[str] | set[str], facts: Facts | None = None) -> bool:
        return not self.operand.evaluate(found, facts)

    def terms(self) -> set[str]:
        return self.operand.terms()


@dataclass(frozen=True)
class All:
    operands: tuple[Node, ...]

    def evaluate(self, found: frozenset[str] | set[str], facts: Facts | None = None) -> bool:
        return all(op.evaluate(found, facts) for op in self.operands)

    def terms(self) -> set[str]:
        return set().union(*(op.terms() for op in self.operands))


@dataclass(frozen=True)
class Any_:
    operands: tuple[Node, ...]

    def evaluate(self, found: frozenset[str] | set[str], facts: Facts | None = None) -> bool:
        return any(op.evaluate(found, facts) for op in self.operands)

    def terms(self) -> set[str]:
        return set().union(*(op.terms() for op in self.operands))


@dataclass(frozen=True)
class Filter:
    """`field:value` on the mention itself (language, source type, site, author handle or id)."""

    field: str
    value: str

    def evaluate(self, found: frozenset[str] | set[str], facts: Facts | None = None) -> bool:
        actual = (facts or {}).get(self.field)
        if not actual:
            return False
        actual = actual.lower()
        if self.field == "site":
            # site:reddit.com covers reddit.com/r/phones and old.reddit.com.
            return actual == self.value or actual.startswith(self.value + "/") or actual.endswith("." + self.value)
        if self.field == "author":
            return actual.lstrip("@") == self.value
        return actual == self.value

    def terms(self) -> set[str]:
        return set()


Node = Term | Not | All | Any_ | Filter


def normalise_term(text: str) -> str:
    return " ".join(text.lower().split())


def _tokenise(query: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(query):
        if query[pos:].strip() == "":
            break
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            raise QueryError(query, len(query) - len(query[pos:].lstrip()), "unbalanced quote")
        start = match.start(match.lastgroup) if match.lastgroup else pos
        kind = match.lastgroup or ""
        if kind == "phrase":
            value = match.group("phrase")
            if not value.strip():
                raise QueryError(query, start - 1, "empty phrase")
            tokens.append(("term", value, start - 1))
        elif kind == "word":
            word = match.group("word")
            field, colon, value = word.partition(":")
            if word in _OPERATORS:
                tokens.append(("op", word, start))
            elif colon and field.lower() in FILTER_FIELDS:
                if not value:
                    raise QueryError(query, start + len(field) + 1, f"{field}: needs a value")
                tokens.append(("filter", word, start))
            else:
                tokens.append(("term", word, start))
        else:
            tokens.append((kind, match.group(kind), start))
        pos = match.end()
    if query.count('"') % 2:
        raise QueryError(query, query.rfind('"'), "unbalanced quote")
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokenise(query)
        self.index = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _end_position(self) -> int:
        return len(self.query)

    def parse(self) -> Node:
        if not self.tokens:
            raise QueryError(self.query, 0, "empty query")
        node = self._or()
        token = self._peek()
        if token is not None:
            raise QueryError(self.query, token[2], f"unexpected {token[1]!r}")
        if not node.terms():
            raise QueryError(self.query, 0, "a query needs at least one term besides its filters")
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while (token := self._peek()) is not None and token[:2] == ("op", "OR"):
            self.index += 1
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Any_(tuple(operands))

    def _and(self) -> Node:
        operands = [self._unary()]
        while (token := self._peek()) is not None and (
            token[0] in ("term", "lp", "filter") or token[1] in ("AND", "NOT")
        ):
            if token[:2] == ("op", "AND"):
                self.index += 1
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else All(tuple(operands))

    def _unary(self) -> Node:
        token = self._peek()
        if token is None:
            raise QueryError(self.query, self._end_position(), "query ends where a term was expected")
        kind, value, position = token
        if kind == "op" and value == "NOT":
            self.index += 1
            return Not(self._unary())
        if kind == "lp":
            self.index += 1
            node = self._or()
            closing = self._peek()
            if closing is None or closing[0] != "rp":
                where = closing[2] if closing else self._end_position()
                raise QueryError(self.query, where, "missing ')'")
            self.index += 1
            return node
        if kind == "term":
            self.index += 1
            term = normalise_term(value)
            if term.endswith("*") and len(term.rstrip("*")) < 2:
                raise QueryError(self.query, position, "a wildcard needs at least two letters before '*'")
            if "*" in term.rstrip("*") or term.endswith("**"):
                raise QueryError(self.query, position, "'*' is only allowed at the end of a word")
            return Term(term)
        if kind == "filter":
            self.index += 1
            field, _, filter_value = value.partition(":")
            return Filter(field.lower(), filter_value.strip('"').lower().lstrip("@"))
        raise QueryError(self.query, position, f"unexpected {value!r}")


def parse_query(query: str | list[str]) -> Node:
    """Compile a brand query; a list means any of its terms. Raises QueryError with the position."""
    if isinstance(query, list):
        terms = [normalise_term(t) for t in query if t.strip()]
        if not terms:
            raise QueryError(str(query), 0, "empty query")
        return Any_(tuple(Term(t) for t in terms)) if len(terms) > 1 else Term(terms[0])
    return _Parser(query).parse()


def filter_fields(node: Node) -> set[str]:
    """The mention fields a query's filters read (so the caller knows what to compute first)."""
    if isinstance(node, Filter):
        return {node.field}
    if isinstance(node, Term):
        return set()
    if isinstance(node, Not):
        return filter_fields(node.operand)
    return set().union(*(filter_fields(op) for op in node.operands))
