"""A slice of the accuracy benchmark (tests/bench/bench_accuracy.py) as a test: correct when ok, never ok when wrong."""

import pytest
from bench.bench_accuracy import CATEGORIES, evaluate, make_case, run_autoreg, sources


@pytest.fixture(scope="module")
def pool():
    return sources()


@pytest.mark.parametrize("category", [c for c in CATEGORIES if c != "negative"])
def test_positive_cases_are_correct_and_ok(pool, category):
    cases = [make_case(category, i, pool) for i in range(2)]
    rows = evaluate(cases, {"autoreg": run_autoreg})["autoreg"]
    for row in rows:
        assert not row["crashed"], row
        if row["verdict"] == "ok":  # flag precision: ok means correct
            assert row["correct"], row
    if category != "cross_modal":  # the hard category may say low_confidence, never a wrong ok
        assert sum(r["correct"] for r in rows) >= 1, rows


def test_negative_cases_are_never_ok(pool):
    cases = [make_case("negative", i, pool) for i in range(3)]
    rows = evaluate(cases, {"autoreg": run_autoreg})["autoreg"]
    assert [r["verdict"] for r in rows if r["verdict"] == "ok"] == [], rows
