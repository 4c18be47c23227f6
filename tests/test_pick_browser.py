"""``autoreg pick`` end to end in headless Chromium (Debian's ``chromium``, driven by Playwright).

One browser for the module. Locally the tests skip with the reason when Chromium or Playwright is missing; with
``CI=true`` they fail instead, so CI cannot pass without running them. Playwright never downloads a browser here:
it launches the system's ``chromium`` through ``executable_path``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from autoreg.fixture import TOPOGRAPHY, Z_CONTRAST, load_truth
from autoreg.geometry import mean_grid_distance
from autoreg.io import POINTS_HEADER, load_image, write_coordinate_table
from autoreg.synthetic import true_moving_to_fixed

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "stm_sts.h5")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if shutil.which("chromium") is None:
        return "no chromium on PATH (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")),
                                                   executable_path=shutil.which("chromium"), headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 850},
                                                   bypass_csp=True)  # Playwright's waits evaluate strings
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def fixture_images():
    return (load_image(f"{FIXTURE}::{TOPOGRAPHY}"), load_image(f"{FIXTURE}::{Z_CONTRAST}"))


@pytest.fixture(scope="module")
def truth():
    return load_truth(FIXTURE)


@pytest.fixture()
def serve(fixture_images):
    from autoreg.picker.api import start

    handles = []

    def run(**kw):
        handle = start(*fixture_images, **kw)
        handles.append(handle)
        return handle

    yield run
    for handle in handles:
        handle.stop()


@pytest.fixture()
def page(context):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    page.close()
    assert not errors, errors


def _open(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready=true][data-revision]", timeout=30_000)
    return _state(page)


def _state(page):
    return page.evaluate("window.autoreg.state")


def _after(page, revision: int, action) -> dict:
    """Do ``action`` and wait for the page to show a newer state."""
    action()
    page.wait_for_function(f"Number(document.body.dataset.revision) > {revision}", timeout=60_000)
    return _state(page)


def _click_image(page, side, x, y, **kw):
    cx, cy = page.evaluate("([s, x, y]) => window.autoreg.clientXY(s, x, y)", [side, x, y])
    page.mouse.click(cx, cy, **kw)


def _true_moving(fixed_xy, truth):
    """Invert the fixture's exact map (affine + creep) by fixed-point iteration."""
    inverse = np.linalg.inv(truth.matrix)
    moving = np.array(fixed_xy, float).reshape(1, 2) @ inverse[:2, :2].T + inverse[:2, 2]
    for _ in range(50):
        error = true_moving_to_fixed(moving, truth) - np.asarray(fixed_xy, float)
        moving = moving - error @ inverse[:2, :2].T
    return moving[0]


def test_suggestions_appear_and_saving_them_reproduces_the_automatic_transform(page, serve, tmp_path,
                                                                                fixture_images):
    import autoreg

    out = tmp_path / "points.csv"
    handle = serve(out=out)
    state = _open(page, handle.url)
    n = len(state["pairs"])
    assert n >= 8 and all(p["status"] == "suggested" for p in state["pairs"])
    assert page.locator("#pairs tbody tr[data-status=suggested]").count() == n
    state = _after(page, state["revision"], lambda: page.keyboard.press("Shift+A"))
    assert state["n_accepted"] == n and page.locator("#verdict").inner_text() == "ok"
    page.click("#save")
    page.wait_for_function("window.autoreg.lastSave !== null")
    assert page.evaluate("window.autoreg.lastSave.saved") == n
    result = autoreg.register(*fixture_images, points=str(out), automatic=False)
    automatic = handle.session.automatic
    assert result.verdict.level == "ok"
    distance = mean_grid_distance(result.fit.to_fixed, automatic.fit.to_fixed, fixture_images[1].shape)
    assert distance < 5.0, distance  # fixed px: a fifth of a map pixel


def test_a_click_predicts_its_partner_within_half_a_map_pixel(page, serve, truth):
    handle = serve()
    state = _open(page, handle.url)
    state = _after(page, state["revision"], lambda: page.click("#accept-all"))
    target = true_moving_to_fixed(np.array([[23.3, 16.6]]), truth)[0]
    state = _after(page, state["revision"], lambda: _click_image(page, "fixed", *target))
    pair = state["pairs"][-1]
    assert pair["status"] == "accepted" and pair["moving_xy"] is not None, pair
    error = np.hypot(*(np.array(pair["moving_xy"]) - _true_moving(pair["fixed_xy"], truth)))
    assert error <= 0.5, (error, pair)
    assert pair["loo_px"] is not None


