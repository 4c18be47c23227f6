"""Saved transforms are complete for every model, and `autoreg apply` checks what it is given."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import autoreg
from autoreg.cli import app
from autoreg.geometry import apply_matrix
from autoreg.io import load_cube, write_image
from autoreg.saved import load_saved
from autoreg.usid import write_main
from autoreg.vocabulary import MODELS
from autoreg.warp import apply_transform, apply_transform_cube
from helpers import rigid_matrix, sample_moving, smooth_field

runner = CliRunner()
MATRIX = rigid_matrix(8.0, 12.0, -5.0, scale=1.1)
FIXED_SHAPE, MOVING_SHAPE = (96, 112), (80, 88)


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _points(n=24, seed=3):
    """Moving points and their fixed positions under MATRIX plus a gentle bend (so every model has work)."""
    rng = np.random.default_rng(seed)
    moving_xy = rng.uniform([2, 2], [MOVING_SHAPE[1] - 3, MOVING_SHAPE[0] - 3], (n, 2))
    fixed_xy = apply_matrix(MATRIX, moving_xy)
    fixed_xy[:, 0] += 1e-3 * (moving_xy[:, 1] - 40) ** 2
    return fixed_xy, moving_xy


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apply")
    y, x = np.mgrid[: FIXED_SHAPE[0], : FIXED_SHAPE[1]].astype(float)
    fixed = smooth_field(x, y)
    moving = sample_moving(MATRIX, MOVING_SHAPE)
    np.save(folder / "fixed.npy", fixed)
    np.save(folder / "moving.npy", moving)
    return folder, fixed, moving


@pytest.fixture(scope="module")
def results(images):
    """One points-only result per model, and its JSON file (what `register --json` prints)."""
    folder, fixed, moving = images
    out = {}
    for model in MODELS:
        result = autoreg.register(fixed, moving, model=model, points=_points(), automatic=False)
        assert result.verdict.level != "failed", (model, result.verdict)
        path = folder / f"{model}.json"
        path.write_text(json.dumps(result.to_dict()))
        out[model] = (result, path)
    return out


def _allow(result):
    return ["--allow-low-confidence"] if result.verdict.level == "low_confidence" else []


@pytest.mark.parametrize("model", MODELS)
def test_a_result_json_is_a_complete_transform_for_every_model(images, results, model, tmp_path):
    folder, _, moving = images
    result, path = results[model]
    saved = load_saved(path)
    assert saved.fit.model == model and saved.moving_shape == MOVING_SHAPE and saved.fixed_shape == FIXED_SHAPE
    grid = np.array([[x, y] for x in (3.0, 40.0, 80.0) for y in (5.0, 30.0, 70.0)])
    np.testing.assert_allclose(saved.fit.to_fixed(grid), result.fit.to_fixed(grid), atol=1e-9)
    np.testing.assert_allclose(saved.fit.to_moving(result.fit.to_fixed(grid)),
                               result.fit.to_moving(result.fit.to_fixed(grid)), atol=1e-9)
    out = tmp_path / "warped.npy"
    done = _invoke("apply", path, folder / "moving.npy", "--out", out, *_allow(result))
    assert done.exit_code == 0, done.stderr
    expected, _ = apply_transform(moving, result.fit, FIXED_SHAPE)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5, equal_nan=True)


def test_a_target_of_another_shape_is_refused_unless_forced(images, results, tmp_path):
    folder, _, moving = images
    _, path = results["affine"]
    other = tmp_path / "other.npy"
    np.save(other, moving[:70, :80])
    out = tmp_path / "w.tif"
    refused = _invoke("apply", path, other, "--out", out)
    assert refused.exit_code == 2 and not out.exists()
    assert refused.stderr.startswith("error: ") and "is 80×70 px but the transform was estimated on a 88×80 px" \
        in refused.stderr and "--force" in refused.stderr
    forced = _invoke("apply", path, other, "--out", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert tifffile.imread(out).shape == FIXED_SHAPE


def test_a_target_of_another_physical_extent_is_refused(images, results, tmp_path):
    _, _, moving = images
    result, _ = results["affine"]
    payload = result.to_dict()
    payload.update(pixel_size_moving_xy=[2.0, 2.0], units_moving="nm", pixel_size_fixed_xy=[1.5, 1.5],
                   units_fixed="nm")
    saved = tmp_path / "calibrated.json"
    saved.write_text(json.dumps(payload))
    same, larger = tmp_path / "same.tif", tmp_path / "larger.tif"
    write_image(same, moving, pixel_size_xy=(0.002, 0.002), units="µm")  # 2 nm, written in µm
    write_image(larger, moving, pixel_size_xy=(3.0, 3.0), units="nm")
    ok = _invoke("apply", saved, same, "--out", tmp_path / "a.tif")
    assert ok.exit_code == 0, ok.stderr
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:  # the output carries the fixed pixel size
        assert tif.imagej_metadata["unit"] == "nm"
        numerator, denominator = tif.pages[0].tags["XResolution"].value
        assert denominator / numerator == pytest.approx(1.5, rel=1e-6)
    refused = _invoke("apply", saved, larger, "--out", tmp_path / "b.tif")
    assert refused.exit_code == 2 and "covers 264×240 nm" in refused.stderr, refused.stderr
    assert not (tmp_path / "b.tif").exists()


def test_low_confidence_needs_a_flag_and_failed_never_applies(images, tmp_path):
    folder, fixed, moving = images
    fixed_xy, moving_xy = _points(3)
    low = autoreg.register(fixed, moving, model="affine", points=(fixed_xy, moving_xy), automatic=False)
    assert low.verdict.level == "low_confidence"
    failed = autoreg.register(fixed, np.ones(MOVING_SHAPE), model="affine")
    assert failed.verdict.level == "failed"
    (tmp_path / "low.json").write_text(json.dumps(low.to_dict()))
    (tmp_path / "failed.json").write_text(json.dumps(failed.to_dict()))
    out = tmp_path / "w.npy"
    refused = _invoke("apply", tmp_path / "low.json", folder / "moving.npy", "--out", out)
    assert refused.exit_code == 2 and "--allow-low-confidence" in refused.stderr and not out.exists()
    allowed = _invoke("apply", tmp_path / "low.json", folder / "moving.npy", "--out", out, "--allow-low-confidence")
    assert allowed.exit_code == 0, allowed.stderr
    never = _invoke("apply", tmp_path / "failed.json", folder / "moving.npy", "--out", tmp_path / "f.npy",
                    "--allow-low-confidence", "--force")
    assert never.exit_code == 2 and "failed registration" in never.stderr
    assert not (tmp_path / "f.npy").exists()


def test_several_targets_in_one_call_and_the_inverse_maps_fixed_points_to_moving(images, results, tmp_path):
    folder, _, moving = images
    result, path = results["projective"]
    np.save(tmp_path / "channel_a.npy", moving)
    np.save(tmp_path / "channel_b.npy", 2 * moving)
    (tmp_path / "spots.csv").write_text("x,y\n10,12\n50,40\n")
    out = tmp_path / "out"
    out.mkdir()
    done = _invoke("apply", path, tmp_path / "channel_*.npy", tmp_path / "spots.csv", "--out-dir", out,
                   *_allow(result))
    assert done.exit_code == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["channel_a.tif", "channel_b.tif", "spots.csv"]
    np.testing.assert_allclose(tifffile.imread(out / "channel_b.tif"), 2 * tifffile.imread(out / "channel_a.tif"),
                               rtol=1e-5, equal_nan=True)
    table = np.loadtxt(out / "spots.csv", delimiter=",", skiprows=1)
    (tmp_path / "fixed_spots.csv").write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in table[:, 2:]))
    back = _invoke("apply", path, tmp_path / "fixed_spots.csv", "--inverse", "--out", tmp_path / "back.csv",
                   *_allow(result))
    assert back.exit_code == 0, back.stderr
    assert (tmp_path / "back.csv").read_text().splitlines()[0] == "x,y,moving_x,moving_y"
    returned = np.loadtxt(tmp_path / "back.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(returned[:, 2:], [[10, 12], [50, 40]], atol=1e-6)


def test_apply_warps_a_spectral_cube(images, results, tmp_path):
    _, _, moving = images
    result, path = results["affine"]
    cube = np.stack([moving * (k + 1) for k in range(6)], axis=-1)
    scan = tmp_path / "scan.h5"
    with h5py.File(scan, "w") as f:
        write_main(f.create_group("Measurement_000/Channel_000"), "STS", cube, quantity="Current", units="nA",
                   pixel_size=2.0, position_units="nm", spectral=("Bias", "V", np.linspace(-1, 1, 6)))
    spec = f"{scan}::/Measurement_000/Channel_000/STS"
    for name in ("cube.npy", "cube.h5"):
        done = _invoke("apply", path, "--cube", spec, "--cube-step", "2", "--out", tmp_path / name, *_allow(result))
        assert done.exit_code == 0, done.stderr
    expected, _ = apply_transform_cube(cube, result.fit, FIXED_SHAPE, step=2)
    np.testing.assert_allclose(np.load(tmp_path / "cube.npy"), expected, rtol=1e-5, equal_nan=True)
    reread, meta = load_cube(f"{tmp_path / 'cube.h5'}::/Measurement_000/Channel_000/Registered_Cube")
    np.testing.assert_allclose(reread, expected, rtol=1e-5, equal_nan=True)
    assert meta["spectral"]["labels"] == ["Bias"] and meta["value_units"] == "nA"


def test_apply_usage_errors_write_nothing(images, results, tmp_path):
    folder, _, _ = images
    _, path = results["affine"]
    cases = {
        "no target": ([path, "--out", tmp_path / "w.tif"], "at least one target"),
        "two targets, one --out": ([path, folder / "moving.npy", folder / "fixed.npy", "--out", tmp_path / "w.tif"],
                                   "use --out-dir"),
        "not a result": ([folder / "moving.npy", folder / "moving.npy", "--out", tmp_path / "w.tif"],
                         "Cannot read a saved transform"),
    }
    for name, (args, message) in cases.items():
        done = _invoke("apply", *args)
        assert done.exit_code == 2 and message in done.stderr, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, name
    assert list(tmp_path.iterdir()) == []


def test_a_mesh_without_its_tesselation_is_saved_from_its_control_pairs():
    from autoreg.saved import saved_from_dict
    from autoreg.transform_codec import encode_transform

    fixed_xy, moving_xy = _points()
    from skimage.transform import PiecewiseAffineTransform

    forward = PiecewiseAffineTransform.from_estimate(moving_xy, fixed_xy)
    backward = PiecewiseAffineTransform.from_estimate(fixed_xy, moving_xy)
    opaque = type("Opaque", (), {"__call__": lambda self, xy: forward(xy)})()
    record = encode_transform("piecewise-affine", opaque, backward, (moving_xy, fixed_xy))
    saved = saved_from_dict({"verdict": "ok", "model": "piecewise-affine", "transform": record})
    np.testing.assert_allclose(saved.fit.to_fixed(moving_xy), fixed_xy, atol=1e-9)
    np.testing.assert_allclose(saved.fit.to_moving(fixed_xy), moving_xy, atol=1e-9)
