"""The README's examples run as written: its Python blocks in the repository, its shell blocks in a scratch folder.

Shell blocks that install the package, run the test suite or the benchmarks are not examples of use and are skipped;
so is the interactive ``autoreg pick`` block (it waits for a person: tests/test_pick_browser.py drives it).
The batch example's `new_scans/` and `reference.tif` stand for the reader's files: synthetic ones are made here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(python|bash)\n(.*?)^```", README, flags=re.S | re.M)
NOT_EXAMPLES = ("pip install", "pytest", "tests/bench", "autoreg pick")


def _blocks(language):
    return [code for lang, code in BLOCKS if lang == language]


def _python_examples():
    """Python blocks to run: all but the interactive picker's (tests/test_pick_api.py drives autoreg.pick)."""
    return [code for code in _blocks("python") if "autoreg.pick(" not in code]


def test_the_readme_has_the_examples_this_test_runs():
    shell = [code for code in _blocks("bash") if not any(word in code for word in NOT_EXAMPLES)]
    assert len(_python_examples()) >= 2 and len(shell) >= 4
    assert any("autoreg apply" in code for code in shell) and any("autoreg batch" in code for code in shell)


@pytest.mark.parametrize("index", range(len(_python_examples())))
def test_python_examples_run(index, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    exec(compile(_python_examples()[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "Traceback" not in printed and printed.strip()


def _scans(folder: Path) -> None:
    from autoreg.synthetic import make_pair

    (folder / "new_scans").mkdir()
    for i in range(3):
        angle = np.deg2rad(4.0 * i)
        matrix = np.array([[np.cos(angle), -np.sin(angle), 5.0 * i], [np.sin(angle), np.cos(angle), -3.0 * i],
                           [0, 0, 1.0]])
        pair = make_pair(seed=5, fixed_shape=(160, 160), moving_shape=(160, 160), matrix=matrix)
        if i == 0:
            tifffile.imwrite(folder / "reference.tif", pair.fixed)
        tifffile.imwrite(folder / "new_scans" / f"scan_{i}.tif", pair.moving)


def test_shell_examples_run_in_order(tmp_path):
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures", target_is_directory=True)
    _scans(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120"}
    for code in _blocks("bash"):
        if any(word in code for word in NOT_EXAMPLES):
            continue
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{code}\n--- exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr
    demo = json.loads((tmp_path / "autoreg-demo" / "auto.json").read_text())
    assert demo["verdict"] == "ok" and np.asarray(demo["matrix_physical"]).shape == (3, 3)
    assert json.loads((tmp_path / "result.json").read_text())["results_group"].startswith("scan.h5::")
    assert sorted(p.suffix for p in (tmp_path / "aligned").iterdir()) == [".npy", ".tif"]
    spectra = np.loadtxt(tmp_path / "spectra_under_features.csv", delimiter=",", skiprows=1)
    assert spectra.shape == (2, 4) and np.all((spectra[:, 2:] > -1) & (spectra[:, 2:] < 41))
    assert tifffile.imread(tmp_path / "aligned_stack.tif").shape == (3, 160, 160)


def test_the_readme_describes_auto_as_the_code_does_and_writes_sizes_one_way():
    from autoreg.config import RegistrationConfig

    sentence = README[README.index('`model="auto"` compares'):]
    sentence = sentence[: sentence.index("`RegistrationConfig.auto_models`")]
    named = re.findall(r"[a-z-]+", sentence.split("compares", 1)[1])
    assert [m for m in named if m not in ("and", "the")] == list(RegistrationConfig().auto_models)
    assert "15 %" not in README
    assert not re.search(r"\b\d+ ?x ?\d+\b", README), re.search(r"\b\d+ ?x ?\d+\b", README)
