"""Batch registration: determinism across workers, bad items, resume, summaries, a Dask cluster."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from autoreg.batch import expand_inputs, plan, run_batch
from autoreg.cli import app
from autoreg.errors import InputError
from autoreg.synthetic import make_pair

runner = CliRunner()


def _rotation(i):
    a = np.deg2rad(3 * i)
    return np.array([[np.cos(a), -np.sin(a), 4.0 * i], [np.sin(a), np.cos(a), -3.0 * i], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    for i in range(4):
        pair = make_pair(seed=5, fixed_shape=(160, 160), moving_shape=(160, 160), matrix=_rotation(i))
        if i == 0:
            tifffile.imwrite(folder / "ref.tif", pair.fixed)
        tifffile.imwrite(folder / f"scan_{i}.tif", pair.moving)
    (folder / "scan_9.tif").write_bytes(b"not a tiff")
    return folder


def _matrices(rows):
    return {Path(r["moving"]).name: r["matrix"] for r in rows}


def test_batch_is_deterministic_across_workers_and_survives_a_bad_file(scans, tmp_path):
    movings = expand_inputs([str(scans / "scan_*.tif")])
    assert [Path(m).name for m in movings] == ["scan_0.tif", "scan_1.tif", "scan_2.tif", "scan_3.tif", "scan_9.tif"]
    one = run_batch(plan(movings, reference=str(scans / "ref.tif"), against="reference", out_dir=tmp_path / "a"),
                    out_dir=tmp_path / "a", workers=1, options={"model": "rigid"})
    two = run_batch(plan(movings, reference=str(scans / "ref.tif"), against="reference", out_dir=tmp_path / "b"),
                    out_dir=tmp_path / "b", workers=2, options={"model": "rigid"})
    matrices_one, matrices_two = _matrices(one), _matrices(two)
    assert matrices_one.keys() == matrices_two.keys()
    for name, matrix in matrices_one.items():
        if matrix is None:
            assert matrices_two[name] is None
        else:
            np.testing.assert_allclose(matrix, matrices_two[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert one[-1]["verdict"] == "error" and "Cannot read TIFF" in one[-1]["reasons"][0]
    for i, row in enumerate(one[:4]):
        assert row["verdict"] == "ok", row
        matrix = np.array(row["matrix"])
        np.testing.assert_allclose(matrix[:2, :2], _rotation(i)[:2, :2], atol=0.005)
        np.testing.assert_allclose(matrix[:2, 2], _rotation(i)[:2, 2], atol=0.25)


def test_resume_skips_complete_items_and_force_redoes_them(scans, tmp_path):
    items = plan([str(scans / "scan_1.tif"), str(scans / "scan_2.tif")], reference=str(scans / "ref.tif"),
                 against="reference", out_dir=tmp_path)
    run_batch(items, out_dir=tmp_path, options={"model": "rigid"})
    first = Path(items[0].output).stat().st_mtime_ns
    rows = run_batch(items, out_dir=tmp_path, options={"model": "rigid"})
    assert Path(items[0].output).stat().st_mtime_ns == first
    assert all(r["verdict"] == "ok" for r in rows)
    run_batch(items, out_dir=tmp_path, force=True, options={"model": "rigid"})
    assert Path(items[0].output).stat().st_mtime_ns != first


def test_drift_series_modes_pair_the_right_scans(tmp_path):
    scans = ["a.tif", "b.tif", "c.tif"]
    assert [(i.moving, i.fixed) for i in plan(scans, reference=None, against="predecessor", out_dir=tmp_path)] == [
        ("b.tif", "a.tif"), ("c.tif", "b.tif")]
    assert [(i.moving, i.fixed) for i in plan(scans, reference=None, against="first", out_dir=tmp_path)] == [
        ("b.tif", "a.tif"), ("c.tif", "a.tif")]
    with pytest.raises(InputError, match="needs --reference"):
        plan(scans, reference=None, against="reference", out_dir=tmp_path)
    with pytest.raises(InputError, match="No file matches"):
        expand_inputs([str(tmp_path / "*.nothing")])


def test_usid_dataset_patterns_expand_to_image_channels():
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"
    found = expand_inputs([f"{fixture}::/Measurement_*/Channel_*/*"])
    assert [f.split("::")[1] for f in found] == ["/Measurement_000/Channel_000/STM_Topography",
                                                 "/Measurement_001/Channel_001/STS_Z_Contrast"]


def test_cli_batch_writes_summaries_and_exits_with_the_worst_code(scans, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(scans / "scan_*.tif"), "--reference", str(scans / "ref.tif"),
                                 "--out-dir", str(out), "--workers", "1", "--model", "rigid"])
    assert result.exit_code == 4, result.stdout + result.stderr  # the broken file's error row
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["verdict"] for r in rows] == ["ok"] * 4 + ["error"]
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("index,moving,fixed,verdict,reasons")
    assert len((out / "summary.jsonl").read_text().splitlines()) == 5
    ok_only = runner.invoke(app, ["batch", str(scans / "scan_[0-3].tif"), "--reference", str(scans / "ref.tif"),
                                  "--out-dir", str(tmp_path / "ok"), "--workers", "1", "--model", "rigid"])
    assert ok_only.exit_code == 0, ok_only.stdout + ok_only.stderr
    bad = runner.invoke(app, ["batch", str(scans / "scan_1.tif"), "--against", "sideways"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: Unknown --against")


def test_batch_runs_on_a_dask_cluster(scans, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        items = plan([str(scans / f"scan_{i}.tif") for i in range(3)], reference=str(scans / "ref.tif"),
                     against="reference", out_dir=tmp_path)
        rows = run_batch(items, out_dir=tmp_path, scheduler=cluster.scheduler_address, options={"model": "rigid"})
    local = run_batch(plan([str(scans / f"scan_{i}.tif") for i in range(3)], reference=str(scans / "ref.tif"),
                           against="reference", out_dir=tmp_path / "local"), out_dir=tmp_path / "local",
                      options={"model": "rigid"})
    assert _matrices(rows) == _matrices(local)
