"""Conditional requests (RFC 9110 §13): the evaluation order of §13.2.2, each field's
comparison rules, and that no header value a client can send makes `evaluate` raise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.http.conditional import EntityTag, Outcome, Validators, evaluate, parse_etags, parse_http_date

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sat, 05 Nov 1994 08:49:37 GMT"
LATER = "Mon, 07 Nov 1994 08:49:37 GMT"
CURRENT = Validators.of([("ETag", '"sha256:abc"'), ("Last-Modified", LAST_MODIFIED)])


def run(*headers: tuple[str, str], method: str = "GET", validators: Validators = CURRENT) -> Outcome:
    return evaluate(method, [(name.lower(), value) for name, value in headers], validators)


def test_validators_are_read_from_the_response() -> None:
    assert CURRENT.etag == EntityTag(opaque="sha256:abc")
    assert CURRENT.last_modified == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    assert Validators.of([("etag", 'W/"x"')]).etag == EntityTag(opaque="x", weak=True)
    assert Validators.of([("ETag", "unquoted"), ("Last-Modified", "yesterday")]) == Validators()


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ('"sha256:abc"', Outcome.NOT_MODIFIED),
        ('W/"sha256:abc"', Outcome.NOT_MODIFIED),  # §13.1.2: weak comparison
        ('"other", "sha256:abc"', Outcome.NOT_MODIFIED),
        ('"other",,  W/"sha256:abc" ,', Outcome.NOT_MODIFIED),  # empty list elements are ignored
        ("*", Outcome.NOT_MODIFIED),
        ('"other"', Outcome.PROCEED),
        ('"sha256:abc', Outcome.PROCEED),  # unparsable: matches nothing
        ("sha256:abc", Outcome.PROCEED),
        ("", Outcome.PROCEED),
    ],
)
def test_if_none_match(value: str, outcome: Outcome) -> None:
    assert run(("If-None-Match", value)) == outcome
    assert run(("If-None-Match", value), method="HEAD") == outcome


def test_if_none_match_over_several_lines_and_with_commas_inside_tags() -> None:
    assert run(("If-None-Match", '"a"'), ("If-None-Match", '"sha256:abc"')) == Outcome.NOT_MODIFIED
    comma = Validators.of([("ETag", '"a,b"')])
    assert run(("If-None-Match", '"a,b"'), validators=comma) == Outcome.NOT_MODIFIED
    assert run(("If-None-Match", '"a"'), validators=comma) == Outcome.PROCEED


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (LAST_MODIFIED, Outcome.NOT_MODIFIED),
        (LATER, Outcome.NOT_MODIFIED),
        (EARLIER, Outcome.PROCEED),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Outcome.NOT_MODIFIED),  # RFC 850 form
        ("Sun Nov  6 08:49:37 1994", Outcome.NOT_MODIFIED),  # asctime form
        ("not a date", Outcome.PROCEED),
        ("Mon, 99 Foo 99999 99:99:99 GMT", Outcome.PROCEED),
        ("Sun, 06 Nov 99999 08:49:37 GMT", Outcome.PROCEED),
    ],
)
def test_if_modified_since(value: str, outcome: Outcome) -> None:
    assert run(("If-Modified-Since", value)) == outcome


def test_if_modified_since_is_ignored_when_it_cannot_apply() -> None:
    # §13.2.2 step 4: only without If-None-Match.
    assert run(("If-None-Match", '"other"'), ("If-Modified-Since", LATER)) == Outcome.PROCEED
    # §13.1.3: only for GET and HEAD, and only with one member.
    assert run(("If-Modified-Since", LATER), method="POST") == Outcome.PROCEED
    assert run(("If-Modified-Since", LATER), ("If-Modified-Since", LATER)) == Outcome.PROCEED
    # Nothing to compare with.
    assert run(("If-Modified-Since", LATER), validators=Validators()) == Outcome.PROCEED


def test_if_match_and_if_unmodified_since_fail_with_412() -> None:
    assert run(("If-Match", '"sha256:abc"')) == Outcome.PROCEED
    assert run(("If-Match", "*")) == Outcome.PROCEED
    assert run(("If-Match", '"other"')) == Outcome.PRECONDITION_FAILED
    assert run(("If-Match", 'W/"sha256:abc"')) == Outcome.PRECONDITION_FAILED  # strong comparison
    assert run(("If-Unmodified-Since", EARLIER)) == Outcome.PRECONDITION_FAILED
    assert run(("If-Unmodified-Since", LAST_MODIFIED)) == Outcome.PROCEED
    # §13.2.2 step 2 runs only without If-Match; step 1 comes before step 3.
    assert run(("If-Match", '"sha256:abc"'), ("If-Unmodified-Since", EARLIER)) == Outcome.PROCEED
    assert run(("If-Match", '"other"'), ("If-None-Match", '"sha256:abc"')) == Outcome.PRECONDITION_FAILED


def test_if_none_match_on_an_unsafe_method_is_a_failed_precondition() -> None:
    assert run(("If-None-Match", "*"), method="DELETE") == Outcome.PRECONDITION_FAILED


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ('"sha256:abc"', Outcome.PROCEED),
        ('"sha256:old"', Outcome.IGNORE_RANGE),
        ('W/"sha256:abc"', Outcome.IGNORE_RANGE),  # §13.1.5: a weak tag never matches
        (LAST_MODIFIED, Outcome.PROCEED),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Outcome.PROCEED),
        (LATER, Outcome.IGNORE_RANGE),  # only an exact date holds
        (EARLIER, Outcome.IGNORE_RANGE),
        ("garbage", Outcome.IGNORE_RANGE),
        ('"sha256:abc", "other"', Outcome.IGNORE_RANGE),  # one validator, not a list
    ],
)
def test_if_range(value: str, outcome: Outcome) -> None:
    assert run(("Range", "bytes=0-1"), ("If-Range", value)) == outcome


def test_if_range_needs_a_range_a_get_and_a_strong_current_tag() -> None:
    assert run(("If-Range", '"sha256:old"')) == Outcome.PROCEED  # §13.1.5: ignored without Range
    assert run(("Range", "bytes=0-1"), ("If-Range", '"sha256:old"'), method="HEAD") == Outcome.PROCEED
    weak = Validators.of([("ETag", 'W/"sha256:abc"')])
    assert run(("Range", "bytes=0-1"), ("If-Range", '"sha256:abc"'), validators=weak) == Outcome.IGNORE_RANGE
    assert run(("Range", "bytes=0-1"), ("If-Range", LAST_MODIFIED), validators=weak) == Outcome.IGNORE_RANGE
    both = [("Range", "bytes=0-1"), ("If-Range", '"sha256:abc"'), ("If-Range", '"sha256:abc"')]
    assert run(*both) == Outcome.IGNORE_RANGE


def test_not_modified_beats_if_range() -> None:
    assert run(("If-None-Match", "*"), ("Range", "bytes=0-1"), ("If-Range", '"old"')) == Outcome.NOT_MODIFIED


def test_parsers() -> None:
    assert parse_etags('"a", W/"b"') == [EntityTag(opaque="a"), EntityTag(opaque="b", weak=True)]
    assert parse_etags('""') == [EntityTag(opaque="")]
    assert parse_etags('"a" "b"') is None
    assert parse_etags('"a b"') is None  # SP is not an etagc
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 +0100") == datetime(1994, 11, 6, 7, 49, 37, tzinfo=UTC)
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 +9999") is None


_FIELD = st.sampled_from(
    ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "range", "x-other"]
)
_LATIN1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
_VALUE = st.one_of(
    _LATIN1,
    st.sampled_from(['"sha256:abc"', "*", 'W/"x"', LAST_MODIFIED, "bytes=0-1", '"', "W/", ",", "\x00"]),
)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    headers=st.lists(st.tuples(_FIELD, _VALUE), max_size=6),
    etag=st.one_of(st.none(), _VALUE),
    last_modified=st.one_of(st.none(), _VALUE),
)
def test_no_header_value_makes_evaluate_raise(
    method: str, headers: list[tuple[str, str]], etag: str | None, last_modified: str | None
) -> None:
    response = [("ETag", etag)] if etag is not None else []
    response += [("Last-Modified", last_modified)] if last_modified is not None else []
    outcome = evaluate(method, headers, Validators.of(response))
    assert isinstance(outcome, Outcome)
    if not any(name.startswith("if-") for name, _ in headers):
        assert outcome is Outcome.PROCEED
