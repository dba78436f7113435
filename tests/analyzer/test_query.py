"""Brand query language: terms, phrases, #hashtags, @handles, AND/OR/NOT, parentheses, precedence,
list queries, and parse errors that point at the offending character."""

from __future__ import annotations

import pytest

from services.analyzer.query import All, Any_, Not, QueryError, Term, normalise_term, parse_query


def holds(query: str | list[str], *found: str) -> bool:
    return parse_query(query).evaluate(frozenset(found))


# --- what a query compiles to ----------------------------------------------------------------------


def test_single_term_is_lowercased() -> None:
    assert parse_query("Acme") == Term("acme")


def test_quoted_phrase_is_one_term_with_whitespace_normalised() -> None:
    assert parse_query('"Acme   Corp\tLayoffs"') == Term("acme corp layoffs")


def test_hashtag_and_handle_keep_their_sigil() -> None:
    assert parse_query("#Acme OR @AcmeSupport") == Any_((Term("#acme"), Term("@acmesupport")))
    assert parse_query('"#acme"') == Term("#acme")


def test_or_and_not() -> None:
    assert parse_query("acme OR globex") == Any_((Term("acme"), Term("globex")))
    assert parse_query("acme AND globex") == All((Term("acme"), Term("globex")))
    assert parse_query("NOT acme") == Not(Term("acme"))


def test_juxtaposed_terms_mean_and() -> None:
    assert parse_query("acme phone") == parse_query("acme AND phone") == All((Term("acme"), Term("phone")))
    assert parse_query("acme NOT layoffs") == All((Term("acme"), Not(Term("layoffs"))))


def test_chains_are_flat() -> None:
    assert parse_query("a OR b OR c") == Any_((Term("a"), Term("b"), Term("c")))
    assert parse_query("a AND b c") == All((Term("a"), Term("b"), Term("c")))


def test_precedence_not_binds_tighter_than_and_tighter_than_or() -> None:
    assert parse_query("a OR b AND c") == Any_((Term("a"), All((Term("b"), Term("c")))))
    assert parse_query("a AND b OR c") == Any_((All((Term("a"), Term("b"))), Term("c")))
    assert parse_query("NOT a AND b") == All((Not(Term("a")), Term("b")))
    assert parse_query("NOT a OR b") == Any_((Not(Term("a")), Term("b")))
    assert parse_query("NOT NOT a") == Not(Not(Term("a")))


def test_parentheses_override_precedence() -> None:
    assert parse_query("(a OR b) AND c") == All((Any_((Term("a"), Term("b"))), Term("c")))
    assert parse_query("NOT (a OR b)") == Not(Any_((Term("a"), Term("b"))))
    assert parse_query("((a))") == Term("a")
    assert parse_query("(a OR b)(c OR d)") == All((Any_((Term("a"), Term("b"))), Any_((Term("c"), Term("d")))))


def test_lowercase_operator_words_are_terms() -> None:
    assert parse_query("rock and roll") == All((Term("rock"), Term("and"), Term("roll")))
    assert parse_query('"AND"') == Term("and")


def test_terms_lists_every_term_including_negated_ones() -> None:
    node = parse_query('(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"')
    assert node.terms() == {"acme", "#acme", "@acme", "acme corp layoffs"}


def test_list_query_is_any_of_its_terms() -> None:
    assert parse_query(["Acme", "@acme", "  ", "Acme  Corp"]) == Any_((Term("acme"), Term("@acme"), Term("acme corp")))
    assert parse_query(["acme"]) == Term("acme")


def test_normalise_term() -> None:
    assert normalise_term("  Acme\n  CORP  ") == "acme corp"


# --- evaluation ------------------------------------------------------------------------------------


def test_evaluate_design_example() -> None:
    query = '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"'
    assert holds(query, "acme")
    assert holds(query, "#acme")
    assert holds(query, "@acme", "unrelated")
    assert not holds(query, "acme", "acme corp layoffs")
    assert not holds(query, "acme corp layoffs")
    assert not holds(query)


def test_evaluate_precedence_without_parentheses() -> None:
    # a OR (b AND NOT c)
    query = "a OR b AND NOT c"
    assert holds(query, "a", "c")
    assert holds(query, "b")
    assert not holds(query, "b", "c")
    assert not holds(query, "c")


def test_evaluate_list_query() -> None:
    assert holds(["acme", "@acme"], "@acme")
    assert not holds(["acme", "@acme"], "globex")


# --- errors ----------------------------------------------------------------------------------------


def error_of(query: str | list[str]) -> QueryError:
    with pytest.raises(QueryError) as info:
        parse_query(query)
    return info.value


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query(query: str) -> None:
    err = error_of(query)
    assert err.position == 0
    assert "empty" in err.reason


@pytest.mark.parametrize("query", [[], ["", "  "]])
def test_empty_list_query(query: list[str]) -> None:
    assert "empty" in error_of(query).reason


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ('"acme', 0),
        ('acme"corp', 4),
        ('acme "corp', 5),  # the quote itself, not the blank before it
        ('acme OR "acme corp', 8),
        ('"a" "b" "c', 8),
    ],
)
def test_unbalanced_quote_points_at_the_quote(query: str, position: int) -> None:
    err = error_of(query)
    assert err.reason == "unbalanced quote"
    assert query[err.position] == '"'
    assert err.position == position


def test_empty_phrase() -> None:
    err = error_of('acme OR ""')
    assert err.position == 8
    assert "empty phrase" in err.reason


@pytest.mark.parametrize("query", ["(acme OR globex", "((acme) OR globex", "(acme"])
def test_missing_closing_parenthesis_points_at_the_end(query: str) -> None:
    err = error_of(query)
    assert err.reason == "missing ')'"
    assert err.position == len(query)


@pytest.mark.parametrize(
    ("query", "position"),
    [("acme)", 4), (")", 0), ("(acme))", 6), ("acme OR globex) phone", 14), ("()", 1)],
)
def test_stray_closing_parenthesis(query: str, position: int) -> None:
    err = error_of(query)
    assert err.position == position
    assert query[err.position] == ")"
    assert "')'" in err.reason


@pytest.mark.parametrize("query", ["acme AND", "acme OR", "NOT", "acme AND NOT", "(acme OR"])
def test_dangling_operator_at_the_end(query: str) -> None:
    err = error_of(query)
    assert err.position == len(query)
    assert "term was expected" in err.reason


@pytest.mark.parametrize(
    ("query", "position", "operator"),
    [("AND acme", 0, "AND"), ("OR acme", 0, "OR"), ("acme OR OR globex", 8, "OR"), ("acme AND OR b", 9, "OR")],
)
def test_misplaced_operator(query: str, position: int, operator: str) -> None:
    err = error_of(query)
    assert err.position == position
    assert repr(operator) in err.reason


def test_error_message_names_query_and_position() -> None:
    err = error_of("acme AND")
    assert isinstance(err, ValueError)
    assert err.query == "acme AND"
    assert "position 8" in str(err)
    assert "'acme AND'" in str(err)
