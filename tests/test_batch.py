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


def _batch(*args):
    return runner.invoke(app, ["batch", *[str(a) for a in args]])


def test_a_changed_model_recomputes_instead_of_serving_the_cached_row(scans, tmp_path):
    items = plan([str(scans / "scan_1.tif")], reference=str(scans / "ref.tif"), against="reference", out_dir=tmp_path)
    first = run_batch(items, out_dir=tmp_path, options={"model": "rigid"})
    again = run_batch(items, out_dir=tmp_path, options={"model": "rigid"})
    assert first[0]["model"] == "rigid" and again[0]["resumed"] and not first[0]["resumed"]
    changed = run_batch(items, out_dir=tmp_path, options={"model": "similarity"})
    assert changed[0]["model"] == "similarity" and not changed[0]["resumed"]
    reseeded = run_batch(items, out_dir=tmp_path, options={"model": "similarity", "seed": 1})
    assert not reseeded[0]["resumed"]


def test_a_replaced_scan_and_an_error_row_are_recomputed(scans, tmp_path):
    import os
    import shutil

    work = tmp_path / "scans"
    work.mkdir()
    shutil.copy(scans / "ref.tif", work / "ref.tif")
    (work / "new.tif").write_bytes(b"a broken scan")
    items = plan([str(work / "new.tif")], reference=str(work / "ref.tif"), against="reference", out_dir=tmp_path / "o")
    assert run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})[0]["verdict"] == "error"
    retried = run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})
    assert retried[0]["verdict"] == "error" and not retried[0]["resumed"]  # error rows are retried
    shutil.copy(scans / "scan_2.tif", work / "new.tif")  # the good scan replaces the broken one
    assert run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})[0]["verdict"] == "ok"
    # the same size and modification time but other content: the content hash tells
    stat = (work / "new.tif").stat()
    data = tifffile.imread(scans / "scan_3.tif")
    tifffile.imwrite(work / "new.tif", data)
    assert (work / "new.tif").stat().st_size == stat.st_size
    os.utime(work / "new.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    redone = run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})
    assert not redone[0]["resumed"]
    np.testing.assert_allclose(np.array(redone[0]["matrix"])[:2, :2], _rotation(3)[:2, :2], atol=0.005)
    # a changed reference recomputes too
    assert run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})[0]["resumed"]
    tifffile.imwrite(work / "ref.tif", tifffile.imread(work / "ref.tif") * 2.0)
    assert not run_batch(items, out_dir=tmp_path / "o", options={"model": "rigid"})[0]["resumed"]


def test_a_changed_configuration_or_version_recomputes(scans, tmp_path, monkeypatch):
    from autoreg import batch as batch_module
    from autoreg.config import RegistrationConfig

    items = plan([str(scans / "scan_1.tif")], reference=str(scans / "ref.tif"), against="reference", out_dir=tmp_path)
    run_batch(items, out_dir=tmp_path, options={"model": "rigid"})
    tuned = run_batch(items, out_dir=tmp_path, options={"model": "rigid", "config": RegistrationConfig(n_features=900)})
    assert not tuned[0]["resumed"]
    assert run_batch(items, out_dir=tmp_path, options={"model": "rigid",
                                                       "config": RegistrationConfig(n_features=900)})[0]["resumed"]
    monkeypatch.setattr("autoreg._version.__version__", "999.0")
    assert batch_module.resume_key({"a": 1}, {"b": 2}, {}) != ""
    newer = run_batch(items, out_dir=tmp_path, options={"model": "rigid", "config": RegistrationConfig(n_features=900)})
    assert not newer[0]["resumed"]


def test_cli_rerun_says_what_it_skipped_and_counts_verdicts(scans, tmp_path):
    args = [scans / "scan_[1-2].tif", scans / "scan_9.tif", "--reference", scans / "ref.tif", "--out-dir", tmp_path,
            "--workers", "1", "--model", "rigid"]
    first = _batch(*args)
    assert first.exit_code == 4, first.stderr
    assert "ok 2 · low_confidence 0 · failed 0 · error 1" in first.stderr
    assert "skipped" not in first.stderr
    second = _batch(*args)
    assert "skipped 2 already done" in second.stderr  # the error row is retried, not skipped
    assert [json.loads(line)["resumed"] for line in second.stdout.splitlines()] == [True, True, False]


def test_batch_model_all_is_a_usage_error_before_any_work(scans, tmp_path):
    out = tmp_path / "never"
    done = _batch(scans / "scan_1.tif", "--reference", scans / "ref.tif", "--out-dir", out, "--model", "all")
    assert done.exit_code == 2 and done.stderr.startswith("error: Unknown batch model 'all'")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not out.exists()


def test_write_warped_report_dir_and_an_aligned_stack(scans, tmp_path):
    warped, reports = tmp_path / "warped", tmp_path / "reports"
    done = _batch(scans / "scan_[0-3].tif", "--reference", scans / "ref.tif", "--out-dir", tmp_path / "out",
                  "--workers", "1", "--model", "rigid", "--write-warped", warped, "--report-dir", reports,
                  "--stack", tmp_path / "stack.tif")
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(p.name for p in warped.iterdir()) == sorted(Path(r["output"]).stem + ".tif" for r in rows)
    assert sorted(p.suffix for p in reports.iterdir()) == [".png"] * 4
    stack = tifffile.imread(tmp_path / "stack.tif")
    assert stack.shape == (4, 160, 160)
    reference = tifffile.imread(scans / "ref.tif")
    for k in range(4):
        np.testing.assert_allclose(stack[k], tifffile.imread(warped / Path(rows[k]["warped"]).name), equal_nan=True)
        overlap = np.isfinite(stack[k])
        assert np.corrcoef(stack[k][overlap], reference[overlap])[0, 1] > 0.95


