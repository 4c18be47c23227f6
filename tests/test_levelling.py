"""SPM levelling on synthetic scan lines: offsets go, steps stay, scars and spikes go, NaN stays put."""

import dataclasses

import numpy as np
import pytest

from autoreg.errors import InputError
from autoreg.levelling import (
    Levelled,
    align_rows,
    level_scan,
    remove_background,
    remove_scars,
    remove_spikes,
)
from autoreg.synthetic import make_scene

STEP = 0.2
NOISE = 0.01


def straight_terraces(shape, angle_deg, *, spacing=16.0):
    """Terraces 0.2 high whose step edges run at ``angle_deg`` to the rows (0 = parallel to the rows)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    angle = np.deg2rad(angle_deg)
    level = np.floor((rows * np.cos(angle) - cols * np.sin(angle)) / spacing).astype(int)
    level -= level.min()
    return STEP * level, level


def with_row_offsets(clean, rng, scale):
    """``clean`` plus a random offset per row (``scale`` times the image's standard deviation) and noise."""
    offsets = rng.normal(0.0, scale * clean.std(), (clean.shape[0], 1))
    return clean + offsets + rng.normal(0.0, NOISE, clean.shape)


def polynomial_terms(shape, order):
    """Monomials row**j * col**i (i + j <= order) on a grid, coordinates scaled to [0, 1]."""
    r, c = np.mgrid[: shape[0], : shape[1]] / max(shape)
    return [r**j * c**i for j in range(order + 1) for i in range(order + 1 - j)]


def step_height(image, level, adsorbate=None, *, order=1):
    """Terrace step height by least squares: image ≈ polynomial(order) + h·level [+ g·adsorbate] (finite
    pixels). With the scene's adsorbate map as a regressor, adsorbates that sit on high terraces do not
    bias ``h``; the polynomial absorbs whatever background was removed."""
    ok = np.isfinite(image)
    columns = [t[ok] for t in polynomial_terms(image.shape, order)] + [level[ok]]
    if adsorbate is not None:
        columns.append(adsorbate[ok])
    coef = np.linalg.lstsq(np.stack(columns, axis=1), image[ok], rcond=None)[0]
    return coef[len(columns) - (2 if adsorbate is not None else 1)]


def remove_lstsq_polynomial(image, order=1):
    """``image`` minus its least-squares polynomial of total degree ``order`` (finite pixels)."""
    ok = np.isfinite(image)
    terms = polynomial_terms(image.shape, order)
    coef = np.linalg.lstsq(np.stack([t[ok] for t in terms], axis=1), image[ok], rcond=None)[0]
    return image - sum(k * t for k, t in zip(coef, terms))


def remove_lstsq_plane(image):
    """``image`` minus its least-squares plane (finite pixels)."""
    return remove_lstsq_polynomial(image, 1)


def row_offset_rms(image, clean, *, plane=False):
    """RMS over rows of the per-row median of ``image - clean`` (centred; optionally after a plane fit)."""
    diff = image - clean
    if plane:
        diff = remove_lstsq_plane(diff)
    has = np.isfinite(diff).any(axis=1)
    per_row = np.nanmedian(diff[has], axis=1)
    return float(np.sqrt(np.mean((per_row - per_row.mean()) ** 2)))


# ------------------------------------------------------------------------------------------------ rows


@pytest.mark.parametrize("angle", [5, 10, 30, 45, 60, 90])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_align_rows_removes_offsets_and_keeps_angled_steps(angle, scale):
    rng = np.random.default_rng(1000 + angle + int(10 * scale))
    clean, level = straight_terraces((128, 128), angle)
    raw = with_row_offsets(clean, rng, scale)
    out = align_rows(raw)
    assert row_offset_rms(out, clean) <= row_offset_rms(raw, clean) / 5
    assert step_height(out, level) == pytest.approx(STEP, rel=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_align_rows_on_meandering_terraces_with_adsorbates(seed):
    rng = np.random.default_rng(seed)
    scene = make_scene((192, 192), seed=seed)
    clean = scene.height
    raw = with_row_offsets(clean, rng, rng.uniform(0.5, 3.0))
    out = align_rows(raw)
    assert row_offset_rms(out, clean) <= row_offset_rms(raw, clean) / 5
    assert step_height(out, scene.level, scene.adsorbate) == pytest.approx(STEP, rel=0.1)


def test_median_method_removes_offsets_on_terrain_without_steps():
    rng = np.random.default_rng(7)
    clean = 0.35 * make_scene((128, 128), seed=7).adsorbate
    raw = with_row_offsets(clean, rng, 2.0)
    out = align_rows(raw, method="median")
    assert row_offset_rms(out, clean) <= row_offset_rms(raw, clean) / 5


@pytest.mark.parametrize("angle", [10, 30, 60])
def test_median_difference_beats_row_median_on_terraces(angle):
    """Why the default: a row's median jumps by a step whenever most of the row crosses onto another
    terrace, leaving row artefacts of a fraction of a step; the median of differences does not."""
    clean, _ = straight_terraces((128, 128), angle)
    raw = with_row_offsets(clean, np.random.default_rng(angle), 1.0)
    by_median = row_offset_rms(align_rows(raw, method="median"), clean, plane=True)
    by_difference = row_offset_rms(align_rows(raw), clean, plane=True)
    assert by_median > 0.1 * STEP
    assert by_difference < 0.1 * by_median


def test_horizontal_step_is_taken_for_a_row_offset_documented_limitation():
    """A step edge parallel to the rows looks exactly like a row offset: row alignment removes it."""
    rng = np.random.default_rng(3)
    clean = np.zeros((64, 64))
    clean[32:] = STEP
    level = (clean > 0).astype(int)
    raw = clean + rng.normal(0.0, NOISE, clean.shape)
    assert step_height(align_rows(raw), level) == pytest.approx(0.0, abs=0.02)
    assert step_height(align_rows(raw, method="median"), level) == pytest.approx(0.0, abs=0.02)
    kept = level_scan(raw, rows=False)  # the way out for scans whose real structure runs along x
    assert step_height(kept.data, level) == pytest.approx(STEP, rel=0.1)
    assert not any(step.startswith("rows") for step in kept.steps)


def test_rows_bridge_missing_lines_and_partial_rows():
    """Rows connect through a missing line and through rows that share only a few columns. (Rows that
    share fewer than ``min_overlap`` columns fall back to the difference of their medians: a documented
    limitation, not tested here.)"""
    rng = np.random.default_rng(11)
    clean, level = straight_terraces((96, 96), 30)
    raw = with_row_offsets(clean, rng, 2.0)
    raw[40] = np.nan  # a missing line
    raw[50:60, :40] = np.nan  # the left part of these rows
    raw[60:70, 56:] = np.nan  # then the right part: rows 59 and 60 share 16 columns
    out = align_rows(raw)
    assert row_offset_rms(out, clean) <= row_offset_rms(raw, clean) / 5
    assert step_height(out, level) == pytest.approx(STEP, rel=0.1)


# ----------------------------------------------------------------------------------------- background


def test_remove_background_recovers_polynomials_of_each_order():
    rows, cols = np.mgrid[:48, :64].astype(float)
    x, y = cols / 63, rows / 47
    for order, surface in [
        (0, 1.5 + 0 * x),
        (1, 1.5 + 0.8 * x - 0.3 * y),
        (2, 1.5 + 0.8 * x - 0.3 * y + 0.5 * x**2 - 0.2 * x * y + 0.4 * y**2),
        (3, 1.5 + 0.8 * x - 0.3 * y + 0.5 * x**2 + 0.7 * x**3 - 0.6 * x * y**2 + 0.2 * y**3),
    ]:
        np.testing.assert_allclose(remove_background(surface, order=order), 0.0, atol=1e-9)


def test_remove_background_is_not_tilted_by_a_few_high_features():
    rng = np.random.default_rng(5)
    rows, cols = np.mgrid[:128, :128].astype(float)
    tilt = 0.004 * cols - 0.002 * rows
    ground = rng.normal(0.0, NOISE, (128, 128))
    features = np.zeros((128, 128))
    features[10:40, 90:120] = 2.0  # tall, all in one corner: a least-squares plane would tilt towards it
    features[90:100, 100:125] = 1.5
    out = remove_background(ground + tilt + features)
    flat = features == 0
    residual = out[flat] - ground[flat]
    assert np.abs(residual - residual.mean()).max() < 5 * NOISE
    naive = remove_lstsq_plane(ground + tilt + features)
    naive_residual = naive[flat] - ground[flat]
    assert np.abs(naive_residual - naive_residual.mean()).max() > 0.2  # the test would catch a plain fit


def test_remove_background_ignores_invalid_pixels_but_corrects_them():
    cols = np.mgrid[:64, :64][1].astype(float)
    tilt = 0.01 * cols
    image = tilt.copy()
    image[:32] += 5.0  # half the image, marked invalid: it must not pull the fit
    valid = np.ones(image.shape, bool)
    valid[:32] = False
    out = remove_background(image, valid)
    np.testing.assert_allclose(out[32:], out[32:].mean(), atol=1e-9)
    np.testing.assert_allclose(out[:32] - out[32:], 5.0, atol=1e-9)  # the background left it too


def test_background_order_drops_when_too_few_pixels():
    image = np.full((8, 8), np.nan)
    image[2, 3], image[5, 1], image[6, 6] = 1.0, 2.0, 3.0
    levelled = level_scan(image, background_order=2)
    assert levelled.steps[-1] == "background: order 0 (2 requested, too few valid pixels)"
    assert np.nanmean(levelled.data) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------- spikes


def noisy_scene(seed, shape=(128, 128)):
    scene = make_scene(shape, seed=seed)
    rng = np.random.default_rng(seed)
    return scene, scene.height + rng.normal(0.0, NOISE, shape), rng


def test_remove_spikes_replaces_singles_and_pairs_and_nothing_else():
    _, base, rng = noisy_scene(21)
    image = base.copy()
    spots = [(10, 10), (40, 77), (90, 30), (120, 120)]
    for (r, c), sign in zip(spots, (1, -1, 1, -1)):
        image[r, c] += sign * rng.uniform(0.5, 3.0)
    image[60, 60:62] += 1.0  # a horizontal pair
    image[100:102, 15] -= 1.2  # a vertical pair
    image[0, 50] += 2.0  # on the border
    hit = image != base
    out = remove_spikes(image)
    assert np.abs(out[hit] - base[hit]).max() < 5 * NOISE
    assert np.count_nonzero(out[~hit] != base[~hit]) == 0


@pytest.mark.parametrize("noise", [0.0, NOISE])
def test_remove_spikes_leaves_clean_terrain_alone(noise):
    """Terrace corners and adsorbate tops are sharp but not isolated: kept, even without noise."""
    scene = make_scene((192, 192), seed=4)
    image = scene.height + np.random.default_rng(4).normal(0.0, noise, scene.height.shape)
    assert np.count_nonzero(remove_spikes(image) != image) == 0


# ---------------------------------------------------------------------------------------------- scars


def add_scars(image, rng, n):
    """``n`` streaks along random rows (1 row thick, the last one 2), 4–30 px long, ±0.5–1.0 high."""
    out = image.copy()
    rows = rng.choice(np.arange(5, image.shape[0] - 6, 4), n, replace=False)
    for i, r in enumerate(rows):
        length = int(rng.integers(4, 31))
        c = int(rng.integers(0, image.shape[1] - length))
        width = 2 if i == n - 1 else 1
        out[r : r + width, c : c + length] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)
    return out


def test_remove_scars_replaces_streaks_from_neighbouring_rows():
    _, base, rng = noisy_scene(31)
    image = add_scars(base, rng, 6)
    hit = image != base
    out = remove_scars(image)
    assert np.abs(out[hit] - base[hit]).max() < 5 * NOISE
    assert np.count_nonzero(out[~hit] != base[~hit]) == 0
    assert "scars: 6 streaks" in level_scan(image, background_order=None).steps


@pytest.mark.parametrize("angle", [20, 45, 70])
def test_scar_across_step_edges_keeps_the_edges(angle):
    """Interpolating across a step edge would land mid-step; there the streak's own offset is removed."""
    clean, _ = straight_terraces((64, 96), angle, spacing=8.0)
    base = clean + np.random.default_rng(angle).normal(0.0, NOISE, clean.shape)
    image = base.copy()
    image[30, 5:90] += 0.7  # crosses several edges
    out = remove_scars(image)
    np.testing.assert_allclose(out[30], base[30], atol=5 * NOISE)


@pytest.mark.parametrize("noise", [0.0, NOISE])
def test_remove_scars_leaves_clean_terrain_alone(noise):
    scene = make_scene((192, 192), seed=8)
    image = scene.height + np.random.default_rng(8).normal(0.0, noise, scene.height.shape)
    assert np.count_nonzero(remove_scars(image) != image) == 0


# ---------------------------------------------------------------------------------------------- chain


def raw_scan(seed, shape=(192, 192), scale=2.0):
    # 192 px, not 128: make_scene's largest adsorbates (~50 px across) would cover half a 128 px line, and
    # row alignment partly flattens anything that wide (see the clean-scan test)
    """A terraced scene with row offsets, tilt, a few spikes and scars; and the clean scene."""
    scene = make_scene(shape, seed=seed)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    raw = with_row_offsets(scene.height, rng, scale) + 0.003 * cols - 0.002 * rows
    raw = add_scars(raw, rng, 3)
    spikes = rng.integers(2, min(shape) - 2, (5, 2))
    raw[spikes[:, 0], spikes[:, 1]] += 2.0
    return scene, raw


@pytest.mark.parametrize("seed", [41, 42])
def test_level_scan_cleans_a_raw_scan_and_keeps_steps(seed):
    scene, raw = raw_scan(seed)
    levelled = level_scan(raw)
    assert levelled.steps[0] == "rows: median_difference"
    assert levelled.steps[-1] == "background: order 1"
    assert row_offset_rms(levelled.data, scene.height, plane=True) <= row_offset_rms(raw, scene.height) / 5
    assert step_height(levelled.data, scene.level, scene.adsorbate) == pytest.approx(STEP, rel=0.1)
    residual = remove_lstsq_plane(levelled.data - scene.height)
    assert np.percentile(np.abs(residual), 99.5) < 0.1  # no spike or scar left standing


@pytest.mark.parametrize("seed", [51, 52])
def test_level_scan_leaves_a_clean_scan_nearly_unchanged_apart_from_its_plane(seed):
    """What changes is a smooth drift from row to row: broad adsorbates whose slope across a line is within
    the noise look like a small row offset and are partly flattened (as in every SPM package)."""
    scene, image, _ = noisy_scene(seed, (160, 160))
    rows, cols = np.mgrid[:160, :160].astype(float)
    levelled = level_scan(image + 0.002 * cols + 0.001 * rows)
    change = remove_lstsq_plane(levelled.data - image)
    assert np.sqrt(np.mean(change**2)) < 0.15 * image.std()
    assert levelled.steps[1:3] == ("scars: 0 streaks", "spikes: 0 pixels")
    assert step_height(levelled.data, scene.level, scene.adsorbate) == pytest.approx(STEP, rel=0.1)


def test_level_scan_with_bow_and_order_2():
    scene, raw = raw_scan(61)
    cols = np.mgrid[:192, :192][1].astype(float)
    bowed = raw + 0.5 * ((cols - 96) / 96) ** 2
    levelled = level_scan(bowed, background_order=2)
    assert levelled.steps[-1] == "background: order 2"
    # what was removed is a polynomial of order 2 (up to the row drift of the clean-scan test)
    residual = remove_lstsq_polynomial(levelled.data - scene.height, 2)
    assert np.sqrt(np.mean(residual**2)) < 0.15 * scene.height.std()
    assert step_height(levelled.data, scene.level, scene.adsorbate, order=2) == pytest.approx(STEP, rel=0.1)


def test_nan_pixels_stay_nan_and_do_not_spread():
    scene, raw = raw_scan(71)
    rng = np.random.default_rng(71)
    raw[rng.random(raw.shape) < 0.03] = np.nan
    raw[20:35, 50:70] = np.nan
    raw[:, 100] = np.nan
    raw[90] = np.nan
    levelled = level_scan(raw)
    np.testing.assert_array_equal(np.isnan(levelled.data), np.isnan(raw))
    assert row_offset_rms(levelled.data, scene.height, plane=True) <= row_offset_rms(raw, scene.height) / 5
    assert step_height(levelled.data, scene.level, scene.adsorbate) == pytest.approx(STEP, rel=0.1)


def test_spikes_and_scars_next_to_nan_are_still_replaced():
    _, base, _ = noisy_scene(81, (64, 64))
    base[30:34, 20:24] = np.nan
    image = base.copy()
    image[29, 22] += 2.0  # a spike touching the hole
    image[31, 24:38] += 1.0  # a scar running out of the hole's side
    image[34, 16:30] -= 1.0  # a scar under the hole: where the row above is missing it cannot be judged
    out = level_scan(image, rows=False, background_order=None).data
    np.testing.assert_array_equal(np.isnan(out), np.isnan(base))
    assert abs(out[29, 22] - base[29, 22]) < 5 * NOISE
    for row, cols in ((31, np.r_[24:38]), (34, np.r_[16:20, 24:30])):
        assert np.abs(out[row, cols] - base[row, cols]).max() < 5 * NOISE
    np.testing.assert_allclose(out[34, 20:24], image[34, 20:24])  # unseen, and left alone
    np.testing.assert_allclose(out[35:], image[35:])  # the unseen part does not make the rows below a scar


def test_invalid_pixels_are_corrected_but_never_replaced_or_used():
    _, raw = raw_scan(91, (64, 64))
    valid = np.ones(raw.shape, bool)
    raw[10, 10] += 50.0  # a spike outside the valid region: kept as it is, but shifted with its row
    valid[8:13, 8:13] = False
    levelled = level_scan(raw, valid)
    reference = level_scan(np.where(valid, raw, np.nan))
    np.testing.assert_allclose(levelled.data[valid], reference.data[valid], atol=1e-9)
    assert levelled.data[10, 10] > 40.0


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 8), (8, 1), (2, 2), (3, 5), (8, 8), (24, 24), (27, 40), (64, 64)]
)
def test_level_scan_copes_with_tiny_images(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.normal(size=shape) + rng.normal(0.0, 2.0, (shape[0], 1))
    levelled = level_scan(image)
    assert levelled.data.shape == shape
    assert np.isfinite(levelled.data).all()
    assert len(levelled.steps) == 4


@pytest.mark.parametrize("fill", [0.0, 3.7, -1e6])
def test_constant_image_stays_constant(fill):
    image = np.full((32, 32), fill)
    image[5, 5] = np.nan
    levelled = level_scan(image)
    values = levelled.data[np.isfinite(levelled.data)]
    assert np.ptp(values) <= 1e-9 * max(1.0, abs(fill))
    assert levelled.steps[1:3] == ("scars: 0 streaks", "spikes: 0 pixels")
    assert np.isnan(levelled.data[5, 5])


def test_all_nan_image_passes_through():
    levelled = level_scan(np.full((16, 16), np.nan))
    assert np.isnan(levelled.data).all()
    assert levelled.steps[-1] == "background: skipped (no valid pixels)"


def test_steps_name_what_was_done_in_order():
    _, raw = raw_scan(101)
    assert level_scan(raw).steps == (
        "rows: median_difference",
        "scars: 3 streaks",
        "spikes: 5 pixels",
        "background: order 1",
    )
    assert level_scan(raw, rows="median", spikes=False, scars=False, background_order=3).steps == (
        "rows: median",
        "background: order 3",
    )
    assert level_scan(raw, rows=False, spikes=False, scars=False, background_order=None).steps == ()


def test_levelled_is_frozen_and_read_only_and_inputs_untouched():
    _, raw = raw_scan(111, (32, 32))
    before = raw.copy()
    levelled = level_scan(raw)
    np.testing.assert_array_equal(raw, before)
    assert isinstance(levelled, Levelled)
    assert not levelled.data.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        levelled.steps = ()  # type: ignore[misc]
    for function in (align_rows, remove_background, remove_scars, remove_spikes):
        function(raw)
        np.testing.assert_array_equal(raw, before)


def test_integer_input_is_accepted():
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert level_scan(image).data.dtype == np.float64


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: level_scan(np.zeros(8)), "2-D image"),
        (lambda: level_scan(np.zeros((2, 4, 4))), "2-D image"),
        (lambda: level_scan(np.zeros((8, 8)), np.ones((8, 7), bool)), "valid mask has shape"),
        (lambda: align_rows(np.zeros((8, 8)), method="mean"), "Unknown row alignment method 'mean'"),
        (lambda: level_scan(np.zeros((8, 8)), rows="polynomial"), "Unknown row alignment method"),
        (lambda: remove_background(np.zeros((8, 8)), order=4), "order must be 0, 1, 2 or 3"),
    ],
)
def test_bad_arguments_raise_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()
