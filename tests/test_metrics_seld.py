"""DCASE CSV I/O, multi-ACCDOA conversion and the SELD metrics on hand-computed cases.

Every case writes DCASE CSV text to tmp files and reads it back, so the metrics see what they
would see from real files. The base scene has two classes, each active for one 1 s segment:
class 0 at (30, 0) deg, 200 cm in frames 0-9 and class 1 at (-90, 10) deg, 100 cm in frames
10-19. Angular errors are azimuth offsets at elevation 0, so they are exact.
"""

import numpy as np
import pytest

from spatialav.metrics.dcase_io import (
    accdoa_to_rows,
    read_dcase_csv,
    rows_to_accdoa,
    write_dcase_csv,
)
from spatialav.metrics.seld import SELDEvaluator, seld_metrics


def event(cls, track, frames, az, el, dist=None):
    tail = "" if dist is None else f",{dist}"
    return [f"{f},{cls},{track},{az},{el}{tail}" for f in frames]


CLASS0 = event(0, 0, range(10), 30, 0, 200)
CLASS1 = event(1, 0, range(10, 20), -90, 10, 100)
BASE = CLASS0 + CLASS1


@pytest.fixture
def score(tmp_path):
    """Write reference and prediction lines as DCASE files, read them, score them."""

    def run(ref_lines, pred_lines, n_classes=2, **kw):
        paths = []
        for name, lines in (("ref.csv", ref_lines), ("pred.csv", pred_lines)):
            (tmp_path / name).write_text("\n".join(lines) + "\n")
            paths.append(tmp_path / name)
        ref, pred = (read_dcase_csv(p, n_classes) for p in paths)
        return seld_metrics(ref, pred, n_classes, **kw)

    return run


def check(result, **expected):
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key


# --- 2023 segment-based metric ------------------------------------------------------------


def test_perfect_prediction(score):
    check(score(BASE, BASE), ER=0, F=1, LE=0, LR=1, SELD=0)
    check(score(BASE, BASE, distance=True), ER=0, F=1, LE=0, LR=1, DE=0, RDE=0, SELD=0)


def test_missed_event(score):
    # segment 1: class 1 is a FN (a deletion). ER = 1/2; class 0 has F = LR = 1, LE = 0,
    # class 1 has F = 0 / (0.5 * 1) = 0, LR = 0 and LE = 180 (no match).
    r = score(BASE, CLASS0)
    check(r, ER=0.5, F=0.5, LE=90, LR=0.5, SELD=np.mean([0.5, 0.5, 90 / 180, 0.5]))


def test_misplaced_by_19_degrees_is_a_true_positive(score):
    r = score(BASE, event(0, 0, range(10), 49, 0, 200) + CLASS1)
    check(r, ER=0, F=1, LR=1, LE=(19 + 0) / 2, SELD=np.mean([0, 0, 9.5 / 180, 0]))
    assert r["per_class"]["LE"][0] == pytest.approx(19, abs=1e-6)


def test_misplaced_by_21_degrees_is_an_error(score):
    # The matched track is too far: a spatial FP. It costs a full error in F (as FP + FN
    # would, 0.5 each) and one insertion in ER; it is still class-correct, so LR = 1 and
    # its 21 deg enter LE.
    r = score(BASE, event(0, 0, range(10), 51, 0, 200) + CLASS1)
    check(r, ER=0.5, F=0.5, LE=10.5, LR=1, SELD=np.mean([0.5, 0.5, 10.5 / 180, 0]))


def test_the_segment_mean_error_decides(score):
    # 10 deg off in frames 0-4, 28 deg off in 5-9: frame-wise half would fail, but the track's
    # mean error over the segment is 19 deg -> TP with LE 19.
    pred = event(0, 0, range(5), 40, 0) + event(0, 0, range(5, 10), 58, 0) + CLASS1
    r = score(BASE, pred)
    check(r, ER=0, F=1, LR=1, LE=9.5)


