"""USID results written back: valid main datasets, provenance, complete-last, in place safely, re-applied."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import autoreg
from autoreg.cli import app
from autoreg.io import load_cube, load_image
from autoreg.results_h5 import list_registrations, read_registration, write_results
from autoreg.saved import load_saved
from autoreg.fixture import load_truth

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"
TOPO, ZMAP, STS = ("/Measurement_000/Channel_000/STM_Topography", "/Measurement_001/Channel_001/STS_Z_Contrast",
                   "/Measurement_001/Channel_000/STS")
runner = CliRunner()


@pytest.fixture()
def copy(tmp_path):
    target = tmp_path / "scan.h5"
    shutil.copy(FIXTURE, target)
    return target


@pytest.fixture(scope="module")
def registered():
    fixed = load_image(f"{FIXTURE}::{TOPO}")
    cube, meta = load_cube(f"{FIXTURE}::{STS}")
    from dataclasses import replace

    moving = replace(load_image(f"{FIXTURE}::{ZMAP}"), cube=cube)
    result = autoreg.register(fixed, moving, model="affine", cube_step=8)
    return fixed, moving, result, meta


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, hashlib.sha256(obj[()].tobytes()).hexdigest())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def test_results_file_holds_valid_usid_and_provenance(registered, tmp_path):
    import pyUSID

    fixed, moving, result, meta = registered
    spec = write_results(result, fixed=fixed, moving=moving, path=tmp_path / "r.h5", warped_cube=result.warped_cube,
                         cube_meta=meta, parameters={"model": "affine", "cube_step": 8})
    path, group_path = spec.split("::")
    with h5py.File(path, "r") as f:
        group = f[group_path]
        assert group.attrs["complete"] and group.attrs["verdict"] == "ok"
        image, cube = group["Registered_Image"], group["Cube/Registered_Cube"]
        assert pyUSID.hdf_utils.check_if_main(image) and pyUSID.hdf_utils.check_if_main(cube)
        assert np.asarray(pyUSID.USIDataset(cube).get_n_dim_form()).shape == (128, 128, 256)
        np.testing.assert_array_equal(group["matrix_moving_to_fixed"][()], result.matrix)
        assert len(group["inliers_fixed_xy"]) == result.scores.n_inliers
        assert json.loads(group.attrs["versions_json"])["autoreg"] == autoreg.__version__
        assert group.attrs["moving_source"].endswith(ZMAP)
    warped = load_image(f"{path}::{group_path}/Registered_Image").data
    np.testing.assert_array_equal(np.isnan(warped), ~result.footprint)
    reread, cube_meta = load_cube(f"{path}::{group_path}/Cube/Registered_Cube")
    np.testing.assert_array_equal(reread, result.warped_cube)
    assert cube_meta["spectral"]["labels"] == ["Bias"] and cube_meta["pixel_size_xy"][0] == pytest.approx(8 * 100 / 1024)
    assert [r["verdict"] for r in list_registrations(path)] == ["ok"]


def test_physical_matrix_matches_the_truth(registered):
    fixed, moving, result, _ = registered
    truth = load_truth(FIXTURE)
    payload = result.to_dict()
    physical, units = np.asarray(payload["matrix_physical"]), payload["physical_units"]
    to_fixed = np.diag([truth.fixed_pixel_nm, truth.fixed_pixel_nm, 1.0])
    to_moving = np.array([[truth.moving_pixel_nm, 0, truth.moving_origin_nm[0]],
                          [0, truth.moving_pixel_nm, truth.moving_origin_nm[1]], [0, 0, 1.0]])
    expected = to_fixed @ truth.matrix @ np.linalg.inv(to_moving)
    corners = np.array([[10.0, 10, 1], [90, 10, 1], [10, 90, 1], [90, 90, 1]])  # nm in the moving frame
    error = np.abs(corners @ physical.T - corners @ expected.T)[:, :2]
    assert units == "nm" and error.max() < 1.0  # nm; creep is not in the affine truth


def test_in_place_appends_a_group_and_touches_nothing_else(registered, copy):
    fixed, moving, result, meta = registered
    before = _datasets(copy)
    moving_here = type(moving)(data=moving.data, pixel_size_xy=moving.pixel_size_xy, units=moving.units,
                               origin=moving.origin, name=f"{copy}::{ZMAP}")
    fixed_here = type(fixed)(data=fixed.data, pixel_size_xy=fixed.pixel_size_xy, units=fixed.units,
                             origin=fixed.origin, name=f"{copy}::{TOPO}")
    first = write_results(result, fixed=fixed_here, moving=moving_here, in_place=True)
    second = write_results(result, fixed=fixed_here, moving=moving_here, in_place=True)
    assert first.endswith("STS_Z_Contrast-Registration_000") and second.endswith("STS_Z_Contrast-Registration_001")
    after = _datasets(copy)
    assert {k: v for k, v in after.items() if k in before} == before
    with h5py.File(copy, "r") as f:
        group = f[first.split("::")[1]]
        image = group["Registered_Image"]
        # the registered image reuses the topography's position ancillaries, by reference
        assert f[image.attrs["Position_Values"]].name == "/Measurement_000/Channel_000/Position_Values"
        assert f[group.attrs["moving_ref"]].name == ZMAP


def test_incomplete_groups_are_ignored(copy):
    with h5py.File(copy, "a") as f:
        f["Measurement_001/Channel_001"].create_group("STS_Z_Contrast-Registration_007")
    assert list_registrations(copy) == []
    result = runner.invoke(app, ["inspect", str(copy)])
    assert result.exit_code == 0 and "INCOMPLETE" in result.stdout
    with pytest.raises(autoreg.InputError, match="not a complete registration"):
        read_registration(f"{copy}::/Measurement_001/Channel_001/STS_Z_Contrast-Registration_007")


def test_a_killed_in_place_write_leaves_no_complete_looking_group(copy):
    before = _datasets(copy)
    code = (
        "import autoreg, sys; from autoreg.results_h5 import write_results; "
        f"f = autoreg.load_image(r'{copy}::{TOPO}'); m = autoreg.load_image(r'{copy}::{ZMAP}'); "
        "r = autoreg.register(f, m, model='affine'); print('go', flush=True); "
        "[write_results(r, fixed=f, moving=m, in_place=True) for _ in range(50)]"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"go"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    groups = list_registrations(copy)  # the file still opens: it is the old one or a whole new one
    with h5py.File(copy, "r") as f:
        parent = f["Measurement_001/Channel_001"]
        names = [n for n in parent if "-Registration_" in n]
        assert all(parent[n].attrs.get("complete", False) for n in names)
    assert len(groups) == len(names)
    after = _datasets(copy)
    assert {k: v for k, v in after.items() if k in before} == before


def test_cli_register_writes_results_and_apply_reuses_them(copy, tmp_path):
    out = tmp_path / "results.h5"
    result = runner.invoke(app, ["register", f"{copy}::{TOPO}", f"{copy}::{ZMAP}", "--model", "affine", "--cube",
                                 f"{copy}::{STS}", "--cube-step", "16", "--out", str(out), "--in-place", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    payload = json.loads(result.stdout)
    assert payload["physical_units"] == "nm" and np.asarray(payload["matrix_physical"]).shape == (3, 3)
    assert payload["results_group"].endswith("STS_Z_Contrast-Registration_000")
    (tmp_path / "auto.json").write_text(result.stdout)
    points = tmp_path / "p.csv"
    points.write_text("x,y\n0,0\n39,0\n20,30\n")
    mapped = runner.invoke(app, ["apply", payload["results_group"], str(points), "--out", str(tmp_path / "m.csv")])
    assert mapped.exit_code == 0, mapped.stderr
    table = np.loadtxt(tmp_path / "m.csv", delimiter=",", skiprows=1)
    matrix = np.asarray(payload["matrix"])
    expected = (np.column_stack([table[:, :2], np.ones(3)]) @ matrix.T)[:, :2]
    np.testing.assert_allclose(table[:, 2:], expected, atol=1e-3)
    warped = runner.invoke(app, ["apply", str(tmp_path / "auto.json"), f"{copy}::{ZMAP}", "--out",
                                 str(tmp_path / "w.npy")])
    assert warped.exit_code == 0, warped.stderr
    assert np.load(tmp_path / "w.npy").shape == (1024, 1024)
    assert load_saved(tmp_path / "auto.json").fixed_shape == (1024, 1024)
    bad = runner.invoke(app, ["register", f"{copy}::{TOPO}", str(tmp_path / "w.npy"), "--in-place"])
    assert bad.exit_code == 2 and "--in-place needs" in bad.stderr
