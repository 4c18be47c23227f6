"""The time budget: no strategy starts once it is spent, a running search stops, the reasons say so.

Time is scripted (``autoreg.budget.perf_counter`` replaced by a clock the test moves), so nothing here hangs on
how fast the machine is.
"""

import numpy as np
import pytest
from typer.testing import CliRunner

import autoreg
import autoreg.budget
from autoreg import pipeline
from autoreg.budget import Deadline, check_budget
from autoreg.cli import app
from autoreg.config import RegistrationConfig
from autoreg.errors import InputError, TimeBudgetExceeded
from autoreg.geometry import apply_matrix
from autoreg.search import search_similarity
from autoreg.synthetic import make_pair


class _Clock:
    """A clock that stands still unless moved, or moves ``step`` seconds at every reading."""

    def __init__(self, step: float = 0.0) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(autoreg.budget, "perf_counter", fake)
    return fake


def test_a_deadline_expires_when_its_budget_is_spent_and_never_without_one(clock):
    budget, unlimited = Deadline(2.0), Deadline(None)
    clock.now += 1.5
    assert not budget.expired() and budget.elapsed() == pytest.approx(1.5)
    budget.check("the search")  # within the budget: nothing happens
    clock.now += 1.0
    assert budget.expired()
    with pytest.raises(TimeBudgetExceeded, match=r"^time_budget: the search stopped at 2.50 s, the budget of 2 s"):
        budget.check("the search")
    clock.now += 1e6
    assert not unlimited.expired()
    unlimited.check("the search")


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf"), "soon"])
def test_a_budget_that_is_not_a_positive_finite_number_is_refused(seconds):
    with pytest.raises(InputError, match="time budget"):
        check_budget(seconds)
    with pytest.raises(InputError, match="time budget"):
        RegistrationConfig(time_budget_s=seconds)


def test_a_spent_budget_is_not_an_estimation_failure():
    """Code that falls back when an estimate fails must not take a spent budget for one."""
    assert not issubclass(TimeBudgetExceeded, autoreg.errors.EstimationError)
    assert check_budget(None) is None and check_budget(3) == 3.0


def test_the_search_stops_between_batches_once_the_deadline_has_expired(clock):
    pair = make_pair(seed=2, fixed_shape=(96, 96), moving_shape=(64, 64))
    free = search_similarity(pair.fixed, pair.moving, scale=1.0)
    within = search_similarity(pair.fixed, pair.moving, scale=1.0, deadline=Deadline(60.0))
    np.testing.assert_allclose(within.moving_to_fixed, free.moving_to_fixed, atol=1e-9)
    spent = Deadline(60.0)
    clock.now += 61.0
    with pytest.raises(TimeBudgetExceeded, match="the search stopped"):
        search_similarity(pair.fixed, pair.moving, scale=1.0, deadline=spent)


def _unrelated() -> tuple[np.ndarray, np.ndarray]:
    return make_pair(seed=4).fixed, np.random.default_rng(0).normal(size=(200, 200))


def test_no_strategy_starts_after_the_budget_but_the_first(monkeypatch):
    monkeypatch.setattr(autoreg.budget, "perf_counter", _Clock(step=1.0))  # one second per reading
    fixed, moving = _unrelated()
    result = autoreg.register(fixed, moving, config=RegistrationConfig(time_budget_s=0.5))
    assert [a.strategy for a in result.attempts] == ["features"]
    assert result.verdict.level == "failed"
    untried = ["features-gradient", "features-sift", "features-sift-mutual", "search"]
    assert result.extra["time_budget"] == {"seconds": 0.5, "stopped": [], "not_tried": untried}
    assert result.verdict.reasons[-1].startswith("time_budget: ")
    assert result.verdict.reasons[-1].endswith("not tried: " + ", ".join(untried))
    assert result.to_dict()["time_budget"]["not_tried"] == untried


def test_a_search_the_budget_stops_is_a_failed_attempt_and_named(clock, monkeypatch):
    real = pipeline.search_fit

    def slow(ctx, *args, **kwargs):
        clock.now += 100.0  # the budget runs out while the search sweeps
        return real(ctx, *args, **kwargs)

    monkeypatch.setattr(pipeline, "search_fit", slow)
    fixed, moving = _unrelated()
    result = autoreg.register(fixed, moving, config=RegistrationConfig(time_budget_s=50.0))
    search = result.attempts[-1]
    assert search.strategy == "search" and search.verdict == "failed"
    assert search.reasons[0].startswith("time_budget: the search stopped at 100.")
    assert result.extra["time_budget"]["stopped"] == ["search"]
    assert result.verdict.level == "failed" and "stopped: search" in result.verdict.reasons[-1]