def test_wrong_class(score):
    # Segment 0: class 0 missed (FN) and class 1 inserted (FP) -> one substitution; ER = 1/2.
    # Class 0: F = 0, LE = 180, LR = 0; class 1: TP 1, FP 1 -> F = 1 / 1.5, LE = 0, LR = 1.
    pred = event(1, 0, range(10), 30, 0) + CLASS1
    r = score(BASE, pred)
    check(r, ER=0.5, F=1 / 3, LE=90, LR=0.5, SELD=np.mean([0.5, 2 / 3, 0.5, 0.5]))


def test_same_class_sources_swapped_between_tracks(score):
    # Two class-0 sources; the prediction swaps their track ids and alternates row order.
    ref = event(0, 0, range(10), 30, 0, 200) + event(0, 1, range(10), -60, 20, 300) + CLASS1
    pred = []
    for f in range(10):
        rows = [f"{f},0,1,30,0,200", f"{f},0,0,-60,20,300"]
        pred += rows if f % 2 else rows[::-1]
    pred += CLASS1
    for kw in ({}, {"distance": True}):
        r = score(ref, pred, **kw)
        check(r, ER=0, F=1, LE=0, LR=1, SELD=0)


def test_counts_accumulate_over_files(tmp_path):
    # File A perfect; file B misses class 1. Summed: Nref 4, one deletion -> ER 1/4; class 1
    # has TP 1, FN 1 -> F 2/3, LR 1/2. Not the mean of the two files' scores (0 and 0.5).
    base = np.array([[f, 0, 0, 30, 0, 200] for f in range(10)]
                    + [[f, 1, 0, -90, 10, 100] for f in range(10, 20)], np.float32)
    ev = SELDEvaluator(2)
    ev.update(base, base)
    ev.update(base, base[:10], n_frames=20)
    r = ev.compute()
    check(r, ER=0.25, F=(1 + 2 / 3) / 2, LE=0, LR=0.75, SELD=np.mean([0.25, 1 / 6, 0, 0.25]))
    assert r["SELD"] != pytest.approx(0.25)


def test_micro_average(score):
    r = score(BASE, CLASS0, average="micro")
    check(r, ER=0.5, F=1 / 1.5, LE=0, LR=0.5, SELD=np.mean([0.5, 1 / 3, 0, 0.5]))
    assert "per_class" not in r


def test_absent_class_counts_in_the_macro_average(score):
    # As the official code: a class absent from reference and prediction has F = LR = 0 and
    # LE = 180 (2023) or NaN, skipped (2024), so macro scores are below perfect.
    check(score(BASE, BASE, n_classes=3), F=2 / 3, LE=60, LR=2 / 3, SELD=0.25)
    check(score(BASE, BASE, n_classes=3, distance=True), F=2 / 3, LE=0, RDE=0, SELD=1 / 3)


def test_class_in_no_common_frame_counts_as_the_official_code(score):
    # Class 0 predicted only in frames 5-9 of its segment, referenced only in 0-4: the
    # official code then counts as many FNs as predicted tracks (1) and no FP.
    ref = event(0, 0, range(5), 30, 0) + CLASS1
    pred = event(0, 0, range(5, 10), 30, 0) + CLASS1
    r = score(ref, pred)
    check(r, ER=0.5, F=0.5, LR=0.5, LE=90)


def test_segment_length_is_configurable(score):
    # With 5-frame segments the 10-then-28 deg track of the segment test splits into a TP
    # (10 deg) and a spatial FP (28 deg): F = 1 / (1 + 1) for class 0, LE still 19.
    pred = event(0, 0, range(5), 40, 0) + event(0, 0, range(5, 10), 58, 0) + CLASS1
    r = score(BASE, pred, segment_frames=5)
    assert r["per_class"]["F"][0] == pytest.approx(0.5)
    assert r["per_class"]["LE"][0] == pytest.approx(19)
    check(r, ER=1 / 4)  # one insertion over 4 reference segments


