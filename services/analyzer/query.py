"""Brand queries as listening tools write them: terms, "quoted phrases", #hashtags, @handles,
combined with AND, OR, NOT and parentheses (`acme OR "#acme"`, `(acme OR @acme) AND NOT layoffs`).

A query compiles to a boolean expression over terms; `terms()` lists every term so all brands'
terms can be found in one pass over a text, and `evaluate()` decides on the set of terms found.
Juxtaposed terms mean AND, as in most listening tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+))')
_OPERATORS = {"AND", "OR", "NOT"}


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

    def evaluate(self, found: frozenset[str] | set[str]) -> bool:
        return self.text in found

    def terms(self) -> set[str]:
        return {self.text}


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, found: frozenset[str] | set[str]) -> bool:
        return not self.operand.evaluate(found)

    def terms(self) -> set[str]:
        return self.operand.terms()


@dataclass(frozen=True)
class All:
    operands: tuple[Node, ...]

    def evaluate(self, found: frozenset[str] | set[str]) -> bool:
        return all(op.evaluate(found) for op in self.operands)

    def terms(self) -> set[str]:
        return set().union(*(op.terms() for op in self.operands))


@dataclass(frozen=True)
class Any_:
    operands: tuple[Node, ...]

    def evaluate(self, found: frozenset[str] | set[str]) -> bool:
        return any(op.evaluate(found) for op in self.operands)

    def terms(self) -> set[str]:
        return set().union(*(op.terms() for op in self.operands))


Node = Term | Not | All | Any_


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
            tokens.append(("op", word, start) if word in _OPERATORS else ("term", word, start))
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
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while (token := self._peek()) is not None and token[:2] == ("op", "OR"):
            self.index += 1
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Any_(tuple(operands))

    def _and(self) -> Node:
        operands = [self._unary()]
        while (token := self._peek()) is not None and (token[0] in ("term", "lp") or token[1] in ("AND", "NOT")):
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
            return Term(normalise_term(value))
        raise QueryError(self.query, position, f"unexpected {value!r}")


def parse_query(query: str | list[str]) -> Node:
    """Compile a brand query; a list means any of its terms. Raises QueryError with the position."""
    if isinstance(query, list):
        terms = [normalise_term(t) for t in query if t.strip()]
        if not terms:
            raise QueryError(str(query), 0, "empty query")
        return Any_(tuple(Term(t) for t in terms)) if len(terms) > 1 else Term(terms[0])
    return _Parser(query).parse()
