"""The filter and order_by languages: what each text means, and what each mistake says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from people.domain.errors import InvalidField
from people.domain.filtering import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_RESTRICTIONS,
    parse_filter,
    parse_order_by,
    parse_query,
)
from people.domain.model import name_key
from people.domain.query import (
    AllOf,
    AnyOf,
    Node,
    Not,
    Order,
    Query,
    TextMatch,
    TimeMatch,
    TimeOperator,
)
from people.store.sql_filter import prefix_upper_bound

NOON = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


class TestMeaning:
    """Each construct parses to the comparison it stands for."""

    @pytest.mark.parametrize(
        ("text", "tree"),
        [
            ('email = "ADA@Example.com"', TextMatch("email", "equals", "ada@example.com")),
            ('email = " ada@example.com "', TextMatch("email", "equals", "ada@example.com")),
            ('email = "not an address"', TextMatch("email", "equals", "not an address")),
            ('email = "*@ACME.com"', TextMatch("email", "suffix", "@acme.com")),
            ('email = "Ada*"', TextMatch("email", "prefix", "ada")),
            ('email = "*acme*"', TextMatch("email", "contains", "acme")),
            ('email:"ACME"', TextMatch("email", "contains", "acme")),
            ('name = "Ada*"', TextMatch("name", "prefix", "ada")),
            ("name = 'STRASSE'", TextMatch("name", "equals", "strasse")),
            ('name = "Straße"', TextMatch("name", "equals", "strasse")),
            ('name : "Love"', TextMatch("name", "contains", "love")),
            ('name = "*hopper"', TextMatch("name", "suffix", "hopper")),
            ('name = "Bob\\*"', TextMatch("name", "equals", "bob*")),
            ('name = "\\*Bob*"', TextMatch("name", "prefix", "*bob")),
            ('name = "say \\"hi\\""', TextMatch("name", "equals", 'say "hi"')),
            ('name = "*"', TextMatch("name", "prefix", "")),
            ('name = "**"', TextMatch("name", "prefix", "")),
            ('id = "AbC-1"', TextMatch("id", "equals", "AbC-1")),
            ('id = "AbC*"', TextMatch("id", "prefix", "AbC")),
            ('name != "Ada"', Not(TextMatch("name", "equals", "ada"))),
            (
                'create_time < "2024-05-17T12:00:00Z"',
                TimeMatch("create_time", "<", NOON),
            ),
            (
                'update_time >= "2024-05-17T14:00:00+02:00"',
                TimeMatch("update_time", ">=", NOON),
            ),
            (
                'create_time = "2024-05-17t12:00:00.0000009z"',
                TimeMatch("create_time", "=", NOON),
            ),
            (
                'create_time != "2024-05-17T11:30:00-00:30"',
                Not(TimeMatch("create_time", "=", NOON)),
            ),
            (
                'create_time <= "2024-05-17T12:00:00.25Z"',
                TimeMatch("create_time", "<=", NOON.replace(microsecond=250000)),
            ),
            ('create_time > "2024-05-17T12:00:00Z"', TimeMatch("create_time", ">", NOON)),
        ],
    )
    def test_one_comparison(self, text: str, tree: Node) -> None:
        """A comparison parses to its field, shape or operator, and folded value."""
        assert parse_filter(text) == tree

    def test_fractions_keep_microseconds(self) -> None:
        """Fractions of a second are kept to the microsecond (the stores' precision)."""
        parsed = parse_filter('create_time <= "2024-05-17T12:00:00.123456789Z"')
        assert parsed == TimeMatch("create_time", "<=", NOON.replace(microsecond=123456))

    def test_or_binds_tighter_than_and(self) -> None:
        """As in AIP-160, `a AND b OR c` is `a AND (b OR c)`."""
        a, b, c = (TextMatch("name", "equals", letter) for letter in "abc")
        assert parse_filter('name = "a" AND name = "b" OR name = "c"') == AllOf((a, AnyOf((b, c))))
        assert parse_filter('name = "a" OR name = "b" AND name = "c"') == AllOf((AnyOf((a, b)), c))

    def test_parentheses_and_negation(self) -> None:
        """Parentheses group; NOT and - negate the term that follows."""
        a, b = TextMatch("name", "equals", "a"), TextMatch("name", "equals", "b")
        assert parse_filter('NOT (name = "a" AND name = "b")') == Not(AllOf((a, b)))
        assert parse_filter('-name = "a" AND NOT NOT name = "b"') == AllOf((Not(a), Not(Not(b))))
        assert parse_filter('((name = "a"))') == a

    @pytest.mark.parametrize("text", ["", "   ", "\n\t"])
    def test_empty_filter_is_everyone(self, text: str) -> None:
        """An empty (or blank) filter is no filter."""
        assert parse_filter(text) is None

    @pytest.mark.parametrize(
        ("text", "order"),
        [
            ("", Order()),
            ("create_time", Order()),
            ("  name  ", Order("name")),
            ("name desc", Order("name", descending=True)),
            ("email DESC", Order("email", descending=True)),
            ("update_time asc", Order("update_time")),
        ],
    )
    def test_order_by(self, text: str, order: Order) -> None:
        """order_by names one field and an optional direction; creation order by default."""
        assert parse_order_by(text) == order

    def test_binding_ignores_spelling(self) -> None:
        """Queries that differ only in spacing, quotes or letter case share a binding."""
        one = parse_query('email = "ADA@example.com" AND name="x*"', "name  desc")
        two = parse_query("email='ada@example.com'   AND   name = 'X*'", "name DESC")
        three = parse_query('email = "ada@example.com" AND name = "y*"', "name desc")
        assert one.binding == two.binding
        assert one.binding != three.binding
        assert one.binding != parse_query('email = "ADA@example.com" AND name="x*"', "name").binding


class TestMistakes:
    """Every mistake is INVALID_ARGUMENT (InvalidField) naming its position and the problem."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('nickname = "x"', "at position 1: unknown field 'nickname'"),
            ('name = "a" and name = "b"', "at position 12: expected AND, OR or the end"),
            ('name = "a" name = "b"', "at position 12: expected AND, OR or the end"),
            ('name = "x', "at position 8: this string has no closing quote"),
            ('name = "\\n"', "at position 9: unknown escape \\n"),
            ('name < "x"', "at position 6: name takes =, != or :, not <"),
            ('id:"x"', "at position 3: id takes = or !="),
            ('name = "a*b"', "at position 8: a * wildcard may only start or end a value"),
            ('name:"a*"', "at position 6: a * wildcard works with = and != only"),
            ('create_time > "yesterday"', "at position 15: create_time needs an RFC 3339 time"),
            ('create_time > "2024-05-17"', "at position 15: create_time needs an RFC 3339 time"),
            ('create_time > "2024-05-17T12:00:00"', "at position 15: create_time needs"),
            ('create_time > "2024-13-01T00:00:00Z"', "at position 15: create_time needs"),
            ('update_time:"2024"', "at position 12: update_time takes =, !=, <, <=, > or >="),
            ("name = Ada", "at position 8: expected a quoted value after =, not 'Ada'"),
            ("name =", "at position 7: expected a quoted value after =, not the end"),
            ('name "x"', "at position 6: expected an operator after name"),
            ('= "x"', "at position 1: expected a field"),
            ('(name = "a"', "at position 12: expected ) to close the ( at position 1"),
            ('name = "a")', "at position 11: this ) closes no ("),
            ('name = "a" AND', "at position 15: expected a field"),
            ("NOT", "at position 4: expected a field"),
            ('name = "a" # x', "at position 12: unexpected character '#'"),
            ('and = "x"', "(AND, OR and NOT are written in capitals)"),
        ],
    )
    def test_filter(self, text: str, message: str) -> None:
        """The message says where (in characters from 1) and what went wrong."""
        with pytest.raises(InvalidField) as caught:
            parse_filter(text)
        assert caught.value.field == "filter"
        assert message in caught.value.reason, caught.value.reason

    @pytest.mark.parametrize("text", ["id", "name up", "name desc name", "name, email", "desc"])
    def test_order_by(self, text: str) -> None:
        """An order_by that is not one known field and a direction is an InvalidField."""
        with pytest.raises(InvalidField) as caught:
            parse_order_by(text)
        assert caught.value.field == "order_by"

    def test_limits(self) -> None:
        """Over-long, over-nested and over-sized filters are refused, not parsed."""
        with pytest.raises(InvalidField, match="at most"):
            parse_filter('name = "' + "x" * MAX_FILTER_LENGTH + '"')
        with pytest.raises(InvalidField, match="nested more than"):
            parse_filter("(" * (MAX_DEPTH + 1) + 'name = "a"' + ")" * (MAX_DEPTH + 1))
        with pytest.raises(InvalidField, match="nested more than"):
            parse_filter("NOT " * (MAX_DEPTH + 1) + 'name = "a"')
        many = " OR ".join(f'name = "{n}"' for n in range(MAX_RESTRICTIONS + 1))
        with pytest.raises(InvalidField, match=f"at most {MAX_RESTRICTIONS} comparisons"):
            parse_filter(many)
        just_enough = " OR ".join(f'name = "{n}"' for n in range(MAX_RESTRICTIONS))
        assert isinstance(parse_filter(just_enough), AnyOf)


# -- generated filters: render a tree as text, parse it back ------------------------------

values = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
#: Text a store can hold, leaning on the code points where a range could go wrong.
stored_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from(["a", "b", "\ud7ff", "\ue000", "\uffff", "\U0010ffff"]),
    ),
    max_size=4,
)
moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def quoted(value: str) -> str:
    """A string literal holding ``value`` exactly (no wildcard)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")
    return f'"{escaped}"'


@st.composite
def restrictions(draw: st.DrawFn) -> tuple[str, Node]:
    """A comparison as text, and the tree it must parse to."""
    kind = draw(st.sampled_from(["id", "name_equals", "name_prefix", "contains", "time"]))
    if kind == "time":
        moment = draw(moments)
        operators: list[TimeOperator] = ["<", "<=", ">", ">=", "="]
        operator = draw(st.sampled_from(operators))
        offset = draw(st.integers(-12, 12))
        zone = timezone(timedelta(hours=offset))
        text = moment.astimezone(zone).isoformat()
        return f"create_time {operator} {quoted(text)}", TimeMatch("create_time", operator, moment)
    value = draw(values)
    if kind == "id":
        return f"id = {quoted(value)}", TextMatch("id", "equals", value)
    if kind == "name_equals":
        return f"name = {quoted(value)}", TextMatch("name", "equals", name_key(value))
    if kind == "name_prefix":
        tree = TextMatch("name", "prefix", name_key(value))
        return f'name = {quoted(value)[:-1]}*"', tree
    return f"name:{quoted(value)}", TextMatch(
        "name", "contains" if value else "prefix", name_key(value)
    )


def combined(children: st.SearchStrategy[tuple[str, Node]]) -> st.SearchStrategy[tuple[str, Node]]:
    """NOT, AND and OR over smaller filters, each parenthesised."""

    def negate(child: tuple[str, Node]) -> tuple[str, Node]:
        return f"NOT ({child[0]})", Not(child[1])

    def join(word: str, parts: list[tuple[str, Node]]) -> tuple[str, Node]:
        text = f" {word} ".join(f"({part[0]})" for part in parts)
        nodes = tuple(part[1] for part in parts)
        return text, AllOf(nodes) if word == "AND" else AnyOf(nodes)

    return st.one_of(
        children.map(negate),
        st.lists(children, min_size=2, max_size=3).map(lambda parts: join("AND", parts)),
        st.lists(children, min_size=2, max_size=3).map(lambda parts: join("OR", parts)),
    )


filters = st.recursive(restrictions(), combined, max_leaves=8)


class TestGenerated:
    """Properties over generated filters and arbitrary text."""

    @settings(max_examples=300, deadline=None)
    @given(filters)
    def test_rendered_trees_parse_back(self, case: tuple[str, Node]) -> None:
        """Any tree, written out with quotes, escapes and parentheses, parses back to itself."""
        text, tree = case
        assert parse_filter(text) == tree

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet="nameidcrt_ =!<>:\"\\*()-ANDORT' 2024-05T:Z", max_size=60))
    def test_any_text_parses_or_says_where(self, text: str) -> None:
        """Arbitrary text either parses or fails with an InvalidField naming a position."""
        failure: InvalidField | None = None
        try:
            parse_filter(text)
        except InvalidField as exc:
            failure = exc
        if failure is not None:
            assert failure.field == "filter"
            assert failure.reason.startswith("at position ")
            position = int(failure.reason.removeprefix("at position ").split(":")[0])
            assert 1 <= position <= len(text) + 1

    @settings(max_examples=500, deadline=None)
    @given(prefix=stored_text, rest=stored_text, extend=st.booleans())
    def test_prefix_range_is_exact(self, prefix: str, rest: str, extend: bool) -> None:
        """A string starts with a prefix exactly when it lies in the prefix's key range."""
        text = prefix + rest if extend else rest
        upper = prefix_upper_bound(prefix)
        in_range = prefix <= text and (upper is None or text < upper)
        assert in_range == text.startswith(prefix)

    def test_prefix_range_edges(self) -> None:
        """The highest code point carries over; the surrogate gap is stepped over."""
        assert prefix_upper_bound("ab") == "ac"
        assert prefix_upper_bound("a\U0010ffff") == "b"
        assert prefix_upper_bound("\U0010ffff") is None
        assert prefix_upper_bound("") is None
        assert prefix_upper_bound("\ud7ff") == "\ue000"


def test_default_query_is_creation_order() -> None:
    """The query of an empty filter and order_by is the listing before filters existed."""
    assert parse_query("", "").is_default
    assert Query() == parse_query(" ", "create_time")
    assert not parse_query("", "create_time desc").is_default