def test_control_points_are_still_used_after_the_budget(monkeypatch):
    monkeypatch.setattr(autoreg.budget, "perf_counter", _Clock(step=1.0))
    pair = make_pair(seed=6)
    flat = np.ones((256, 256)) + np.linspace(0, 1e-6, 256)[None, :]
    moving_xy = np.array([[20.0, 30.0], [220.0, 40.0], [128.0, 200.0], [60.0, 150.0], [200.0, 220.0]])
    result = autoreg.register(pair.fixed, flat, model="affine", points=(apply_matrix(pair.moving_to_fixed, moving_xy),
                                                                          moving_xy),
                              config=RegistrationConfig(time_budget_s=0.5))
    assert [a.strategy for a in result.attempts] == ["features", "points"]
    assert result.source == "points" and result.verdict.level != "failed"
    np.testing.assert_allclose(result.fit.matrix, pair.moving_to_fixed, atol=1e-6)


def test_a_budget_that_is_not_spent_changes_nothing():
    pair = make_pair(seed=3)
    free = autoreg.register(pair.fixed, pair.moving)
    budgeted = autoreg.register(pair.fixed, pair.moving, config=RegistrationConfig(time_budget_s=3600.0))
    assert budgeted.verdict == free.verdict and budgeted.model == free.model
    np.testing.assert_allclose(budgeted.matrix, free.matrix, atol=1e-9)
    assert budgeted.extra["time_budget"] == {"seconds": 3600.0, "stopped": [], "not_tried": []}
    assert "time_budget" not in free.extra


@pytest.mark.parametrize("command", ["register", "batch"])
@pytest.mark.parametrize("seconds", ["0", "-2", "nan"])
def test_the_cli_refuses_a_bad_budget_in_one_line_before_any_work(command, seconds, tmp_path):
    pair = make_pair(seed=21, fixed_shape=(96, 96), moving_shape=(80, 80))
    np.save(tmp_path / "fixed.npy", pair.fixed)
    np.save(tmp_path / "moving.npy", pair.moving)
    before = sorted(p.name for p in tmp_path.iterdir())
    if command == "register":
        args = ["register", tmp_path / "fixed.npy", tmp_path / "moving.npy", "--out", tmp_path / "w.npy"]
    else:
        args = ["batch", tmp_path / "moving.npy", "--reference", tmp_path / "fixed.npy", "--out-dir", tmp_path / "b"]
    done = CliRunner().invoke(app, [str(a) for a in args] + ["--time-budget", seconds])
    assert done.exit_code == 2, done.output
    assert len(done.stderr.strip().splitlines()) == 1 and "time budget" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_cli_reports_the_budget_in_its_json(tmp_path):
    import json

    pair = make_pair(seed=21, fixed_shape=(160, 160), moving_shape=(128, 128))
    np.save(tmp_path / "fixed.npy", pair.fixed)
    np.save(tmp_path / "moving.npy", pair.moving)
    done = CliRunner().invoke(app, ["register", str(tmp_path / "fixed.npy"), str(tmp_path / "moving.npy"), "--json",
                                    "--time-budget", "3600"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["time_budget"] == {"seconds": 3600.0, "stopped": [], "not_tried": []}


def test_a_batch_passes_its_budget_to_every_item(tmp_path):
    import json

    pair = make_pair(seed=21, fixed_shape=(160, 160), moving_shape=(128, 128))
    np.save(tmp_path / "fixed.npy", pair.fixed)
    np.save(tmp_path / "moving.npy", pair.moving)
    done = CliRunner().invoke(app, ["batch", str(tmp_path / "moving.npy"), "--reference", str(tmp_path / "fixed.npy"),
                                    "--out-dir", str(tmp_path / "out"), "--workers", "1", "--time-budget", "3600"])
    assert done.exit_code == 0, done.output
    (item,) = sorted((tmp_path / "out").glob("0*_*.json"))
    assert json.loads(item.read_text())["time_budget"]["seconds"] == 3600.0
