"""``autoreg pick`` on the command line: exit 2 before the server starts on bad input, 0 saved, 130 on Ctrl-C."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from helpers import autoreg_command
from pick_support import small_pair
from typer.testing import CliRunner

from autoreg.cli import app
from autoreg.io import load_points

runner = CliRunner()


@pytest.fixture()
def pair_files(tmp_path):
    pair = small_pair()
    np.save(tmp_path / "fixed.npy", pair.fixed)
    np.save(tmp_path / "moving.npy", pair.moving)
    return tmp_path / "fixed.npy", tmp_path / "moving.npy"


def _bad(args, match):
    result = runner.invoke(app, ["pick", *map(str, args), "--no-browser"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.stderr
    assert "http://" not in result.stdout  # no server was started
    return result


def test_bad_input_is_one_line_and_exit_2_before_the_server_starts(pair_files, tmp_path):
    fixed, moving = pair_files
    out = tmp_path / "points.csv"
    _bad([tmp_path / "missing.tif", moving, "--out", out], "missing.tif")
    (tmp_path / "broken.csv").write_text("fixed_x,fixed_y,moving_x\n1,2,3\n")
    _bad([fixed, moving, "--out", out, "--points", tmp_path / "broken.csv"], "header")
    (tmp_path / "outside.csv").write_text("fixed_x,fixed_y,moving_x,moving_y\n1,2,300,3\n")
    _bad([fixed, moving, "--out", out, "--points", tmp_path / "outside.csv"], "outside the moving image")
    _bad([fixed, moving, "--out", out, "--model", "wobbly"], "Unknown model")
    _bad([fixed, moving, "--out", tmp_path / "no" / "points.csv"], "does not exist")
    _bad([fixed, moving, "--out", tmp_path / "points.txt"], ".csv")
    assert not out.exists() and not (tmp_path / "points.csv.pick.json").exists()


def test_a_port_in_use_is_exit_2(pair_files, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _bad([*pair_files, "--out", tmp_path / "points.csv", "--port", port], f"127.0.0.1:{port}")


@contextlib.contextmanager
def _running(pair_files, out, *extra):
    """Run ``autoreg pick`` in a subprocess; yield (process, url, stderr lines read at exit)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(autoreg_command("pick", *map(str, pair_files), "--out", str(out), "--no-browser", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stderr: list[str] = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("autoreg pick: open http://127.0.0.1:"), line
        ssh = proc.stdout.readline()
        assert "ssh -N -L" in ssh and "127.0.0.1" in ssh
        yield proc, line.split()[-1], stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.append(proc.stderr.read())
        proc.stdout.close()
        proc.stderr.close()


def _post(url, path, obj):
    base, token = url.split("/?token=")
    request = urllib.request.Request(base + path, data=json.dumps(obj).encode(), method="POST",
                                     headers={"X-Autoreg-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def _get_state(url):
    base, token = url.split("/?token=")
    request = urllib.request.Request(base + "/api/state", headers={"X-Autoreg-Token": token})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def test_save_and_finish_exits_0_with_the_csv_register_reads(pair_files, tmp_path):
    out = tmp_path / "points.csv"
    with _running(pair_files, out) as (proc, url, stderr):
        state = _post(url, "/api/action", {"op": "accept_all"})
        n = state["n_accepted"]
        assert n >= 6 and state["judged"]["verdict"] == "ok"
        assert _post(url, "/api/save", {"finish": True})["saved"] == n
        assert proc.wait(timeout=60) == 0
    assert f"wrote {n} pairs" in stderr[0]
    fixed_xy, moving_xy = load_points(out)
    assert fixed_xy.shape == (n, 2)
    done = subprocess.run([sys.executable, "-m", "autoreg", "register", *map(str, pair_files), "--points", str(out),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_exits_130_with_nothing_half_written_and_the_session_kept(pair_files, tmp_path):
    out = tmp_path / "points.csv"
    with _running(pair_files, out) as (proc, url, stderr):
        _post(url, "/api/action", {"op": "delete", "id": 1})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    assert "interrupted" in stderr[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary left behind
    saved = json.loads((tmp_path / "points.csv.pick.json").read_text())
    assert 1 not in [p["id"] for p in saved["pairs"]]
    with _running(pair_files, out) as (proc, url, stderr):  # the same command resumes
        state = _get_state(url)
        assert [p["id"] for p in state["pairs"]] == [p["id"] for p in saved["pairs"]] and state["can_undo"]
    assert "resuming" in stderr[0]


def test_pick_help_is_light():
    code = ("import sys; from typer.testing import CliRunner; from autoreg.cli import app; "
            "r = CliRunner().invoke(app, ['pick', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--no-browser' in r.output; "
            "print(sorted(m for m in ('numpy', 'cv2', 'scipy', 'skimage', 'h5py') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