# --- 2024 frame-based metric with distance ------------------------------------------------


def test_distance_error_below_threshold(score):
    # Class 0 at 300 cm for 200: relative error 0.5 <= 1, so all 10 frames are TPs.
    r = score(BASE, event(0, 0, range(10), 30, 0, 300) + CLASS1, distance=True)
    check(r, ER=0, F=1, LE=0, LR=1, DE=50, RDE=0.25, SELD=np.mean([0.5 / 3, 0]))


def test_distance_error_at_threshold_is_still_a_hit(score):
    r = score(BASE, event(0, 0, range(10), 30, 0, 400) + CLASS1, distance=True)
    check(r, F=1, RDE=0.5)


def test_distance_error_above_threshold(score):
    # 500 cm for 200: relative error 1.5 > 1 -> 10 spatial FPs (10 insertions of 20 events).
    r = score(BASE, event(0, 0, range(10), 30, 0, 500) + CLASS1, distance=True)
    check(r, ER=0.5, F=0.5, LE=0, LR=1, DE=150, RDE=0.75, SELD=np.mean([(1 + 0 + 1.5) / 3, 0]))


def test_direction_error_above_threshold_with_distance(score):
    r = score(BASE, event(0, 0, range(10), 51, 0, 200) + CLASS1, distance=True)
    check(r, ER=0.5, F=0.5, LE=10.5, RDE=0, SELD=np.mean([(1 + 21 / 180 + 0) / 3, 0]))


def test_distance_metric_needs_distances(score):
    with pytest.raises(ValueError, match="distance on every prediction row"):
        score(BASE, event(0, 0, range(10), 30, 0) + CLASS1, distance=True)
    with pytest.raises(ValueError, match="frame-based"):
        score(BASE, BASE, distance=True, segment_frames=10)


# --- DCASE CSV and multi-ACCDOA -----------------------------------------------------------


def test_csv_round_trip(tmp_path):
    rows = np.array([[0, 3, 1, -179.5, 12.25, 153.5], [7, 0, 0, 180, -90, 0]], np.float32)
    write_dcase_csv(tmp_path / "a.csv", rows)
    assert (tmp_path / "a.csv").read_text() == "0,3,1,-179.5,12.25,153.5\n7,0,0,180,-90,0\n"
    np.testing.assert_array_equal(read_dcase_csv(tmp_path / "a.csv"), rows)

    write_dcase_csv(tmp_path / "b.csv", rows[:, :5])  # no distance: 5 columns, NaN back
    assert (tmp_path / "b.csv").read_text().splitlines()[0] == "0,3,1,-179.5,12.25"
    back = read_dcase_csv(tmp_path / "b.csv")
    np.testing.assert_array_equal(back[:, :5], rows[:, :5])
    assert np.isnan(back[:, 5]).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,1,0,10,5\n1,x,0,10,5\n", "integers"),
        ("0,1,0,10,5\n1,1,0,ten,5\n", "numbers"),
        ("0,1,0,10,5\n1,1,0\n", "4, 5 or 6"),
        ("0,1,0,10,5\n1,1,0,10,5,100,7\n", "4, 5 or 6"),
        ("0,1,0,10,5\n1,-1,0,10,5\n", "non-negative"),
        ("0,1,0,10,5\n1,1,0,181,5\n", "azimuth"),
        ("0,1,0,10,5\n1,1,0,10,-91\n", "elevation"),
        ("0,1,0,10,5\n1,1,0,10,5,-3\n", "distance"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"bad\.csv:2: .*{message}"):
        read_dcase_csv(path, n_classes=13)


