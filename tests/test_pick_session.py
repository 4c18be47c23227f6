"""The picking session without a browser: edits, prediction, refinement, residuals, verdict, undo, autosave."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from pick_support import good_points, images, to_fixed, to_moving

from autoreg.errors import InputError
from autoreg.io import load_points
from autoreg.picker.pairs import (
    ACCEPTED,
    SUGGESTED,
    Pair,
    autosave_path,
    read_autosave,
    seeds_from_points,
    seeds_from_result,
)
from autoreg.picker.session import Session


def _session(tmp_path=None, **kw):
    fixed, moving = images()
    autosave = None if tmp_path is None else autosave_path(tmp_path / "points.csv")
    return Session(fixed, moving, autosave=autosave, **kw)


def _by_id(session, pair_id):
    return next(p for p in session.pairs if p.id == pair_id)


def test_a_click_predicts_its_partner_and_refinement_lands_on_the_truth():
    fixed_xy, moving_xy = good_points(5)
    session = _session(seeds=seeds_from_points(fixed_xy + 2.0, moving_xy))  # a little off: prediction only
    target = np.array([[15.0, 12.0]])
    pair = session.add(fixed_xy=to_fixed(target)[0])
    assert pair.complete and pair.status == ACCEPTED and pair.note.startswith("predicted")
    assert np.hypot(*(np.array(pair.moving_xy) - target[0])) <= 0.5
    assert_allclose(pair.fixed_xy, to_fixed(target)[0])  # the finer image's click is the anchor


def test_a_clicked_pair_is_refined_to_within_half_a_map_pixel():
    session = _session()
    truth = np.array([16.0, 14.0])
    first = session.add(fixed_xy=to_fixed([5.0, 5.0])[0], moving_xy=(5.5, 4.0))
    assert not first.refined and first.note.startswith("unrefined")  # no rotation known yet: keep the click
    session.add(fixed_xy=to_fixed([25.0, 8.0])[0], moving_xy=(25.0, 8.0), refine=False)
    pair = session.add(fixed_xy=to_fixed(truth)[0], moving_xy=truth + (1.5, -2.0))
    assert pair.refined and pair.note == "refined" and pair.correlation > 0.8
    assert np.hypot(*(np.array(pair.moving_xy) - truth)) <= 0.5
    kept = session.add(fixed_xy=to_fixed(truth + 5)[0], moving_xy=truth + 6.5, refine=False)
    assert not kept.refined and kept.note == "kept" and kept.moving_xy == tuple(truth + 6.5)


def test_without_a_model_a_click_waits_for_its_partner():
    session = _session()
    half = session.add(moving_xy=(10.0, 10.0))
    assert not half.complete and half.fixed_xy is None
    done = session.move(half.id, "fixed", to_fixed([10.0, 10.0])[0])
    assert done.complete


def test_undo_redo_restore_every_change_and_a_new_edit_clears_redo():
    fixed_xy, moving_xy = good_points(6)
    session = _session(seeds=seeds_from_points(fixed_xy, moving_xy))
    before = session.pairs
    session.delete(3)
    assert 3 not in [p.id for p in session.pairs]
    assert session.undo() and session.pairs == before
    assert session.redo() and 3 not in [p.id for p in session.pairs]
    session.undo()
    session.add(fixed_xy=(100.0, 100.0), moving_xy=(6.0, 6.0), refine=False)
    assert not session.redo()
    assert session.undo() and session.pairs == before and not session.undo()  # the undone delete is gone
    assert not _session().undo()


def test_accept_and_accept_all_and_what_saving_writes(tmp_path):
    fixed_xy, moving_xy = good_points(6)
    seeds = [Pair(id=i + 1, fixed_xy=tuple(f), moving_xy=tuple(m), status=SUGGESTED)
             for i, (f, m) in enumerate(zip(fixed_xy, moving_xy))]
    session = _session(seeds=seeds)
    assert len(session.points()[0]) == 0
    with pytest.raises(InputError, match="Nothing to save"):
        session.save(tmp_path / "p.csv")
    session.accept(2)
    assert _by_id(session, 2).status == ACCEPTED and len(session.points()[0]) == 1
    session.accept_all()
    assert all(p.status == ACCEPTED for p in session.pairs)
    assert session.save(tmp_path / "p.csv") == 6
    got_fixed, got_moving = load_points(tmp_path / "p.csv")
    assert_allclose(got_fixed, fixed_xy, atol=1e-6) and assert_allclose(got_moving, moving_xy, atol=1e-6)


def test_every_pair_has_a_loo_residual_and_a_misclick_is_named_then_the_verdict_flips():
    fixed_xy, moving_xy = good_points(16)
    fixed_xy = fixed_xy + np.random.default_rng(1).normal(0, 2.0, fixed_xy.shape)  # clicks to ~1/8 map px
    bad = moving_xy.copy()
    bad[4] += (4.0, -3.0)  # five map pixels off
    session = _session(seeds=seeds_from_points(fixed_xy, bad), model="affine")
    state = session.state()
    assert state["judged"]["verdict"] == "low_confidence", state["judged"]
    assert any(r.startswith("imprecise") for r in state["judged"]["reasons"]), state["judged"]["reasons"]
    flagged = [p["id"] for p in state["pairs"] if p["outlier"]]
    assert flagged == [5]
    assert all(p["loo_px"] is not None for p in state["pairs"])
    session.delete(5)
    state = session.state()
    assert state["judged"]["verdict"] == "ok", state["judged"]
    assert not any(p["outlier"] for p in state["pairs"])
    assert state["judged"]["model"] == "affine" and state["judged"]["uncertainty_px"] > 0


def test_the_verdict_is_registers_own():
    import autoreg

    fixed_xy, moving_xy = good_points(8)
    fixed, moving = images()
    session = _session(seeds=seeds_from_points(fixed_xy, moving_xy))
    expected = autoreg.register(fixed, moving, points=(fixed_xy, moving_xy), automatic=False).to_dict()
    judged = session.state()["judged"]
    assert (judged["verdict"], judged["model"], judged["reasons"]) == (expected["verdict"], expected["model"],
                                                                       expected["reasons"])
    assert judged["uncertainty_px"] == pytest.approx(expected["uncertainty_px"])


def test_too_few_or_collinear_points_say_why_instead_of_a_verdict():
    session = _session(model="affine", seeds=seeds_from_points(*good_points(2)))
    judged = session.state()["judged"]
    assert judged["verdict"] is None and "needs at least 3" in judged["message"]


def test_autosave_after_every_change_and_resume(tmp_path):
    fixed_xy, moving_xy = good_points(6)
    session = _session(tmp_path, seeds=seeds_from_points(fixed_xy, moving_xy))
    path = autosave_path(tmp_path / "points.csv")
    assert path.name == "points.csv.pick.json" and path.exists()
    session.delete(2)
    session.add(fixed_xy=to_fixed([20.0, 20.0])[0], moving_xy=(20.3, 19.6), refine=False)
    saved = json.loads(path.read_text())
    assert [p["id"] for p in saved["pairs"]] == [p.id for p in session.pairs]
    fixed, moving = images()
    resumed = Session(fixed, moving, resume=read_autosave(path, fixed.shape, moving.shape), autosave=path)
    assert resumed.pairs == session.pairs
    assert resumed.undo() and resumed.undo() and len(resumed.pairs) == 6  # the history comes back too
    assert resumed.next_id > max(p.id for p in session.pairs)


def test_a_session_file_for_other_images_or_not_ours_is_refused(tmp_path):
    _session(tmp_path, seeds=seeds_from_points(*good_points(4)))
    path = autosave_path(tmp_path / "points.csv")
    with pytest.raises(InputError, match="was made for images of"):
        read_autosave(path, (100, 100), (32, 32))
    path.write_text("{not json")
    with pytest.raises(InputError, match="Cannot read the session file"):
        read_autosave(path, (512, 512), (32, 32))
    path.write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not an autoreg pick session"):
        read_autosave(path, (512, 512), (32, 32))


def test_points_outside_an_image_or_malformed_are_refused():
    session = _session()
    with pytest.raises(InputError, match="outside the moving image"):
        session.add(moving_xy=(40.0, 3.0))
    with pytest.raises(InputError, match="two numbers"):
        session.add(fixed_xy=("a", 3))
    with pytest.raises(InputError, match="No pair"):
        session.delete(99)
    with pytest.raises(InputError, match="fixed or a moving point"):
        session.add()


def test_seeds_from_the_automatic_attempt_are_spread_suggestions():
    import autoreg

    fixed, moving = images()
    result = autoreg.register(fixed, moving)
    assert result.verdict.level == "ok"
    seeds = seeds_from_result(result, limit=10)
    assert len(seeds) == min(10, result.fit.n_inliers) and all(s.status == SUGGESTED for s in seeds)
    inliers = result.fit.matches.fixed_xy[result.fit.inliers]
    assert all(any(np.allclose(s.fixed_xy, f) for f in inliers) for s in seeds)
    errors = [np.hypot(*(np.array(s.moving_xy) - to_moving(s.fixed_xy)[0])) for s in seeds]
    assert max(errors) < 1.0
    failed = autoreg.register(np.random.default_rng(0).normal(size=(64, 64)), moving)
    if failed.verdict.level == "failed":
        assert seeds_from_result(failed) == []


@pytest.mark.parametrize("model", ["polynomial", "piecewise-affine"])
def test_non_global_models_predict_everywhere_and_name_no_exact_point(model):
    session = _session(model=model, seeds=seeds_from_points(*good_points(10)))
    corner = session.add(moving_xy=(1.0, 30.0))  # outside the points' mesh: an affine guess predicts it
    assert corner.complete and corner.note.startswith("predicted")
    state = session.state()
    assert state["judged"]["model"] == model
    assert not any(p["outlier"] for p in state["pairs"]), [(p["id"], p["loo_px"]) for p in state["pairs"]]


def test_the_clicks_are_refined_with_the_contrast_polarity_not_the_raw_sign():
    """A crop whose scan has a tilt the fixed scan lacks anti-correlates raw (r < 0) though its contrast is the same:
    the local correlations refining clicks must not be inverted for it."""
    import autoreg
    from autoreg.datatypes import Image
    from autoreg.synthetic import make_pair

    pair = make_pair(seed=1, fixed_shape=(256, 256), moving_shape=(200, 200))
    y, x = np.mgrid[:200, :200] / 199.0 - 0.5
    tilted = (pair.moving + float(np.std(pair.moving)) * (-30.0 * x + 4.0 * y**2)).astype(np.float32)
    automatic = autoreg.register(pair.fixed, tilted, rng=0)
    assert automatic.scores.pearson < -0.3 and not automatic.scores.inverted_contrast
    session = Session(Image(pair.fixed), Image(tilted), automatic=automatic)
    assert session._polarity() == 1
