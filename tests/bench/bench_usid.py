"""Reading a 2048² USID image (autoreg's h5py path) against TIFF and against pyUSID, in the same run.

Run: ``.venv/bin/python tests/bench/bench_usid.py``. Not collected by pytest. Goal: USID <= 1.5x TIFF.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from _timing import timed  # noqa: E402

from autoreg.io import load_image  # noqa: E402


def main() -> None:
    import h5py
    import tifffile

    from autoreg.usid import write_main

    image = np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tif, h5, h5z = Path(tmp) / "image.tif", Path(tmp) / "image.h5", Path(tmp) / "image_gzip.h5"
        tifffile.imwrite(tif, image)
        for path, compress in ((h5, False), (h5z, True)):
            with h5py.File(path, "w") as f:
                write_main(f.create_group("Measurement_000/Channel_000"), "Raw_Data", image, quantity="Height",
                                units="nm", pixel_size=0.1, compress=compress)
        spec = f"{h5}::/Measurement_000/Channel_000/Raw_Data"
        spec_z = f"{h5z}::/Measurement_000/Channel_000/Raw_Data"
        assert np.array_equal(load_image(spec).data, load_image(tif).data)
        t_tif = timed(lambda: load_image(tif))
        t_h5 = timed(lambda: load_image(spec))
        t_h5z = timed(lambda: load_image(spec_z))
        code = ("import time, h5py, pyUSID; t = time.perf_counter(); "
                f"f = h5py.File(r'{h5}', 'r'); pyUSID.USIDataset(f['/Measurement_000/Channel_000/Raw_Data'])"
                ".get_n_dim_form(); print(time.perf_counter() - t)")
        t_pyusid = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True).stdout.split()[-1])
        t_import = float(subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import pyUSID; "
                                         "print(time.perf_counter() - t)"], capture_output=True, text=True,
                                        check=True).stdout.split()[-1])
    print("2048² float32 image, median of 5 (USID main dataset with position ancillaries vs plain TIFF):")
    print(f"  TIFF (tifffile)            {t_tif * 1e3:7.0f} ms   1.0x")
    print(f"  USID (autoreg, h5py)       {t_h5 * 1e3:7.0f} ms   {t_h5 / t_tif:.2f}x TIFF (goal <= 1.5x; as pycroscopy "
          "writes it, uncompressed)")
    print(f"  USID gzip (autoreg, h5py)  {t_h5z * 1e3:7.0f} ms   {t_h5z / t_tif:.2f}x TIFF (decompression)")
    print(f"  USID (pyUSID get_n_dim_form, one run) {t_pyusid * 1e3:7.0f} ms   {t_pyusid / t_tif:.1f}x TIFF; "
          f"importing pyUSID alone {t_import:.1f} s")


if __name__ == "__main__":
    main()