def test_four_column_files_read_as_track_zero(tmp_path):
    (tmp_path / "four.csv").write_text("3,2,-45.5,10\n3,2,90,0\n5,0,180,-90\n")
    (tmp_path / "five.csv").write_text("3,2,0,-45.5,10\n3,2,0,90,0\n5,0,0,180,-90\n")
    four, five = (read_dcase_csv(tmp_path / f"{n}.csv", n_classes=3) for n in ("four", "five"))
    np.testing.assert_array_equal(four, five)
    assert four[:, 2].tolist() == [0, 0, 0] and np.isnan(four[:, 5]).all()
    # Two same-class events of one frame, both track 0, still fill two ACCDOA tracks.
    accdoa, _ = rows_to_accdoa(four, n_frames=6, n_classes=3)
    np.testing.assert_allclose(accdoa[3, :2, 2, 1], [np.sin(np.radians(-45.5))
                                                     * np.cos(np.radians(10)), 1.0], atol=1e-6)


def test_rows_of_unknown_classes_are_dropped_counted_and_warned_once(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("0,1,0,10,5\n0,13,0,10,5\n1,20,1,10,5\n2,12,0,-10,5\n")
    with pytest.warns(UserWarning, match=r"ref\.csv: ignored 2 rows whose class is outside "
                                         r"\[0, 13\)") as caught:
        rows = read_dcase_csv(path, n_classes=13)
    assert len(caught) == 1
    np.testing.assert_array_equal(rows[:, :2], [[0, 1], [2, 12]])
    assert len(read_dcase_csv(path)) == 4  # no class list: every row kept


def test_rows_to_accdoa_layout():
    rows = np.array([[2, 1, 7, 90, 0, 150], [2, 1, 3, 0, 90, 250], [4, 0, 0, 180, 0, 50]])
    accdoa, dist = rows_to_accdoa(rows, n_frames=5, n_classes=2)
    assert accdoa.shape == (5, 3, 2, 3) and dist.shape == (5, 3, 2)
    np.testing.assert_allclose(accdoa[2, 0, 1], [0, 0, 1], atol=1e-7)  # track id 3 first: up
    np.testing.assert_allclose(accdoa[2, 1, 1], [0, 1, 0], atol=1e-7)  # then id 7: left
    np.testing.assert_allclose(accdoa[4, 0, 0], [-1, 0, 0], atol=1e-7)  # behind
    np.testing.assert_array_equal(dist[2, :2, 1], [250, 150])
    assert np.count_nonzero(np.linalg.norm(accdoa, axis=-1)) == 3


def test_rows_accdoa_rows_round_trip():
    rng = np.random.default_rng(0)
    rows = []
    for f in range(20):
        for c in range(4):
            azimuths = rng.choice(np.arange(-170, 180, 40), rng.integers(0, 4), replace=False)
            for tr, az in enumerate(azimuths):
                rows.append([f, c, tr, az, rng.integers(-60, 61), rng.integers(50, 500)])
    rows = np.array(rows, np.float32)
    back = accdoa_to_rows(*rows_to_accdoa(rows, n_frames=20, n_classes=4))
    np.testing.assert_array_equal(back[:, :3], rows[:, :3])
    np.testing.assert_allclose(back[:, 3:], rows[:, 3:], atol=1e-3)


def test_accdoa_to_rows_threshold_and_unification():
    accdoa, _ = rows_to_accdoa(
        np.array([[0, 0, 0, 0, 0], [0, 0, 1, 10, 0], [0, 0, 2, 20, 0],  # chain -> one event
                  [1, 0, 0, 0, 0], [1, 0, 1, 20, 0],  # 20 deg apart -> two events
                  [2, 1, 0, 45, 0]]),
        n_frames=3, n_classes=2)
    accdoa[2] *= 0.4  # below the 0.5 activity threshold
    rows = accdoa_to_rows(accdoa)
    np.testing.assert_allclose(rows[:, :4], [[0, 0, 0, 10], [1, 0, 0, 0], [1, 0, 1, 20]],
                               atol=1e-4)
    assert np.isnan(rows[:, 5]).all()
    assert len(accdoa_to_rows(accdoa, unify_threshold_deg=5)) == 5
