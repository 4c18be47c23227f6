"""``autoreg.pick`` from Python: returns the points when the user finishes; a handle when not blocking."""

import json
import threading
import urllib.request

import numpy as np
import pytest
from numpy.testing import assert_allclose
from pick_support import good_points, images

import autoreg
from autoreg.errors import InputError


def _finish(url):
    base, token = url.split("/?token=")
    for path, body in (("/api/action", {"op": "accept_all"}), ("/api/save", {"finish": True})):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"X-Autoreg-Token": token})
        with urllib.request.urlopen(request, timeout=60) as r:
            json.loads(r.read())


def test_pick_is_the_function_even_after_the_command_line_is_imported():
    import autoreg.cli

    assert callable(autoreg.pick) and autoreg.pick.__module__ == "autoreg.picker.api"


def test_pick_without_blocking_returns_a_handle(tmp_path):
    fixed, moving = images()
    fixed_xy, moving_xy = good_points(6)
    handle = autoreg.pick(fixed, moving, points=(fixed_xy, moving_xy), show="none", block=False, automatic=False,
                          out=tmp_path / "p.csv")
    try:
        assert handle.url.startswith("http://127.0.0.1:") and not handle.finished
        got_fixed, got_moving = handle.points()
        assert_allclose(got_fixed, fixed_xy) and assert_allclose(got_moving, moving_xy)
        _finish(handle.url)
        assert handle.wait(10) and handle.finished and (tmp_path / "p.csv").exists()
    finally:
        handle.stop()


def test_pick_blocks_until_finished_and_returns_the_accepted_points(monkeypatch):
    fixed, moving = images()
    started = {}
    from autoreg.picker import api

    real_start = api.start

    def spy(*args, **kw):
        started["handle"] = real_start(*args, **kw)
        return started["handle"]

    monkeypatch.setattr(api, "start", spy)
    result = {}
    worker = threading.Thread(target=lambda: result.update(points=autoreg.pick(fixed, moving, show="none")))
    worker.start()
    for _ in range(600):
        if "handle" in started:
            break
        worker.join(0.1)
    _finish(started["handle"].url)
    worker.join(60)
    fixed_xy, moving_xy = result["points"]
    assert fixed_xy.shape == moving_xy.shape and len(fixed_xy) >= 6
    assert np.all(np.isfinite(fixed_xy))


def test_bad_input_raises_before_serving():
    fixed, moving = images()
    with pytest.raises(InputError, match="Unknown model"):
        autoreg.pick(fixed, moving, model="wobbly", show="none")
    with pytest.raises(InputError, match="outside the fixed image"):
        autoreg.pick(fixed, moving, points=(np.array([[900.0, 5.0]]), np.array([[5.0, 5.0]])), show="none")
