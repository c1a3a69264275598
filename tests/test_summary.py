"""Facts as the on-call engineer reads them in the audit trail, the report and the UI."""

from __future__ import annotations

from remedium.summary import fact_brief


def test_a_fact_reads_as_one_line_with_short_values_inline() -> None:
    fact = {
        "count": 2,
        "max": 8280.0,
        "by": {"replica-1": 240.0, "replica-2": 8280.0},
        "breached": True,
        "lines": ["connection timeout to source DB replica-2"],
        "message": None,
    }
    assert fact_brief(fact) == (
        "count=2 max=8280 by={replica-1: 240, replica-2: 8280} breached=True "
        "lines=[connection timeout to source DB replica-2]"
    )


def test_long_or_nested_values_are_counted_in_plain_english() -> None:
    fact = {
        "series": [{"replica": "replica-1"}],
        "conditions": [{"type": "Failed"}, {"type": "Complete"}],
        "extract": {"replica": {"first": "replica-2"}},
        "labels": {str(i): i for i in range(6)},
    }
    assert fact_brief(fact) == "series=[1 item] conditions=[2 items] extract={1 key} labels={6 keys}"


def test_a_long_fact_is_cut_with_an_ellipsis() -> None:
    text = fact_brief({"message": "x" * 500}, limit=40)
    assert text == "message=" + "x" * 32 + "…"


def test_multi_line_text_stays_on_one_line() -> None:
    fact = {"pod": "api-1", "text": "starting api\nfatal: pool exhausted\n"}
    assert fact_brief(fact) == "pod=api-1 text=starting api ⏎ fatal: pool exhausted"