def test_a_planted_bad_pair_is_flagged_and_the_verdict_flips_when_deleted(page, serve, truth, tmp_path):
    rng = np.random.default_rng(4)
    moving = rng.uniform(3, 36, (16, 2))
    fixed = true_moving_to_fixed(moving, truth) + rng.normal(0, 2.0, (16, 2))
    moving[6] += (5.0, -4.0)  # a misclick six map pixels off
    write_coordinate_table(tmp_path / "seed.csv", POINTS_HEADER, np.hstack([fixed, moving]))
    handle = serve(points=tmp_path / "seed.csv", model="affine", automatic=False)
    state = _open(page, handle.url)
    assert page.locator("#verdict").inner_text() == "low_confidence"
    flagged = page.locator("#pairs tbody tr[data-outlier=true]")
    assert flagged.count() == 1 and flagged.get_attribute("data-id") == "7"
    assert "outlier" in flagged.inner_text()
    state = _after(page, state["revision"], lambda: flagged.locator("button.delete").click())
    assert page.locator("#verdict").inner_text() == "ok"
    assert page.locator("#pairs tbody tr[data-outlier=true]").count() == 0
    assert len(state["pairs"]) == 15


def test_keys_delete_undo_redo_drag_and_the_help_panel(page, serve):
    handle = serve()
    state = _open(page, handle.url)
    before = [p["id"] for p in state["pairs"]]
    page.keyboard.press("n")  # select the first pair
    page.keyboard.press("n")
    state = _after(page, state["revision"], lambda: page.keyboard.press("d"))
    assert [p["id"] for p in state["pairs"]] == [i for i in before if i != before[1]]
    state = _after(page, state["revision"], lambda: page.keyboard.press("u"))
    assert [p["id"] for p in state["pairs"]] == before
    state = _after(page, state["revision"], lambda: page.keyboard.press("Control+y"))
    assert len(state["pairs"]) == len(before) - 1
    target = state["pairs"][0]
    x0, y0 = page.evaluate("([s, x, y]) => window.autoreg.clientXY(s, x, y)", ["moving", *target["moving_xy"]])
    scale = page.evaluate("window.autoreg.views.moving.s")  # screen px per moving px

    def shift_drag():
        page.keyboard.down("Shift")
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 10, y0 + 5, steps=5)
        page.mouse.move(x0 + 20, y0 + 10, steps=5)
        page.mouse.up()
        page.keyboard.up("Shift")

    state = _after(page, state["revision"], shift_drag)  # Shift: move without refinement
    moved = next(p for p in state["pairs"] if p["id"] == target["id"])
    assert moved["status"] == "accepted" and moved["note"] == "kept"
    expected = np.array(target["moving_xy"]) + np.array([20, 10]) / scale
    assert np.hypot(*(np.array(moved["moving_xy"]) - expected)) < 1.5 / scale  # mouse events land on whole px
    page.keyboard.press("?")
    assert page.locator("#help").is_visible() and "undo" in page.locator("#help").inner_text()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    for key in ("t", "o", "o", "t", "f"):  # flicker and overlays draw without errors
        page.keyboard.press(key)
    page.wait_for_timeout(200)


def test_a_reload_and_a_new_session_resume_the_autosave(page, serve, tmp_path):
    out = tmp_path / "points.csv"
    handle = serve(out=out)
    state = _open(page, handle.url)
    state = _after(page, state["revision"], lambda: page.keyboard.press("Shift+A"))
    page.keyboard.press("n")
    state = _after(page, state["revision"], lambda: page.keyboard.press("Delete"))
    ids = [p["id"] for p in state["pairs"]]
    page.reload()
    page.wait_for_selector("body[data-ready=true][data-revision]")
    assert [p["id"] for p in _state(page)["pairs"]] == ids
    handle.stop()
    again = serve(out=out)
    assert any("resuming" in note for note in again.notes)
    state = _open(page, again.url)
    assert [p["id"] for p in state["pairs"]] == ids and state["n_accepted"] == len(ids) and state["can_undo"]


def test_a_request_without_the_token_is_refused(page, serve):
    handle = serve(automatic=False, points=(np.array([[500.0, 500.0]]), np.array([[20.0, 20.0]])))
    base = handle.url.split("?")[0]
    response = page.goto(base)
    assert response.status == 403 and "token" in page.content()
    response = page.goto(base + "api/state?token=wrong")
    assert response.status == 403
    _open(page, handle.url)
    status = page.evaluate("fetch('/api/state').then(r => r.status)")  # the page's own fetch, token left out
    assert status == 403
