"""All tunables of a registration, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["RegistrationConfig"]


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """Tunables of :func:`autoreg.register`. Immutable; derive variants with :meth:`with_`.

    Attributes
    ----------
    working_size : int
        Longest side, in pixels, of the working views that features are detected on.
    working_size_max : int
        Longest side of the working views when both images are fine (same-resolution pairs).
    match_blur : float
        Gaussian sigma, per coarser-image pixel, that blurs the finer image to the coarser one's resolution.
    n_features : int
        ORB features requested per 256×256 working pixels (larger views get proportionally more).
    max_features : int
        Most keypoints asked of one view (ORB and SIFT), whatever its size. Brute-force matching costs the product
        of the two counts: the density above asked 16 000 of each 1024² view, its matching took 1.5 s per strategy,
        and its flood of chance matches pushed the inlier ratio of a right fit under ``min_inlier_ratio``, so a
        second strategy ran too (1024² same-resolution pairs, full, half and 30 % overlap: 2.3-4.1 s). 4000, the
        density of a 512² view, brought them to 0.6-1.0 s, all ``ok``, errors within 0.01 px of the uncapped fits;
        the accuracy benchmark's views are smaller, so its pairs are untouched.
    fast_threshold : int
        ORB's FAST threshold; low values find corners in soft, low-contrast scans.
    orb_levels : int
        ORB pyramid levels (scale factor 1.2): the working views are already at one scale, so few are needed.
    orb_patch_size : int
        ORB patch size (also used as the edge threshold), in working pixels.
    match_ratio : float
        Lowe's ratio test: keep a match when its distance is below this fraction of the second best.
    clahe_clip : float
        CLAHE clip limit applied to the 8-bit detector views.
    ransac_threshold_px : float
        Inlier threshold in *working* pixels for the robust fit.
    ransac_max_iters : int
        Upper bound on robust-fit iterations.
    ransac_confidence : float
        Requested confidence of the robust fit.
    polynomial_order : int
        Order of the ``polynomial`` model (2 or 3).
    auto_models : tuple of str
        Candidate models for ``model="auto"``, simplest first.
    auto_se : float
        ``auto`` keeps the simplest model whose held-out error exceeds the best one's by at most this many
        standard errors (paired over the points).
    cv_folds : int
        Folds of the held-out residual used by ``auto``.
    cv_max_points : int
        At most this many inliers (evenly spaced) enter the held-out comparison, which bounds its cost.
    min_inliers : int
        Fewer inliers than this is ``failed``.
    ok_inliers : int
        Fewer inliers than this (but at least ``min_inliers``) is ``low_confidence`` when the predicted error comes
        from the inliers (leave-one-out refits of a handful of points are a rough guide to the error). A fit the
        intensity refinement refined carries the refinement's prediction, and whether it is the right match is
        judged by the NFA and the shift check: on the calibration and lattice tuning splits the 14 refined results
        doubted only for 6-14 inliers were all correct (the two refined few-inlier fits that were wrong, on lattices,
        were ``ambiguous`` and ``clustered_inliers`` too). Not for the keypoints found under the second reading of
        ambiguous image sizes (a crop at the same pixel size): their first run on the lattice split gave a
        neighbouring area matched a period off on 11 inliers, refined, and doubted by nothing else.
    min_inlier_ratio : float
        An inlier ratio below this is ``low_confidence``.
    min_model_support : float
        A translation, rigid or similarity fit explaining fewer than this fraction of the matches an affine
        consensus explains is ``low_confidence`` (the model is too simple for the data).
    min_inlier_spread : float
        Feature inliers whose convex hull covers less than this fraction of the overlap are ``low_confidence``.
    min_overlap_fraction : float
        An overlap (fraction of the fixed image, or of the mapped moving image when that is smaller, that holds
        both) below this is ``low_confidence``; an empty overlap is ``failed``. 0.1, the smallest overlap the
        benchmark draws (near misses of 10-20 %): the predicted error is taken over the whole moving image, so
        it already charges a fit for extrapolating beyond the overlap. At 0.2, on the calibration and lattice
        tuning splits, 12 results whose only doubt was an overlap of 10-20 % were correct and none wrong; below
        10 % nothing has been measured and the doubt stays.
    min_pearson : float
        A Pearson correlation over the overlap below this is ``low_confidence``; judged once each image's
        background is removed there (``correlation_background_order``: ``pearson_detrended`` in the JSON).
    min_pearson_gain : float
        ``pearson - pearson_before`` below this (when the unregistered pair was not already aligned) is
        ``low_confidence``; both with the backgrounds removed.
    correlation_background_order : int
        Degree of the polynomial surface removed from each image, over the pixels compared, before the
        correlations the verdict judges (2: two scans of one area rarely share their tilt or scanner bow, and the
        refinement fits the same quadratic background for that reason). The raw correlation let a background hide
        a right answer: on the tuning splits 16 correct results (11 of calibration's 392 pairs, 5 of lattice's 480)
        were ``low_confidence`` for ``low_correlation`` (raw |r| 0.00-0.29) or ``no_improvement`` alone while the
        refinement explained the map at |r| 0.88-1.00; with the backgrounds out they read 0.58-0.99 and are ``ok``.
        No result lost ``ok``, none turned wrong, no verdict of a negative changed. Order 1 (a plane) would have
        doubted one right ``ok`` more (a bowed scan); levelling each image over its own extent instead (rows and a
        plane, as the shift check does) doubted four, among them a fractal terrain whose large-scale relief the two
        extents' planes cut differently (|r| 0.98 -> 0.05).
    max_scale_ratio : float
        Largest plausible ratio between the estimated scale and the expected one (from image sizes or metadata).
    max_shear : float
        Largest plausible shear (|cos| of the angle between the mapped axes).
    max_pixels : int
        Pixel budget for one input image; larger images are refused with a clear error.
    time_budget_s : float or None
        Seconds a registration may spend on its automatic strategies; None (default): no limit. Once spent, no
        further strategy starts and a running search stops (its attempt fails); the result is the best found so
        far, its reasons say what was not tried, and control points are still used. The user's choice, no default:
        on the benchmark's hamper split (780 pairs, one process) 1 s kept 446 of the 519 solved pairs and 379 of
        the 456 ``ok`` results (crops 16 of 52 solved, cross-modal pairs 30 of 50: the searches that solve them take
        0.3–1.5 s each) and held 99 % of the pairs within 1.43 s; with a budget the result depends on the machine's
        speed. A budget only removes attempts, each judged on its own, so it never makes a result ``ok``.
    level_scans : bool
        Level both working views as SPM packages do (row alignment, scars, spikes, then a robust plane) before
        matching; off, only the plane is removed. On by default: autoreg's scans carry scan-line offsets, and
        levelling never touches the data written out.
    min_scan_line_contrast : float
        Align rows only when the per-row offsets exceed the per-column ones by this factor
        (:func:`autoreg.preprocess.scan_line_contrast`): clean images read 0.8–1.4 (scikit-image's photos,
        clean synthetic terrain), scans with line offsets of a tenth of their spread 3 and far more.
    ambiguous_size_ratio : float
        Without pixel sizes, two images whose sizes differ by up to this factor (beyond ``same_pixel_size_band``)
        may be a coarse map of the same field of view or a small crop at the same pixel size: the keypoint
        strategies are then also tried at the same pixel size (after the field of view's), and the search, last.
        4×: a crop under a quarter of the scan's side is rare, a map 4× coarser and more is what the field-of-view
        guess is for.
    max_pixel_skew : float
        When the pixel sizes say a moving pixel is higher than wide (or wider than high) in fixed pixels by more
        than this fraction, the moving image is registered as a copy with square pixels (:mod:`autoreg.regrid`).
        2 %: it moves the rim of a 64 px map by at most 0.64 of its pixels, which keypoints and the refinement
        absorb; below it, a copy would only add an interpolation. Without the copy (``tests/bench/bench_aspect.py``,
        evaluation split, 40 maps per aspect) 34 maps were solved at 1.5:1, 21 at 2:1, none at 3:1; with it 39, 40
        and 40.
    mirror_check_max_shift_gap : float
        When nobody says whether the moving image is mirrored and an ``ok`` result's content repeats (its
        ``shift_peak_gap`` below this), the mirror image is registered too, by the strategy that found the result,
        and ``ok`` stands only when the mirror fails or fits clearly worse (:func:`autoreg.pipeline._mirror_checked`).
        On the tuning splits (calibration and lattice, 1,280 registrations of their pairs as drawn and mirrored) the
        three wrong ``ok``s of untold mirrored lattices read 0.11-0.20; 0.3 keeps a margin and checks 199 of the
        ``ok``s with a measured gap (59 %, lattices mostly), at 0.33 s each.
    mirror_check_margin : float
        The mirror fits about as well when its detrended |correlation| is at least the result's minus this. On the
        tuning splits the three wrong ``ok``s' mirrors fitted 0.033-0.065 *better* (the mirror's true pose lines up
        the defects too); of the 199 correct ``ok``s checked, 186 mirrors failed, 3 found the same pose (a fit that
        holds a reflection), and 10 passed at another pose 0.116-0.947 worse. 0.05 sits between, nearer the wrong.
    bow_max_residual : float
        After the plane, a quadratic background (scanner bow) is also removed when what it leaves is at most this
        fraction of the variance: the scan is then mostly bow. On the calibration split the moving images with a
        mid or strong bow kept 0.18-0.20 of their variance, every other moving image but two (a smooth hill on a
        24 px map, 0.15, and a fractal crop, 0.19; both unsolved) kept 0.36 or more; a fixed fractal scan kept
        0.23, and removing its quadratic lost that pair (0.25 was tried first). 0.21 sits between.
    same_pixel_size_band : tuple of float
        Without physical pixel sizes, two images whose size ratio lies strictly inside this band are taken to have
        the same pixel size (two crops of one scan); otherwise, to cover the same field of view. 2× either way: a
        crop keeps at least half the scan, and a resolution change is rarely less than 2×. Exactly 2× (512² and
        256², the commonest resolution change between scans) is outside: taken for a crop, such a map was judged
        at the fixed image's resolution, where 3 of 6 inverted-contrast pairs of 256² on 128² were
        ``low_confidence``, against 1 of 6 as field of view (its same-pixel-size search still follows). The price
        falls on crops of exactly half the side: 128² crops of 256² scans stayed ``ok`` (6 of 6, within 0.03 px)
        but 5 of 6 took the field-of-view search first, 1.0-1.7 s more.
    no_improvement_below : float
        ``no_improvement`` (no Pearson gain over the unregistered guess) applies only when that guess correlates
        below this: a pair already aligned (0.9 and up) cannot gain much, and that is no sign of failure.
    flat_relative_range : float
        An image whose 0.5–99.5 percentile range is below this fraction of its median magnitude is flat: float32
        rounding is ~1e-7 relative, so 1e-5 leaves a wide margin above rounding and far below any real contrast.
    sift_contrast_threshold : float
        SIFT's contrast threshold: a fifth of OpenCV's default (0.04), to find blobs on soft, low-contrast scans.
    tolerance_px : float or None
        The error an ``ok`` promises not to exceed (mean over a 5×5 grid on the moving image, fixed px); None for
        the product's promise, ``max(tolerance_min_fixed_px, tolerance_moving_fraction × moving pixel)``.
    tolerance_min_fixed_px : float
        2 fixed px: what the eye calls aligned on the fixed image, and finer than any same-resolution use needs.
    tolerance_moving_fraction : float
        Half a moving pixel: a spectrum then lands within its own pixel of the right place on the topography.
    ok_error_fraction : float
        ``ok`` needs ``predicted_error_px`` at most this fraction of ``tolerance_px`` (else ``imprecise``): the
        prediction is a typical error, and true errors reach 1.6× it in a tenth of the results, so a result
        predicted just under the tolerance is a coin toss. Chosen on the calibration split as the smallest of 1,
        0.9, 0.8, 0.75, 0.7, 0.6, 0.5 that costs at most 3 % of the correct results their ``ok`` (the evidence
        rules already cost about 2 %, the product allows 5 %): 0.75 cost 2.7 % and left 1 of 444 ``ok`` wrong
        where 1.0 left 4 of 462 (cases 0-79 of the nine positive categories); 0.7 cost 3.9 %.
    min_refined_correlation : float
        ``ok`` needs the intensity refinement, when it ran on the fit, to explain the map: its robust correlation
        (:attr:`autoreg.refine.Refinement.correlation`) at least this in magnitude (else ``unmodelled_contrast``).
        The refinement's error prediction assumes the contrast is linear; a map whose contrast it cannot follow (a
        deflection channel against a topography) still gives a sharp optimum, but a biased one. On the calibration
        split the one wrong ``ok`` left, a deflection map 1.7× the tolerance off, read 0.73; every correct ``ok``
        0.84 or more (spikes, which lowered the plain correlation, do not lower the robust one). Below it the
        refined pose is not taken either (its optimum is biased); the cross-modal pairings are refined then, and
        one is kept only when it reaches this bound (:func:`autoreg.strategies.refine_fit`).
    max_edges_refine_ratio : float
        The refinement compares a moving edge map with the fixed image's gradient magnitude (the search's ``edges``
        pairing) only when the larger pixel is at most this many times the smaller one. Its forward model averages
        the fixed term over each coarse pixel's footprint, which holds for a term linear in the image (the slope of
        the ``derivative`` pairing, at any pixel size) but not for a gradient magnitude: the edge map of a coarse
        map is not the average of the fine edge map. 1.5: cross-modal channels are usually two channels of one
        scan, at one pixel size, which is all the benchmark's cross-modal pairs test.
    nfa_tests : int
        Hypotheses counted per minimal sample in the a-contrario test of a feature consensus: 6 models compared by
        ``auto`` × 4 feature strategies tried (ORB, ORB on the gradient, SIFT, SIFT's mutual matches; a Bonferroni
        count: log10(24) = 1.38 added to every log10 NFA).
    nfa_duplicate_wpx : float
        Matches whose fixed and moving points both lie within this many working pixels of another match's count once
        in that test: ORB finds one blob at several pyramid levels a few pixels apart, and a "consensus" of ten
        keypoints on three blobs is three pieces of evidence (a neighbouring area of clean terrain passed the test
        that way). 5 px is the FAST circle's radius plus a pyramid step.
    sparse_consensus_iters : int
        Samples drawn by the a-contrario consensus of the mutual-match strategy (2-point similarity samples): a
        consensus of 6 among 200 matches is drawn with probability 1 − (1 − (6/200)²)^2000 = 0.84, of 10 among 200
        with 0.99.
    max_log10_nfa : float
        A feature consensus is a real match only when log10 NFA is at most this (else ``failed``). −1, stricter
        than the classic NFA ≤ 1: under uniform random matches (1,560 trials, 20–500 matches, every model) 0.13 %
        reached −1 against 0.6 % at 0, and real consensuses of 10 or more inliers sit at −4 or below.
    min_shift_peak_gap : float
        An automatic fit is ambiguous (``low_confidence``) when its pose correlates at most this much above the best
        pose shifted by more than ``shift_exclusion_tolerances`` (and two coarse pixels) from it
        (:func:`autoreg.ambiguity.shift_peak_gap`): the search's ``min_peak_gap``, the same test around one pose.
        The gap is judged as its full-overlap equivalent, times the square root of ``overlap_fraction`` (a
        difference of correlations over fewer pixels is that much less significant; the search ranks its poses
        the same way): a lattice's neighbouring area at the same pixel size, matched a period off at 37 % overlap,
        read 0.104, an ``ok`` until then (the lattice split's ``crop_negative`` category).
        On the tuning splits (calibration and lattice) every gross wrong pose read 0.03 or less (a lattice, a
        period away, and 10-20 % overlaps: -0.21 to 0.03), 34 of 240 correct results 0.10 or less (17 of them
        cross-modal, where intensity correlation is a poor judge); 0.10 keeps a margin over a null sampled only
        five times. 0.05 would cost 24 of them.
    shift_exclusion_tolerances : float
        Shifts beyond this many tolerances are a different pose (two: a pose that moves points by more than twice
        what an ``ok`` promises is a different answer, not the ragged edge of this one).
    disagreement_errors : float
        Two estimates of one pose disagree when they lie further apart, over the moving image, than this many times
        their combined predicted errors (root sum of squares): each prediction is a typical error, and true errors
        stay within twice it for 96-98 % of the report splits' results, so a gap beyond twice the combined
        prediction means one estimate is off by about the gap. Used where a refinement moves a feature fit (the
        move then bounds the error) and between an ``ok`` result and an earlier attempt's ``low_confidence`` one at
        another pose (``conflicting``), there with at least ``shift_exclusion_tolerances`` tolerances between them.
    shift_window_fraction : float
        Largest shift of that check, as a fraction of the overlap's shorter side (0.2: several periods of any
        lattice a registration can resolve, while the inset template keeps 60 % of the overlap per side).
    shift_check_max_side : int
        Longest side of that check's grid (256: about 10 ms per check; a lattice finer than 1/128 of the overlap
        is not resolved there, and such fine content is not what wrong poses are built from).
    min_peak_gap : float
        A search (intensity) match is real only when its best correlation peak exceeds the best separated peak by
        more than this. On 200 unrelated vs 200 true map pairs the gap was at most 0.12 (99 %: 0.09) for unrelated
        pairs and at least 0.13 (5 %: 0.24) for true ones. The search also uses this test (and ``min_peak_ratio``)
        to skip its cross-modal pairings when intensity and gradient already give such a peak with the same
        contrast (``min_refined_correlation``).
    min_peak_ratio : float
        ... and the best peak is at least this multiple of the separated one (unrelated: 99 % below 1.21; true:
        5 % below 1.41).
    contest_poses : int
        When the search's peak does not stand out, this many of its best separated poses are refined (a similarity
        each, fitted on half the pixels) and compared on the other half (:func:`autoreg.contest.contest`). Four: on
        the calibration split the right pose of a 30-60 % overlap was the sweep's fourth best (86 px from its
        best), and each pose costs a half refinement. The best pose of each other pairing the sweep ran is refined
        with them (up to three more half refinements).
    contest_max_side : int
        The contest refines its poses with the coarser image area-reduced to at most this many pixels a side (the
        refinement's ``refine_max_side`` is 128): it only tells poses apart, and the winner is refined at full size
        afterwards. 64 px took the contest's cost on the calibration split's searches from 64 s to 26 s, with the
        same pairs solved on the tuning splits.
    min_contest_gap : float
        The contest is evidence only when its best pose converged, a linear contrast explains it (held-out |r| at
        least ``min_refined_correlation``) and it stands more than this above the best optimum elsewhere, in Fisher
        z of held-out |r| scaled by the square root of the pixels compared (:func:`autoreg.contest.contest_score`).
        On the tuning splits' searches that did not stand out, negatives stood at most 0.37 (calibration) and 0.80
        (lattice: a crop's neighbouring area) under those conditions, the right poses it passed 1.40-3.0 (6 more
        pairs solved of 708, none of its results wrong), two right cross-modal ones read 1.17 and 1.19; with the
        refinement's 128 px grid a wrong pose of a positive pair had read 1.14 (a 30 % overlap of a lattice, |r|
        0.82). Measured again on 2026-12-05 (``bench_convergence.py --contests``, every contest of both splits, the
        winner checked against the truth): calibration decided 10, all right, and no wrong or negative winner that
        was evidence stood above 0.76; lattice decided 16, two on a wrong pose of a positive pair (a lattice a
        period or more off: 1.34, a deflection map, and 1.24, low line offsets), both ``low_confidence`` by
        ``weak_evidence`` and ``ambiguous``. Evidence from the contest alone caps the verdict at ``low_confidence``
        (``weak_evidence``): the margin is thin and was set on the cases it is reported on here, and an ``ok`` is a
        promise.
    search_min_ratio : float
        The known-scale search runs right after the features when the resolution ratio is at least this (a 4×
        coarser map has too few corners for features alone), else after every feature strategy.
    search_scale_range : float
        When the scale is not known (no pixel sizes in the metadata or from the user), the search also sweeps the
        scale within this factor either way of the expected one (image sizes are a rough guide: ±10 %).
    search_fov_coverage : tuple of float
        When only the image sizes give the scale (``field_of_view``: both taken to cover the same field) of a map
        (resolution ratio at least ``search_min_ratio``), a last strategy sweeps its footprint from this fraction
        of the fixed field's side to that one (``search_scale_range`` covers the rest): a map is often taken over
        part of a topography. On the calibration split, where maps cover 50-90 %, one sweep over 0.5-1.1 in place
        of the first solved 2 more of 252 pairs and made 4 more ``ok`` (none wrong), but cost 42 % more time on
        the whole split, so it runs last, over the band the first one leaves (13 % more time, the same gains; on
        the lattice tuning split 9 more solved of 360, 12 more ``ok``, none wrong). Two fractions, the smaller first,
        at most 16× apart (the search sweeps at most 4× either way); others are refused (``InputError``).
    search_fov_channels : tuple of str
        The pairings of that last search: intensity and gradient only. The cross-modal pairings run in a second
        pass whenever the first finds nothing, which doubles the cost of every pair that fails; a cross-modal map
        of part of the field without pixel sizes is left to control points.
    search_max_side : int
        Same-resolution pairs are area-reduced to at most this many pixels a side before the search: the sweep
        runs coarse anyway (48 px), the pose is within a pixel of 128 px, and the refinement restores sub-pixel
        accuracy; 256 px cost 4× as much for nothing the refinement needs.
    search_fixed_px_per_moving : float
        Across resolutions the finer image is area-averaged to this many of its pixels per coarse pixel before the
        search (a map pixel is an area average; 2 keeps the sub-pixel phase the search refines with).
    search_sweep_px : int
        The moving image is reduced to at most this many pixels a side for the exhaustive rotation (× scale) sweep;
        the best poses are then refined at its own pixel size. The sweep's cost grows with the cube of this size:
        32 px took 38 % less time on the calibration split but solved 2 pairs fewer of 252.
    search_prune_px : int
        When the sweep's moving image is at least 1.3× this size (same-resolution pairs, maps of 32 px or more), a
        sweep at this size first picks where the full one looks: the angles and scales within one of its steps of
        its best separated poses. 0 sweeps every sample. 24 is half the sweep's size, the step at which the sweep's
        own pose is still found (a 64 px map at 8×, a 40 px map at 25.6× and a same-resolution crop: the same pose
        and channel from under a third of the samples, ``tests/test_search.py``). Measured against every sample in
        the same session: the calibration split's searches took 124 s instead of 219 s in all, the lattice split's
        142 s instead of 307 s (median 0.47× per search); one more pair solved and ``ok`` on calibration, two more
        solved on lattice, no ``ok`` turned wrong, every negative still failed. Its price: the peak gap is taken
        over fewer samples, so a few searches that failed stand just past ``min_peak_gap`` (one lattice pair here; 7
        more wrong ``low_confidence`` results over the six report splits, none ``ok``). Maps of 32-45 px were first
        left out (at 1.9×); pruning them too, in the same session: their searches on the calibration split took
        15.9 s instead of 44.2 s (the part-of-field ones, which sweep a wide band of scales, 14.7 s instead of 35.5 s),
        with the same verdict on every calibration and lattice pair and the same null and true peak gaps on
        ``bench_search.py --significance 200``.
    search_min_overlap : float
        Smallest overlap, as a fraction of the moving image, that the search considers (partial overlaps to 30 %).
    search_channels : tuple of str
        Pairings the search correlates (:data:`autoreg.search.CHANNELS`): ``intensity`` and ``gradient`` (both
        gradient magnitudes) for images of one kind; ``edges`` (fixed gradient magnitude vs moving intensity) for
        an edge-like moving channel, and ``derivative`` (fixed slope along the moving image's fast scan axis vs
        moving intensity) for error signals such as AFM deflection. The last two run in a second pass, only when
        the first two give no peak that passes ``min_peak_gap`` and ``min_peak_ratio`` with the same contrast
        (the intensity pairing's own peak, where the intensities correlate with |r| at least
        ``search_intensity_same_contrast``, or one where they correlate with |r| at least
        ``search_same_contrast``), so they cost nothing on pairs of one kind: the 40×40 map on a 1024² scan costs
        0.6× as much as with them in one pass (``tests/bench/bench_search.py``). After an intensity peak that
        stood out, the second pass's winner replaces it only when it stands out further
        (:func:`autoreg.search.search_similarity`).
    search_same_contrast : float
        |r| of the intensities at a gradient-magnitude peak that stands out, from which the contrast counts as the
        same and the search skips its cross-modal pass (above). On the calibration and lattice splits, of the
        peaks that stood out without deciding at the former bound 0.8 (44 searches), every one whose answer came
        from the cross-modal pass with a peak that stands out (8: deflection and edge maps, a crop) read 0.39 or
        less; 12 read 0.51-0.80 and kept the first pass's answer anyway (same-resolution pairs, partial overlaps,
        crops), and 2 more (0.64, 0.67) ended on a cross-modal peak that did not stand out (the search failed); all
        14 now skip the pass. 0.5 leaves a margin over 0.39 (the lowest of the 14 read 0.51).
    search_intensity_same_contrast : float
        |r| at the intensity pairing's own peak, when it stands out, from which the contrast counts as the same
        and the search skips its cross-modal pass. A deflection map's intensities match the topography's a few
        pixels beside the truth: on the calibration split's cross-modal cases 28-299, seven such peaks stood out
        at |r| 0.42-0.64, decided the search (any standing intensity peak did) and ended 3-6 px off as wrong
        ``low_confidence`` results; swept too, the derivative pairing stood out further at the truth (gaps
        0.23-0.61 against 0.12-0.22). 0.8 is the |r| from which the refinement takes a linear contrast to explain
        a map (``min_refined_correlation``). Below it the second pass runs, and a standing intensity peak is
        replaced only by one that stands out further (lattices with scan artefacts, 0.71, keep theirs).
    refine : bool
        Refine every global fit by intensity at the coarser image's resolution (:mod:`autoreg.refine`), kept
        only when it raises the correlation on held-out pixels.
    refine_max_iterations : int
        Gauss–Newton iterations per pyramid level of that refinement: it converges in 5–8 from a start within its
        capture range; a start outside it wanders, and more iterations only cost time.
    refine_pairing_min_holdout : float
        When the intensities' refinement leaves a contrast no linear map explains and the cross-modal pairings are
        refined in its place, a pairing whose held-out correlation after the half fit is below this is dropped
        there, before its full fit, as one that would not reach ``min_refined_correlation``. On the tuning splits
        (246 refinements of cross-modal, degraded, partial-overlap and lattice pairs) every pairing that was kept
        had reached a held-out correlation of 0.87 or more (12 of 12), and 33 of the 35 refined in full and then
        dropped at most 0.62 (the other two 0.82 and 0.83). 0.7: the same verdict on every calibration and lattice
        pair (and on the locker and evaluation report splits), the cross-modal pairs' time 49 → 44 s on
        calibration and 66 → 64 s on lattice (same session). -1 refines every pairing in full.
    refine_restart_gain : float
        An affine or projective refinement is checked against a similarity refined from the same start (its
        closest similarity): when the similarity explains the held-out pixels better by more than this, the
        richer model sits in a worse optimum than the simpler one it contains — on periodic content, a start one
        lattice period skewed across the map — and it is refined again from the similarity's optimum, that result
        kept when it explains the held-out pixels better. At one optimum the two differ by round-off and fitting
        noise: on the tuning splits the similarity's held-out correlation exceeded the richer model's by at most
        0.013 (253 refinements); the six slipped starts gained 0.055-0.74 (one, at 0.40 correlation, 0.04). 0.02
        changed no calibration or lattice verdict or error; it turned the crate split's one wrong ``ok`` (an affine
        0.81 held out, 8.3 px off) into a correct one (0.996, 0.013 px off).
    refine_contrast_knots : int
        When no linear contrast explains the map (the intensities' refinement reads below
        ``min_refined_correlation`` or diverges) and no cross-modal pairing does either, the intensities are refined
        once more through a contrast fitted to the map (:mod:`autoreg.contrast_map`): a piecewise-linear function of
        the fixed values with this many knots, at quantiles of the values under the map (8, not searched: enough
        for a few terraces or domains each with its own value, few enough for a 40×40 map's 1600 pixels). It also
        competes with a linear refinement whose predicted error is too large for ``ok``, from the same start, and
        replaces it when it explains the held-out pixels better and predicts a smaller error: a contrast that gives
        each terrace its own value leaves a sharp but biased linear optimum (12-22 px off on the tuning pairs). A
        mapped refinement of a fit no linear contrast explains is kept only when it moves the fit by more than
        ``disagreement_errors`` times its own predicted error. Such a fit is never ``ok`` (``mapped_contrast``): the
        error prediction of a fitted contrast is not calibrated; among ``low_confidence`` results it ranks after
        those whose prediction is (:func:`autoreg.pipeline._pick`). On tuning pairs only: the calibration split's
        cross-modal cases 28-299 with a folded or per-terrace contrast (82 pairs) 56 → 68 solved, none lost, the same
        33 ``ok``; the calibration split 275 → 277 solved, the lattice split's positives 348 → 349 (two correct
        ``low_confidence`` became ``ok``: an earlier attempt, mapped, no longer conflicted), no wrong ``ok``, no
        negative's verdict changed. A linear refinement precise enough for ``ok`` is checked by it too: half the
        pixels are refined through the contrast fitted at the linear optimum, and when that explains the other half
        better than the linear contrast did, how far it moves the pose bounds the linear fit's predicted error
        (which assumes the contrast is linear). On the tuning pairs this turned the one wrong ``ok`` of the 82
        above (a folded clock photo, a linear contrast at |r| 0.995, predicted 1.36 px, 2.89 px off; moved 2.24 px)
        into a correct ``low_confidence`` result (0.98 px off), and changed no other verdict or error of the
        calibration split, the lattice split or those 82; CPU of the calibration split 1.01×. 0 turns all of it off.
    refine_contrast_rounds : int
        Rounds of fitting the contrast at the current pose and refining through it, each kept only when it raises
        the held-out correlation (2, not searched: a contrast fitted a few pixels off is blurred by the offset, and
        one more fit at the refined pose sharpens it).
    refine_max_side : int
        The coarser image is area-reduced to at most this many pixels a side for the refinement: 128 px keeps a
        same-resolution 256² pair within ~0.05 px at a tenth of the full-size cost.
    refine_fine_per_coarse : float
        The finer image is area-averaged to this many of its pixels per coarse pixel for the refinement: enough to
        model the coarse pixel's footprint (the forward model blurs it further), and cheap on a 1024² scan.
    auto_tie_px2 : float
        Held-out squared errors (fixed px²) that differ by less than this are a tie in ``auto`` (round-off only).
    cpcorr_half_width : int
        Half width, in coarse pixels, of the patch that refines a control point (11×11 for 5): MATLAB's cpcorr
        uses 11×11 too; smaller patches hold too little structure on a 40×40 map, larger ones leave the local
        linear approximation of the transform and the map itself.
    cpcorr_radius : int
        Search radius, in coarse pixels, of that refinement. Clicks on a coarse map are off by 1–3 pixels; 4
        leaves room for the parabola's neighbours (MATLAB's cpcorr also moves a point at most 4 pixels).
    cpcorr_min_correlation : float
        A refinement whose peak correlation (plane-removed patches) is below this keeps the click: a weaker peak
        on a flat terrace or in noise is as likely a wrong place as the right one. 0.5 is MATLAB cpcorr's
        threshold; on the synthetic STM/STS pair correct peaks lie above 0.9 (5th percentile 0.92 of 121 clicks),
        and against a map of pure noise the best peak stayed below 0.46 (60 clicks, median 0.27).
    cpcorr_min_patch_fine_px : float
        ... and the patch spans at least this many fine pixels: at low resolution ratios 11 coarse pixels hold one
        smooth edge or blob, which fixes no position; 64 px holds 2-D structure on SPM-like terrain.
    cpcorr_min_isotropy : float
        The correlation peak's flattest curvature must be at least this fraction of its steepest, else the click
        is kept: a ridge (a straight step edge) fixes the point across the edge only. On synthetic pairs at
        ratios 1–26 every peak at or above 0.2 was within 0.5 coarse px of the truth; below it, up to 2 px off.
    loo_outlier_factor : float
        A control point whose leave-one-out residual (weighed by sqrt(1 - leverage)) exceeds this multiple of the
        median of the others' is named as an outlier: with good points the LOO residuals are alike, a misclick
        stands far out. With the floor below, 3 named no good point in 200 synthetic sets of ten (click noise an
        eighth of a map pixel) and found a 3-map-pixel misclick in all 200.
    loo_outlier_min_coarse_px : float
        ... and exceeds this many coarse pixels (converted to fixed px): below one coarse pixel a residual is
        within click precision, and exact synthetic points would otherwise be named for round-off.
    """

    working_size: int = 256
    working_size_max: int = 1024
    match_blur: float = 0.4
    n_features: int = 1000
    max_features: int = 4000
    fast_threshold: int = 5
    orb_levels: int = 8
    orb_patch_size: int = 19
    clahe_clip: float = 2.0
    match_ratio: float = 0.9
    ransac_threshold_px: float = 2.0
    ransac_max_iters: int = 5000
    ransac_confidence: float = 0.999
    polynomial_order: int = 2
    auto_models: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "projective", "polynomial")
    auto_se: float = 1.0
    cv_folds: int = 5
    cv_max_points: int = 150
    min_inliers: int = 6
    ok_inliers: int = 15
    min_inlier_ratio: float = 0.05
    min_model_support: float = 0.7
    min_inlier_spread: float = 0.05
    min_overlap_fraction: float = 0.1
    min_pearson: float = 0.3
    min_pearson_gain: float = 0.0
    correlation_background_order: int = 2
    max_scale_ratio: float = 3.0
    max_shear: float = 0.3
    max_pixels: int = 64_000_000
    time_budget_s: float | None = None
    level_scans: bool = True
    min_scan_line_contrast: float = 2.0
    ambiguous_size_ratio: float = 4.0
    max_pixel_skew: float = 0.02
    same_pixel_size_band: tuple[float, float] = (0.5, 2.0)
    mirror_check_max_shift_gap: float = 0.3
    mirror_check_margin: float = 0.05
    bow_max_residual: float = 0.21
    no_improvement_below: float = 0.9
    flat_relative_range: float = 1e-5
    sift_contrast_threshold: float = 0.01
    tolerance_px: float | None = None
    tolerance_min_fixed_px: float = 2.0
    tolerance_moving_fraction: float = 0.5
    ok_error_fraction: float = 0.75
    min_refined_correlation: float = 0.8
    max_edges_refine_ratio: float = 1.5
    nfa_tests: int = 24
    sparse_consensus_iters: int = 2000
    nfa_duplicate_wpx: float = 5.0
    max_log10_nfa: float = -1.0
    min_shift_peak_gap: float = 0.10
    shift_exclusion_tolerances: float = 2.0
    disagreement_errors: float = 2.0
    shift_window_fraction: float = 0.2
    shift_check_max_side: int = 256
    min_peak_gap: float = 0.10
    min_peak_ratio: float = 1.20
    contest_poses: int = 4
    contest_max_side: int = 64
    min_contest_gap: float = 1.2
    search_min_ratio: float = 4.0
    search_scale_range: float = 1.1
    search_max_side: int = 128
    search_fov_coverage: tuple[float, float] = (0.5, 0.9)
    search_fov_channels: tuple[str, ...] = ("intensity", "gradient")
    search_fixed_px_per_moving: float = 2.0
    search_sweep_px: int = 48
    search_prune_px: int = 24
    search_min_overlap: float = 0.3
    search_channels: tuple[str, ...] = ("intensity", "gradient", "edges", "derivative")
    search_same_contrast: float = 0.5
    search_intensity_same_contrast: float = 0.8
    refine: bool = True
    refine_max_iterations: int = 15
    refine_pairing_min_holdout: float = 0.7
    refine_restart_gain: float = 0.02
    refine_contrast_knots: int = 8
    refine_contrast_rounds: int = 2
    refine_max_side: int = 128
    refine_fine_per_coarse: float = 4.0
    auto_tie_px2: float = 1e-9
    cpcorr_half_width: int = 5
    cpcorr_radius: int = 4
    cpcorr_min_correlation: float = 0.5
    cpcorr_min_patch_fine_px: float = 64.0
    cpcorr_min_isotropy: float = 0.2
    loo_outlier_factor: float = 3.0
    loo_outlier_min_coarse_px: float = 1.0

    def __post_init__(self) -> None:
        from .budget import check_budget
        from .errors import InputError

        check_budget(self.time_budget_s)

        try:
            low, high = (float(v) for v in self.search_fov_coverage)
        except (TypeError, ValueError):
            low = high = float("nan")
        if not 0 < low < high <= 16 * low:  # the search sweeps a scale range of at most 4× either way
            raise InputError(f"search_fov_coverage must be two fractions, the smaller first and at most 16× apart; "
                             f"got {self.search_fov_coverage}.")
        if not (self.refine_contrast_knots == 0 or self.refine_contrast_knots >= 3) or self.refine_contrast_rounds < 1:
            raise InputError(f"refine_contrast_knots must be 0 (off) or at least 3, and refine_contrast_rounds at "
                             f"least 1; got {self.refine_contrast_knots} and {self.refine_contrast_rounds}.")

    def with_(self, **changes: object) -> RegistrationConfig:
        """Return a copy with some fields changed.

        Examples
        --------
        >>> RegistrationConfig().with_(n_features=500).n_features
        500
        """
        return replace(self, **changes)  # type: ignore[arg-type]
