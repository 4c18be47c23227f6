"""The picker's server without a browser: token, Origin and Host refusal, endpoints, images, saving."""

import json
import socket
import urllib.error
import urllib.request
from importlib import resources

import pytest
from pick_support import good_points, images

from autoreg.errors import InputError
from autoreg.io import load_points
from autoreg.picker.pairs import seeds_from_points
from autoreg.picker.server import PickApp, PickServer
from autoreg.picker.session import Session

PORT = 8123


@pytest.fixture()
def app(tmp_path):
    fixed, moving = images()
    session = Session(fixed, moving, seeds=seeds_from_points(*good_points(6)))
    return PickApp(session, port=PORT, out=tmp_path / "points.csv", token="secret-token")


def _headers(app, **extra):
    return {"Host": f"127.0.0.1:{PORT}", "X-Autoreg-Token": app.token, **extra}


def _post(app, path, obj, **headers):
    return app.handle("POST", path, _headers(app, **headers), json.dumps(obj).encode())


def test_requests_without_the_right_token_are_refused(app):
    for headers in ({"Host": f"127.0.0.1:{PORT}"}, {"Host": f"127.0.0.1:{PORT}", "X-Autoreg-Token": "wrong"}):
        for method, path in (("GET", "/"), ("GET", "/api/state"), ("GET", "/api/image/fixed.png"),
                             ("POST", "/api/action"), ("GET", "/app.js")):
            response = app.handle(method, path, headers, b'{"op": "undo"}')
            assert response.status == 403 and b"token" in response.body, (method, path)
    assert app.handle("GET", "/?token=secret-token", {"Host": f"127.0.0.1:{PORT}"}).status == 200
    assert app.handle("GET", "/api/state", _headers(app)).status == 200


def test_another_origin_or_host_is_refused(app):
    assert app.handle("GET", "/api/state", _headers(app, Origin="http://evil.example")).status == 403
    assert _post(app, "/api/action", {"op": "accept_all"}, Origin=f"http://127.0.0.1:{PORT + 1}").status == 403
    assert app.handle("GET", "/api/state", _headers(app, Host="evil.example:8123")).status == 403
    assert app.handle("GET", "/api/state", _headers(app, Origin=f"http://localhost:{PORT}")).status == 200
    assert _post(app, "/api/action", {"op": "undo"}, Origin=f"http://127.0.0.1:{PORT}").status == 200


def test_the_page_carries_its_token_and_fetches_nothing_from_outside(app):
    page = app.handle("GET", "/?token=secret-token", _headers(app)).body.decode()
    assert 'content="secret-token"' in page and "__AUTOREG_TOKEN__" not in page
    for name in ("index.html", "app.js", "style.css"):
        text = resources.files("autoreg.picker").joinpath("static", name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    response = app.handle("GET", "/", _headers(app))
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_state_actions_and_errors(app):
    state = json.loads(app.handle("GET", "/api/state", _headers(app)).body)
    assert len(state["pairs"]) == 6 and state["judged"]["verdict"] in ("ok", "low_confidence")
    state = json.loads(_post(app, "/api/action", {"op": "delete", "id": 2}).body)
    assert [p["id"] for p in state["pairs"]] == [1, 3, 4, 5, 6] and state["can_undo"]
    state = json.loads(_post(app, "/api/action", {"op": "undo"}).body)
    assert len(state["pairs"]) == 6 and state["can_redo"]
    state = json.loads(_post(app, "/api/action", {"op": "add", "fixed_xy": [250, 260]}).body)
    assert state["pairs"][-1]["moving_xy"] is not None  # predicted
    assert _post(app, "/api/action", {"op": "explode"}).status == 400
    assert app.handle("POST", "/api/action", _headers(app), b"{oops").status == 400
    assert _post(app, "/api/action", {"op": "add", "moving_xy": [99, 99]}).status == 400
    assert app.handle("GET", "/nothing", _headers(app)).status == 404


def test_images_are_png(app):
    for name in ("fixed.png", "moving.png", "warped.png"):
        response = app.handle("GET", f"/api/image/{name}", _headers(app))
        assert response.status == 200 and response.body[:8] == b"\x89PNG\r\n\x1a\n", name
    assert app.handle("GET", "/api/image/other.png", _headers(app)).status == 404


def test_save_writes_the_csv_register_reads_and_finish_ends(app, tmp_path):
    finished = []
    app.on_finish = lambda: finished.append(True)
    response = _post(app, "/api/save", {})
    assert response.status == 200 and json.loads(response.body)["saved"] == 6 and not finished
    fixed_xy, _ = load_points(tmp_path / "points.csv")
    assert fixed_xy.shape == (6, 2)
    assert json.loads(_post(app, "/api/save", {"finish": True}).body)["finished"] and finished
    assert app.finished.is_set()


def test_a_real_socket_serves_with_the_token_and_refuses_without():
    fixed, moving = images()
    session = Session(fixed, moving, seeds=seeds_from_points(*good_points(4)))
    server = PickServer(lambda port: PickApp(session, port=port), 0)
    server.start()
    try:
        assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert r.status == 200 and b"autoreg pick" in r.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/state", timeout=10)
        assert refused.value.code == 403
        refused.value.close()
        with pytest.raises(InputError, match="choose another --port"):
            PickServer(lambda port: PickApp(session, port=port), server.port)
    finally:
        server.stop()
    with socket.socket() as probe:  # nothing listens there any more (TIME_WAIT aside)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))
