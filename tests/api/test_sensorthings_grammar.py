"""The query options' documented grammar is what the parser reads: every $filter, $orderby, $select and $expand that
matches the regular expression of the OpenAPI document parses (no 400 for a value the document allows), and values
outside it are refused with the option named. No broker: the parser alone."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.sensorthings.model import ALL_NAVIGATIONS
from api.sensorthings.odata import (
    FILTER_PATTERN,
    ORDER_PATTERN,
    SELECT_PATTERN,
    ODataError,
    evaluate,
    expand_pattern,
    options,
    parse_filter,
)

FAST = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))  # $expand's pattern is ~6 kB


@FAST
@given(st.from_regex(FILTER_PATTERN, fullmatch=True))
def test_every_documented_filter_parses_and_evaluates(text: str) -> None:
    node = parse_filter(text)
    evaluate(node, {"x": 1}, lambda e, path: e.get(path[0]) if isinstance(e, dict) else None)


@FEW
@given(st.from_regex(expand_pattern(ALL_NAVIGATIONS), fullmatch=True))
def test_every_documented_expand_parses(text: str) -> None:
    options({"$expand": text}, ALL_NAVIGATIONS)


@FAST
@given(st.from_regex(ORDER_PATTERN, fullmatch=True), st.from_regex(SELECT_PATTERN, fullmatch=True))
def test_every_documented_orderby_and_select_parses(order: str, select: str) -> None:
    options({"$orderby": order, "$select": select}, ALL_NAVIGATIONS)


@pytest.mark.parametrize(("option", "value"), [
    ("$filter", "result gt"), ("$filter", "result gt 1 and"), ("$filter", "(result gt 1"), ("$filter", "result >= 1"),
    ("$orderby", "name up"), ("$select", "a;b"), ("$expand", "Things($top=x)"), ("$top", "-1"), ("$count", "yes")])
def test_values_outside_the_grammar_are_refused_naming_the_option(option: str, value: str) -> None:
    assert not (option == "$filter" and re.fullmatch(FILTER_PATTERN, value))
    with pytest.raises(ODataError, match=re.escape(option)):
        options({option: value}, ALL_NAVIGATIONS)