def test_a_drift_series_becomes_an_aligned_stack(tmp_path):
    from autoreg.io import load_cube

    base = make_pair(seed=8, fixed_shape=(176, 176), moving_shape=(176, 176))
    steps = [np.array([[1, 0, 3.0 * k], [0, 1, -2.0 * k], [0, 0, 1]]) for k in range(4)]
    for k, matrix in enumerate(steps):  # scan k shows the scene shifted by k drift steps
        scene = make_pair(seed=8, fixed_shape=(176, 176), moving_shape=(176, 176), matrix=matrix)
        tifffile.imwrite(tmp_path / f"frame_{k}.tif", scene.moving)
    done = _batch(tmp_path / "frame_*.tif", "--against", "predecessor", "--out-dir", tmp_path / "out", "--workers",
                  "1", "--model", "translation", "--stack", tmp_path / "stack.h5")
    assert done.exit_code == 0, done.stderr
    stack, meta = load_cube(f"{tmp_path / 'stack.h5'}::/Measurement_000/Channel_000/Aligned_Stack")
    assert stack.shape == (176, 176, 4) and meta["spectral"]["labels"] == ["Frame"]
    first = stack[..., 0]
    for k in range(1, 4):  # every frame chained back onto the first scan
        overlap = np.isfinite(stack[..., k]) & np.isfinite(first)
        assert overlap.mean() > 0.7
        assert np.abs(stack[..., k][overlap] - first[overlap]).mean() < 0.05 * np.std(first[overlap]), k
    assert base.fixed.shape == (176, 176)


@pytest.fixture(scope="module")
def mirrored_scans(tmp_path_factory):
    """Two scans stored with their rows reversed against the reference, and each one's truth as stored."""
    from autoreg.mirror import flip_rows_matrix

    folder = tmp_path_factory.mktemp("mirrored")
    truths = {}
    for i in (1, 2):
        pair = make_pair(seed=5, fixed_shape=(160, 160), moving_shape=(160, 160), matrix=_rotation(i))
        if i == 1:
            tifffile.imwrite(folder / "ref.tif", pair.fixed)
        tifffile.imwrite(folder / f"scan_{i}.tif", pair.moving[::-1].copy())
        truths[f"scan_{i}.tif"] = _rotation(i) @ flip_rows_matrix((160, 160))
    return folder, truths


def _items(out: Path) -> dict[str, dict]:
    """Each item's JSON (the whole result, not the summary row) by the moving scan's file name."""
    items = (json.loads(p.read_text()) for p in sorted(out.glob("0*.json")))
    return {Path(item["moving"]).name: item for item in items}


def test_what_the_user_knows_reaches_every_item_and_its_resume_key(mirrored_scans, tmp_path):
    """--mirrored, --pixel-size and --tolerance-px hold for every item; changing one recomputes, repeating resumes."""
    from autoreg.geometry import apply_matrix, mean_grid_distance

    folder, truths = mirrored_scans
    common = [folder / "scan_*.tif", "--reference", folder / "ref.tif", "--out-dir", tmp_path / "out", "--workers", 1]
    told = _batch(*common, "--mirrored", "--pixel-size", "0.5", "0.5", "--tolerance-px", "1.5")
    assert told.exit_code == 0, told.stdout + told.stderr
    items = _items(tmp_path / "out")
    assert set(items) == set(truths)
    for name, item in items.items():
        assert item["verdict"] == "ok", item["reasons"]
        assert item["mirrored"] is True and item["mirror_source"] == "user"
        assert item["scale_source"] == "user" and item["expected_scale"] == pytest.approx(1.0)
        assert item["tolerance_px"] == pytest.approx(1.5)
        matrix = np.array(item["matrix"])
        assert np.linalg.det(matrix[:2, :2]) < 0  # the scan as stored is the mirror image
        assert mean_grid_distance(lambda xy, m=matrix: apply_matrix(m, xy),
                                  lambda xy, t=truths[name]: apply_matrix(t, xy), (160, 160)) < 0.5
    again = _batch(*common, "--mirrored", "--pixel-size", "0.5", "0.5", "--tolerance-px", "1.5")
    assert again.exit_code == 0 and all(json.loads(line)["resumed"] for line in again.stdout.splitlines())
    untold = _batch(*common, "--not-mirrored", "--pixel-size", "0.5", "0.5", "--tolerance-px", "1.5")
    rows = [json.loads(line) for line in untold.stdout.splitlines()]
    assert len(rows) == 2 and not any(r["resumed"] for r in rows)
    assert untold.exit_code in (3, 4) and "ok" not in {r["verdict"] for r in rows}  # no rotation undoes a mirror
    assert all(item["mirrored"] is False for item in _items(tmp_path / "out").values())


@pytest.mark.parametrize("args", [["--scale", "-2"], ["--tolerance-px", "0"], ["--pixel-size", "1", "0"],
                                  ["--pixel-size", "inf", "1"], ["--scale", "2", "--pixel-size", "1", "2"]])
def test_bad_batch_priors_are_one_line_errors_before_any_work(scans, tmp_path, args):
    out = tmp_path / "out"
    result = _batch(scans / "scan_1.tif", "--reference", scans / "ref.tif", "--out-dir", out, *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not out.exists() and result.stdout == ""
