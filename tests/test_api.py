"""The Python API takes what pycroscopy users hold, refuses bad types clearly, and shows results briefly."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import autoreg
import autoreg.io
from autoreg.cli import app
from autoreg.geometry import apply_matrix
from helpers import rigid_matrix, sample_moving, smooth_field

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"
TOPO, ZMAP = "/Measurement_000/Channel_000/STM_Topography", "/Measurement_001/Channel_001/STS_Z_Contrast"
MATRIX = rigid_matrix(5.0, 6.0, -4.0)


@pytest.fixture(scope="module")
def pair():
    y, x = np.mgrid[:96, :96].astype(float)
    return smooth_field(x, y), sample_moving(MATRIX, (80, 80))


def _points(n=12):
    moving_xy = np.random.default_rng(1).uniform(5, 70, (n, 2))
    return apply_matrix(MATRIX, moving_xy), moving_xy


def test_h5py_and_usidataset_inputs_are_read_with_their_grid_and_positions():
    import pyUSID

    with h5py.File(FIXTURE, "r") as f:
        fixed, moving = f[TOPO], pyUSID.USIDataset(f[ZMAP])
        image = autoreg.load_image(moving)
        assert image.shape == (40, 40) and image.units == "nm" and image.pixel_size_xy == pytest.approx((2.0, 2.0))
        assert image.name == f"{FIXTURE}::{ZMAP}"
        result = autoreg.register(fixed, moving, model="affine")
    from_specs = autoreg.register(f"{FIXTURE}::{TOPO}", f"{FIXTURE}::{ZMAP}", model="affine")
    payload = result.to_dict()
    assert payload["verdict"] == "ok" and payload["physical_units"] == "nm"
    np.testing.assert_allclose(payload["matrix_physical"], from_specs.to_dict()["matrix_physical"], atol=1e-9)


def test_to_dict_has_every_key_of_the_cli_json(tmp_path):
    done = CliRunner().invoke(app, ["register", f"{FIXTURE}::{TOPO}", f"{FIXTURE}::{ZMAP}", "--model", "affine",
                                    "--json"])
    assert done.exit_code == 0, done.stderr
    cli_keys = set(json.loads(done.stdout))
    with h5py.File(FIXTURE, "r") as f:
        api = autoreg.register(f[TOPO], f[ZMAP], model="affine").to_dict()
    assert cli_keys <= set(api), cli_keys - set(api)
    assert api["matrix_physical"] is not None and api["transform"]["model"] == "affine"


def test_points_as_an_array_or_a_dataframe(pair):
    fixed, moving = pair
    fixed_xy, moving_xy = _points()
    table = np.column_stack([fixed_xy, moving_xy])
    from_array = autoreg.register(fixed, moving, model="affine", points=table, automatic=False)
    assert from_array.source == "points" and from_array.verdict.level == "ok"
    np.testing.assert_allclose(from_array.matrix, MATRIX, atol=1e-6)
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(table[:, [2, 3, 0, 1]], columns=["moving_x", "moving_y", "fixed_x", "fixed_y"])
    from_frame = autoreg.register(fixed, moving, model="affine", points=frame, automatic=False)
    np.testing.assert_allclose(from_frame.matrix, from_array.matrix, atol=1e-12)


@pytest.mark.parametrize("points, message", [
    (42, "Cannot read control points from a int"),
    (np.zeros((5, 3)), r"shape \(N, 4\)"),
    ({"fixed_x": 1}, "Cannot read control points from a dict"),
])
def test_bad_point_types_are_input_errors(pair, points, message):
    fixed, moving = pair
    with pytest.raises(autoreg.InputError, match=message):
        autoreg.register(fixed, moving, points=points)


@pytest.mark.parametrize("source", [42, object(), None])
def test_bad_image_types_are_input_errors(pair, source):
    with pytest.raises(autoreg.InputError, match="Cannot read an image from a"):
        autoreg.register(source, pair[1])


def test_a_closed_h5py_dataset_is_an_input_error():
    with h5py.File(FIXTURE, "r") as f:
        dataset = f[ZMAP]
    with pytest.raises(autoreg.InputError, match="closed"):
        autoreg.load_image(dataset)


def test_repr_is_one_short_line_and_html_shows_verdict_and_figure():
    from autoreg.synthetic import make_pair

    synthetic = make_pair(seed=21, fixed_shape=(160, 160), moving_shape=(128, 128))
    result = autoreg.register(synthetic.fixed, synthetic.moving, model="affine")
    text = repr(result)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("<RegistrationResult ok: affine from features, ") and "128×128 px onto fixed 160×160 px" in text
    html = result._repr_html_()
    assert ">ok</b>" in html and "data:image/png;base64," in html and len(html) < 400_000


def test_a_usid_cube_rides_along_from_open_datasets():
    from dataclasses import replace

    import pyUSID

    with h5py.File(FIXTURE, "r") as f:
        cube, meta = autoreg.io.load_cube(pyUSID.USIDataset(f["/Measurement_001/Channel_000/STS"]))
        moving = replace(autoreg.load_image(f[ZMAP]), cube=cube)
        result = autoreg.register(f[TOPO], moving, model="affine", cube_step=16)
    assert cube.shape == (40, 40, 256) and meta["spectral"]["labels"] == ["Bias"]
    assert result.warped_cube.shape == (64, 64, 256)
