"""Bad input and faults: a clear one-line error (exit 2) or a failed verdict, never a crash or a harmed file."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import autoreg
from autoreg.cli import app
from autoreg.synthetic import make_pair

runner = CliRunner()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _sha_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    pair = make_pair(seed=1, fixed_shape=(160, 160), moving_shape=(160, 160))
    np.save(d / "fixed.npy", pair.fixed)
    moving = pair.moving
    arrays = {
        "tiny1": np.ones((1, 1)), "tiny3": rng.normal(size=(3, 3)), "tiny8": rng.normal(size=(8, 8)),
        "elongated": rng.normal(size=(8, 1500)), "stack": np.stack([moving] * 3),
        "complex": moving.astype(complex), "allnan": np.full((50, 50), np.nan),
        "allinf": np.full((50, 50), np.inf), "constant": np.full((100, 100), 3.0),
        "mostnan": np.where(rng.random(moving.shape) < 0.95, np.nan, moving),
        "somenan": np.where(rng.random(moving.shape) < 0.1, np.nan, moving),
        "someinf": np.where(rng.random(moving.shape) < 0.1, np.inf, moving),
        "bool": moving > np.median(moving), "float16": moving.astype(np.float16),
        "bigendian": moving.astype(">f8"), "uint16": (moving * 1000 - moving.min() * 1000).astype(np.uint16),
        "int8": np.clip(moving * 50, -120, 120).astype(np.int8), "noise": rng.normal(size=(160, 160)),
        "fourd": moving[None, :, :, None].repeat(2, axis=0),
    }
    for name, array in arrays.items():
        np.save(d / f"{name}.npy", array)
    tifffile.imwrite(d / "full.tif", moving.astype(np.float32))
    (d / "truncated.tif").write_bytes((d / "full.tif").read_bytes()[:2000])
    (d / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (d / "text.tif").write_text("not an image")
    (d / "image.gif").write_bytes(b"GIF89a")
    with h5py.File(d / "plain.h5", "w") as f:
        f["image"] = moving
        f["line"] = np.arange(50.0)
        f.create_group("group")
    data = (FIXTURES / "stm_sts.h5").read_bytes()
    (d / "truncated.h5").write_bytes(data[: len(data) // 4])
    return d


# (moving spec, expected exit codes, message expected on stderr for exit 2)
CASES = {
    "tiny1": ("tiny1.npy", {2}, "only 1×1 px"),
    "tiny3": ("tiny3.npy", {2}, "only 3×3 px"),
    "tiny8": ("tiny8.npy", {3, 4}, None),
    "elongated": ("elongated.npy", {3, 4}, None),
    "stack": ("stack.npy", {2}, "stack of 3 images"),
    "fourd": ("fourd.npy", {2}, "stack of 2 images"),
    "complex": ("complex.npy", {2}, "complex values"),
    "allnan": ("allnan.npy", {2}, "no finite pixel"),
    "allinf": ("allinf.npy", {2}, "no finite pixel"),
    "constant": ("constant.npy", {4}, None),
    "mostnan": ("mostnan.npy", {3, 4}, None),
    "somenan": ("somenan.npy", {0, 3}, None),
    "someinf": ("someinf.npy", {0, 3}, None),
    "bool": ("bool.npy", {0, 3, 4}, None),
    "float16": ("float16.npy", {0}, None),
    "bigendian": ("bigendian.npy", {0}, None),
    "uint16": ("uint16.npy", {0}, None),
    "int8": ("int8.npy", {0, 3}, None),
    "unrelated noise": ("noise.npy", {3, 4}, None),
    "truncated tiff": ("truncated.tif", {2}, "Cannot read TIFF"),
    "truncated png": ("truncated.png", {2}, "Cannot read image"),
    "text as tiff": ("text.tif", {2}, "Cannot read TIFF"),
    "unsupported type": ("image.gif", {2}, "Unsupported file type"),
    "missing file": ("nope.npy", {2}, "File not found"),
    "plain hdf5 dataset": ("plain.h5::/image", {0}, None),
    "1-d hdf5 dataset": ("plain.h5::/line", {2}, "autoreg needs a 2-D image"),
    "hdf5 group": ("plain.h5::/group", {2}, "is a group"),
    "missing dataset path": ("plain.h5::/nope", {2}, "No dataset /nope"),
    "hdf5 without dataset": ("plain.h5", {2}, "name a dataset"),
    "truncated hdf5": ("truncated.h5::/Measurement_000/Channel_000/STM_Topography", {2}, "truncated"),
    "malformed spec": ("plain.h5::", {2}, "Malformed input"),
    "double spec": ("plain.h5::/a::/b", {2}, "Malformed input"),
    "spec on a non-hdf5 file": ("fixed.npy::/x", {2}, "not an HDF5 file"),
    "non-main usid cube": (f"{FIXTURES / 'stm_sts.h5'}::/Measurement_001/Channel_000/STS", {2}, "spectroscopic cube"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_bad_input_is_a_clear_error_or_a_verdict(folder, case):
    spec, codes, message = CASES[case]
    moving = spec if spec.startswith("/") else str(folder / spec)
    before = _sha_tree(folder)
    result = runner.invoke(app, ["register", str(folder / "fixed.npy"), moving, "--json", "--model", "affine"])
    assert result.exit_code in codes, f"{result.exit_code}: {result.stdout} {result.stderr}"
    if result.exit_code == 2:
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    else:
        payload = json.loads(result.stdout)
        assert payload["verdict"] == {0: "ok", 3: "low_confidence", 4: "failed"}[result.exit_code]
        assert (payload["matrix"] is None) == (payload["verdict"] == "failed")
        if payload["verdict"] != "ok":
            assert payload["reasons"]
    assert _sha_tree(folder) == before  # inputs byte-identical, nothing written beside them


def test_pixel_budget_refuses_large_images_before_work(folder):
    result = runner.invoke(app, ["register", str(folder / "fixed.npy"), str(folder / "noise.npy"),
                                 "--max-pixels", "10000"])
    assert result.exit_code == 2
    assert "over the budget of 10,000" in result.stderr


def test_output_under_a_regular_file_is_refused(folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["register", str(folder / "fixed.npy"), str(folder / "float16.npy"),
                                 "--out", str(blocker / "out.tif")])
    assert result.exit_code == 2
    assert "not a directory" in result.stderr


@pytest.mark.parametrize(
    ("fixed_xy", "moving_xy", "model", "codes", "message"),
    [
        ([[10, 10]], [[12, 11]], "affine", {2}, "at least 3 control points"),
        ([[10, 10], [50, 60]], [[12, 11], [40, 70]], "affine", {2}, "at least 3 control points"),
        ([[10, 10], [50, 50], [90, 90]], [[12, 11], [40, 70], [90, 20]], "affine", {2}, "collinear"),
        ([[10, 10], [10, 10], [90, 20]], [[12, 11], [40, 70], [90, 20]], "affine", {2}, "Duplicate"),
        ([[10, 10], [50, 60], [900, 20]], [[12, 11], [40, 70], [90, 20]], "affine", {2}, "outside the fixed"),
        # three of four fixed points on a line: the homography is degenerate -> a failed attempt, not a crash
        ([[10, 10], [50, 50], [90, 90], [20, 120]], [[12, 11], [40, 70], [90, 20], [30, 90]], "projective",
         {3, 4}, None),
    ],
)
def test_bad_control_points(folder, tmp_path, fixed_xy, moving_xy, model, codes, message):
    csv = tmp_path / "points.csv"
    csv.write_text("fixed_x,fixed_y,moving_x,moving_y\n" +
                   "".join(f"{f[0]},{f[1]},{m[0]},{m[1]}\n" for f, m in zip(fixed_xy, moving_xy)))
    result = runner.invoke(app, ["register", str(folder / "fixed.npy"), str(folder / "constant.npy"), "--json",
                                 "--model", model, "--points", str(csv)])
    assert result.exit_code in codes, result.stdout + result.stderr
    if message:
        assert message in result.stderr


def test_a_singular_or_non_finite_transform_is_refused():
    from autoreg.errors import EstimationError
    from autoreg.estimate import fit_transform

    src = np.array([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    with pytest.raises(EstimationError):
        fit_transform("projective", src, np.zeros((4, 2)))
    with pytest.raises(EstimationError):
        fit_transform("affine", src, np.full((4, 2), np.nan))


def test_too_few_matches_is_a_failed_verdict_with_a_reason():
    pair = make_pair(seed=2, fixed_shape=(128, 128), moving_shape=(128, 128))
    rng = np.random.default_rng(1)
    result = autoreg.register(pair.fixed, rng.normal(size=(12, 12)), model="projective")
    assert result.verdict.level in ("failed", "low_confidence")
    assert result.verdict.reasons
    assert result.verdict.level != "ok"


def _python(code: str, **kwargs):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_kill_9_during_a_write_leaves_the_old_file_or_none(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old content")
    code = (
        "import numpy as np, sys; from autoreg.io import write_image; "
        f"a = np.ones((3000, 3000), np.float32); sys.stdout.write('go\\n'); sys.stdout.flush(); "
        f"[write_image(r'{target}', a) for _ in range(1000)]"
    )
    proc = _python(code)
    assert proc.stdout.readline().strip() == b"go"
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps the process and closes its pipes
    content = target.read_bytes()
    assert content == b"old content" or np.load(target).shape == (3000, 3000)  # old file, or a whole new one
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out.npy"]
    assert all(name.startswith(".out.") and ".tmp" in name for name in leftovers)  # hidden temporaries only


#: Runs the CLI with a real Ctrl-C (SIGINT to itself) arriving while the features stage works: deterministic, where
#: signalling from outside races a fast machine (the run may end before the signal lands).
_INTERRUPTED_CLI = """
import signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even when the tests run in the background
import autoreg.pipeline as pipeline
real = pipeline.feature_fit
def interrupted(*args, **kwargs):
    # to the main thread: a process-wide signal may land on a BLAS thread and leave this sleep to run out
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    time.sleep(30)  # the KeyboardInterrupt is raised here, mid-stage
    return real(*args, **kwargs)
pipeline.feature_fit = interrupted
from autoreg.cli import main
sys.argv = ["autoreg", *sys.argv[1:]]
main()
"""


def test_ctrl_c_exits_130_and_leaves_no_temporaries(tmp_path):
    pair = make_pair(seed=3, fixed_shape=(256, 256), moving_shape=(256, 256))
    np.save(tmp_path / "fixed.npy", pair.fixed)
    np.save(tmp_path / "moving.npy", pair.moving)
    before = _sha_tree(tmp_path)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_CLI, "register", str(tmp_path / "fixed.npy"),
                           str(tmp_path / "moving.npy"), "--model", "piecewise-affine",
                           "--out", str(tmp_path / "out.tif"), "--report", str(tmp_path / "r.png")],
                          capture_output=True, env={**os.environ, "COLUMNS": "200"}, timeout=120, check=False)
    seen, err = proc.stdout, proc.stderr
    assert time.monotonic() - started < 25  # interrupted, not slept through
    assert b"trying ORB features" in err
    assert proc.returncode == 130, (seen + err).decode()
    assert b"Traceback" not in seen + err
    assert _sha_tree(tmp_path) == before  # inputs unchanged, no output, no temporary
