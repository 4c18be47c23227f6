"""The CLI contract: exit codes, pure-JSON stdout, nothing written on bad input, inputs untouched."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from autoreg.geometry import apply_matrix
from autoreg.cli import app
from autoreg.datatypes import CONTRACT_KEYS
from autoreg.synthetic import make_pair

runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()



@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    pair = make_pair(seed=21, fixed_shape=(192, 192), moving_shape=(160, 160))
    tifffile.imwrite(folder / "fixed.tif", pair.fixed)
    np.save(folder / "moving.npy", pair.moving)
    return folder, pair


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_ok_run_prints_exactly_one_json_object_and_exits_0(pair_files):
    folder, pair = pair_files
    before = {p.name: _sha(p) for p in folder.iterdir()}
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "affine", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(CONTRACT_KEYS) <= set(payload)
    assert payload["verdict"] == "ok" and payload["source"] == "features"
    matrix = np.array(payload["matrix"])
    assert matrix.shape == (3, 3)
    grid = np.array([[x, y] for x in (0, 80, 159) for y in (0, 80, 159)], float)
    assert np.abs(apply_matrix(matrix, grid) - apply_matrix(pair.moving_to_fixed, grid)).max() < 1.0
    assert before == {p.name: _sha(p) for p in folder.iterdir()}  # inputs untouched, nothing added


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_out_and_report_are_written(pair_files, tmp_path, suffix):
    folder, _ = pair_files
    out, report = tmp_path / f"warped{suffix}", tmp_path / "report.png"
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--out", out, "--report", report)
    assert result.exit_code == 0, result.output
    warped = tifffile.imread(out) if suffix == ".tif" else np.load(out)
    assert warped.shape == (192, 192)
    assert np.isnan(warped).any() and np.isfinite(warped).mean() > 0.5
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, report.name])  # no temporaries left


def test_failed_registration_exits_4_with_null_matrix_and_no_output(pair_files, tmp_path):
    folder, _ = pair_files
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones((100, 100)))
    out = tmp_path / "warped.tif"
    result = _run("register", folder / "fixed.tif", flat, "--json", "--out", out)
    assert result.exit_code == 4, result.output
    payload = json.loads(result.stdout)
    assert payload["verdict"] == "failed" and payload["matrix"] is None and payload["reasons"]
    assert not out.exists()


def test_low_confidence_exits_3_and_still_writes(pair_files, tmp_path):
    folder, pair = pair_files
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones((160, 160)))
    moving_xy = np.array([[40.0, 40.0], [120.0, 50.0], [80.0, 120.0]])
    fixed_xy = apply_matrix(pair.moving_to_fixed, moving_xy)
    csv = tmp_path / "points.csv"
    csv.write_text("fixed_x,fixed_y,moving_x,moving_y\n" +
                   "".join(f"{f[0]},{f[1]},{m[0]},{m[1]}\n" for f, m in zip(fixed_xy, moving_xy)))
    out = tmp_path / "warped.npy"
    result = _run("register", folder / "fixed.tif", flat, "--model", "affine", "--points", csv, "--json",
                  "--out", out)
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert payload["source"] == "points"
    assert any(r.startswith("unverifiable_points:") for r in payload["reasons"])
    np.testing.assert_allclose(payload["matrix"], pair.moving_to_fixed, atol=1e-6)
    assert out.exists()


def _bad_cases(folder: Path, tmp: Path):
    existing = tmp / "exists.tif"
    existing.write_bytes(b"keep")
    bad_csv = tmp / "bad.csv"
    bad_csv.write_text("a,b,c\n1,2,3\n")
    fixed, moving = folder / "fixed.tif", folder / "moving.npy"
    return {
        "missing file": (["register", tmp / "nope.tif", moving], "File not found"),
        "bad model": (["register", fixed, moving, "--model", "elastic"], "Unknown model"),
        "malformed points": (["register", fixed, moving, "--points", bad_csv], "header"),
        "output is input": (["register", fixed, moving, "--out", fixed, "--overwrite"], "also an input"),
        "existing output": (["register", fixed, moving, "--out", existing], "already exists"),
        "bad extension": (["register", fixed, moving, "--out", tmp / "w.jpg"], "use one of"),
        "missing directory": (["register", fixed, moving, "--out", tmp / "no" / "w.tif"], "does not exist"),
        "malformed spec": (["register", f"{fixed}::", moving], "Malformed input"),
        "missing dataset": (["register", f"{folder / 'x.h5'}::/a", moving], "File not found"),
    }


@pytest.mark.parametrize("case", ["missing file", "bad model", "malformed points", "output is input",
                                  "existing output", "bad extension", "missing directory", "malformed spec",
                                  "missing dataset"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(pair_files, tmp_path, case):
    folder, _ = pair_files
    args, message = _bad_cases(folder, tmp_path)[case]
    listing = {p.name: _sha(p) for p in tmp_path.iterdir()}
    inputs = {p.name: _sha(p) for p in folder.iterdir()}
    result = _run(*args, "--json")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert {p.name: _sha(p) for p in tmp_path.iterdir()} == listing
    assert {p.name: _sha(p) for p in folder.iterdir()} == inputs


def test_usage_errors_exit_2():
    assert _run("register").exit_code == 2
    assert _run("register", "a.tif", "b.tif", "--no-such-flag").exit_code == 2


def test_version():
    result = _run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("autoreg ")


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from typer.testing import CliRunner; from autoreg.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['register', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('pyUSID', 'matplotlib', 'h5py', 'numpy', 'cv2', 'skimage') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "autoreg", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("autoreg ")


@pytest.mark.slow
def test_demo_runs_and_writes_its_files(tmp_path):
    result = _run("demo", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "piecewise-affine" in result.stdout
    names = {p.name for p in tmp_path.iterdir()}
    assert {"auto.json", "report.png"} <= names
    payload = json.loads((tmp_path / "auto.json").read_text())
    assert payload["verdict"] == "ok"
    assert payload["error_vs_truth_fixed_px"] < 0.3 * 20.48
    cube = np.load(next(tmp_path.glob("sts_cube_on_topography_*.npy")))
    assert cube.shape == (128, 128, 256)


def test_model_all_prints_the_table_and_keeps_stdout_one_json_object(pair_files):
    folder, _ = pair_files
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "all", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [row["model"] for row in payload["compare"]] == ["auto", "translation", "rigid", "similarity", "affine",
                                                            "projective", "polynomial", "piecewise-affine"]
    assert "Pearson after" in result.stderr  # the table went to stderr, not into the JSON stream
    human = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "all")
    assert "piecewise-affine" in human.stdout


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"
TOPO, ZMAP = "/Measurement_000/Channel_000/STM_Topography", "/Measurement_001/Channel_001/STS_Z_Contrast"


@pytest.mark.parametrize("command", ["register", "batch", "apply", "inspect", "demo"])
def test_help_renders_flags_as_flags_and_is_not_cut_at_80_columns(command):
    done = subprocess.run([sys.executable, "-m", "autoreg", command, "--help"], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "80", "TERM": "dumb"})
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "<bool>" not in text and "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    if command == "register":
        assert "--json " in text and ".h5" in text and ".png" in text and "fixed_x,fixed_y,moving_x,moving_y" in text


def test_human_table_goes_to_stdout_and_logs_name_what_happened(pair_files):
    folder, _ = pair_files
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "affine")
    assert result.exit_code == 0, result.output
    assert "rmse_px" in result.stdout and "verdict" in result.stdout
    assert "trying ORB features" in result.stderr and "registration finished" in result.stderr
    assert ".py:" not in result.stderr, result.stderr


def test_repeated_reasons_are_merged(pair_files, tmp_path):
    folder, _ = pair_files
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones((100, 100)))
    as_json = _run("register", folder / "fixed.tif", flat, "--json")
    assert as_json.exit_code == 4
    reasons = json.loads(as_json.stdout)["reasons"]
    assert reasons and len(reasons) == len(set(reasons))
    human = _run("register", folder / "fixed.tif", flat)
    assert human.stdout.count("The moving image is flat") == 1, human.stdout


def test_out_png_writes_an_8bit_preview_and_other_raster_formats_are_refused(pair_files, tmp_path):
    import cv2

    folder, _ = pair_files
    out = tmp_path / "preview.png"
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--out", out)
    assert result.exit_code == 0, result.stderr
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.shape == (192, 192, 4)
    assert (image[..., 3] == 0).any() and (image[..., 3] == 255).mean() > 0.5  # transparent outside the footprint
    refused = _run("register", folder / "fixed.tif", folder / "moving.npy", "--out", tmp_path / "w.jpg")
    assert refused.exit_code == 2 and ".png" in refused.stderr and ".tif" in refused.stderr


def test_tiff_outputs_carry_the_fixed_pixel_size(tmp_path):
    out = tmp_path / "warped.tif"
    result = _run("register", f"{FIXTURE}::{TOPO}", f"{FIXTURE}::{ZMAP}", "--model", "affine", "--out", out)
    assert result.exit_code == 0, result.stderr
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["unit"] == "nm"
        numerator, denominator = tif.pages[0].tags["XResolution"].value
        assert denominator / numerator == pytest.approx(100 / 1024, rel=1e-6)
        assert tif.pages[0].shape == (1024, 1024)
    from autoreg.io import load_image

    assert load_image(out).pixel_size_xy == pytest.approx((100 / 1024, 100 / 1024), rel=1e-6)


def test_inspect_lists_plain_2d_datasets_that_register_reads(tmp_path):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("scans/height", data=np.zeros((48, 64), np.float32)).attrs["units"] = "nm"
        f.create_dataset("scans/line", data=np.zeros(64))
        f.create_dataset("scans/names", data=np.array([b"a", b"b"]))
    result = _run("inspect", path)
    assert result.exit_code == 0, result.stderr
    assert "height  [image: 64×48 px, float32 (nm)]" in result.stdout
    assert "line" not in result.stdout and "names" not in result.stdout
    listing = _run("inspect", FIXTURE)
    assert "STM_Topography  [main: 1024×1024 positions × 1 steps" in listing.stdout


def test_prior_options_and_saved_points_round_trip(pair_files, tmp_path):
    """--pixel-size makes the scale known, --tolerance-px sets the promise, --save-points writes what --points reads."""
    folder, pair = pair_files
    saved = tmp_path / "pairs.csv"
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "affine", "--json",
                  "--pixel-size", "0.5", "0.5", "--tolerance-px", "1.5", "--save-points", saved)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["scale_source"] == "user" and payload["tolerance_px"] == pytest.approx(1.5)
    assert payload["predicted_error_px"] <= 1.5 and payload["log10_nfa"] < -1
    assert payload["shift_peak_gap"] is None or payload["shift_peak_gap"] > 0.1  # an ok pose stands out
    from autoreg.io import load_points

    fixed_xy, moving_xy = load_points(saved)
    assert payload["n_inliers"] - 3 <= len(fixed_xy) <= payload["n_inliers"] and len(fixed_xy) >= 15  # repeats once
    again = _run("register", folder / "fixed.tif", folder / "moving.npy", "--model", "affine", "--json",
                 "--points", saved)
    assert again.exit_code == 0, again.output
    np.testing.assert_allclose(json.loads(again.stdout)["matrix"], payload["matrix"], atol=0.5)


@pytest.mark.parametrize("args", [["--scale", "-2"], ["--scale", "0"], ["--tolerance-px", "0"],
                                  ["--pixel-size", "1", "0"], ["--scale", "2", "--pixel-size", "1", "2"]])
def test_bad_priors_are_one_line_errors(pair_files, tmp_path, args):
    folder, _ = pair_files
    result = _run("register", folder / "fixed.tif", folder / "moving.npy", "--out", tmp_path / "w.tif", *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["register", "a.tif", "b.tif", "--scale", "abc"], ["bogus"], ["register"],
                                  ["register", "a.tif", "b.tif", "--max-pixels", "3"]])
def test_usage_errors_are_one_line_and_exit_2(args, tmp_path):
    """The installed command (not the test runner): click's four-line usage box becomes one line, like bad input."""
    done = subprocess.run([sys.executable, "-c", "from autoreg.cli import main; main()", *args], capture_output=True,
                          text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_ends_the_listing_quietly(tmp_path):
    """`autoreg inspect big.h5 | head`: no traceback, and not exit 1 (kept for bugs) but 141, as a shell says it."""
    import h5py

    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(3000):  # ~150 kB of listing: more than a pipe holds
            f.create_dataset(f"scans/image_{i:04d}", data=np.zeros((8, 8), np.float32))
    with subprocess.Popen([sys.executable, "-c", "from autoreg.cli import main; main()", "inspect", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path) as process:
        first = process.stdout.readline()
        process.stdout.close()  # the reader goes away with most of the listing unwritten
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert code == 141, stderr
    assert first.decode().strip() == str(path) and stderr == ""


def test_inspect_says_the_pixel_size_register_reads_from_an_image_file(tmp_path):
    from autoreg.io import write_image

    write_image(tmp_path / "calibrated.tif", np.ones((12, 20), np.float32), pixel_size_xy=(0.5, 0.25), units="nm")
    np.save(tmp_path / "plain.npy", np.ones((12, 20)))
    calibrated = _run("inspect", tmp_path / "calibrated.tif")
    assert calibrated.exit_code == 0, calibrated.output
    assert "image: 20×12 px; pixel 0.5 × 0.25 nm" in calibrated.stdout
    plain = _run("inspect", tmp_path / "plain.npy")
    assert plain.exit_code == 0 and "image: 20×12 px; no pixel size" in plain.stdout
    missing = _run("inspect", tmp_path / "missing.png")
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1
