"""Label-issue detection: planted flips are found, unusable images and cross-class duplicates are named, the
features are cached by image content, and `python -m core clean` prints JSON lines."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import cli
from core.results import label_issues as li

SIZE = 64  # small inputs keep the tests fast; the benchmark measures at 224 px


def _flip(folder: Path, fraction: float, seed: int = 0) -> set[str]:
    """Move ``fraction`` of the images into another (random) class folder; returns their new paths."""
    rng = random.Random(seed)
    files = sorted(folder.rglob("*.png"))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    flipped = set()
    for f in rng.sample(files, round(len(files) * fraction)):
        new = rng.choice([c for c in classes if c != f.parent.name])
        f.rename(folder / new / f"flip_{f.name}")
        flipped.add(f"{new}/flip_{f.name}")
    return flipped


@pytest.fixture(scope="session")
def noisy_digits(tmp_path_factory):
    """Digits, 20 per class (200 images), with 10 % of the labels flipped: (folder, flipped paths)."""
    from core.data.datasets import make_sample

    folder = make_sample("digits", tmp_path_factory.mktemp("noisy") / "digits", per_class=20)
    return folder, _flip(folder, 0.10)


@pytest.fixture(scope="session")
def report(noisy_digits):
    return li.detect(str(noisy_digits[0]), image_size=SIZE)


def test_detection_finds_most_planted_label_flips_among_the_top_suspects(report, noisy_digits):
    flipped = noisy_digits[1]
    k = len(flipped)
    top = {s.path for s in report.suspects[:k]}
    precision = len(top & flipped) / k
    recall = len({s.path for s in report.suspects} & flipped) / k
    assert precision >= 0.6, f"precision at k={k}: {precision:.2f}"
    assert recall >= 0.75, f"recall among all suspects: {recall:.2f}"


def test_flipped_images_get_their_true_class_suggested(report, noisy_digits):
    flips = [s for s in report.suspects if s.path in noisy_digits[1]]
    true = [s.path.split("/")[1].removeprefix("flip_").split("_")[0] for s in flips]
    agree = sum(s.suggested == t for s, t in zip(flips, true)) / len(flips)
    assert agree >= 0.6, f"the suggestion is the true class for {agree:.0%} of the flips found"


def test_suspects_come_most_suspicious_first_with_neighbours_from_the_dataset(report, noisy_digits):
    scores = [s.score for s in report.suspects]
    assert scores == sorted(scores, reverse=True)
    first = report.suspects[0]
    assert len(first.neighbours) == li.NEIGHBOURS and first.path not in first.neighbours
    assert all((noisy_digits[0] / p).is_file() for p in first.neighbours)


def test_unusable_images_and_cross_class_duplicates_are_reported(tmp_path, shapes_dir):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_dir, folder)
    Image.new("RGB", (96, 96), (4, 4, 4)).save(folder / "circle" / "black.png")
    Image.new("RGB", (96, 96), (200, 200, 200)).save(folder / "square" / "blank.png")
    shutil.copy(folder / "circle" / "circle_0001.png", folder / "triangle" / "copy.png")
    found = {s.path: s for s in li.detect(str(folder), image_size=SIZE).suspects}
    assert "unusable: very dark" in found["circle/black.png"].reasons[-1] or \
        "nearly blank" in found["circle/black.png"].reasons[-1]
    assert "nearly blank" in found["square/blank.png"].reasons[-1]
    assert found["square/blank.png"].action == "remove" and found["square/blank.png"].suggested is None
    assert any("exact duplicate of circle/circle_0001.png in class circle" in r for r in found["triangle/copy.png"].reasons)


def test_the_statistics_thresholds_separate_dark_blank_and_ordinary_images():
    rng = np.random.default_rng(0)
    ordinary = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    dark = (ordinary // 10).astype(np.uint8)  # mean about 12, spread about 7
    blank = np.full((64, 64, 3), 128, np.uint8)
    stats = np.array([li._stats(a) for a in (ordinary, ordinary, dark, blank)], np.float32)
    reasons = li.unusable(stats)
    assert reasons[0] is None and "dark" in reasons[2] and "blank" in reasons[3]


def test_features_are_cached_by_content_and_reused_after_a_relabel(tmp_path, shapes_dir):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_dir, folder)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    first, _, cached = li.features(paths, image_size=SIZE)
    assert not cached or first.shape[0] == len(paths)  # another test may have embedded these files already
    (folder / "circle" / "circle_0000.png").rename(folder / "square" / "moved.png")
    again = sorted(str(p) for p in folder.rglob("*.png"))
    second, _, cached = li.features(again, image_size=SIZE)
    assert cached and second.shape == first.shape
    row = again.index(str(folder / "square" / "moved.png"))
    np.testing.assert_array_equal(second[row], first[paths.index(str(folder / "circle" / "circle_0000.png"))])


def test_the_cli_prints_one_json_line_per_suspect_then_a_summary(noisy_digits, report, capsys):
    assert cli.main(["clean", "--data", str(noisy_digits[0]), "--image-size", str(SIZE)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    *suspects, summary = lines
    assert summary["summary"] is True and summary["suspects"] == len(suspects) == len(report.suspects)
    assert summary["features_cached"] is True
    assert all({"path", "label", "suggested", "score", "reason"} <= set(s) for s in suspects)
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)


@pytest.mark.parametrize("argv, words", [(["--folds", "1"], "--folds must be 2 or more"),
                                         (["--image-size", "7"], "--image-size must be 0")])
def test_the_cli_answers_bad_flags_with_one_error_line(noisy_digits, capsys, argv, words):
    assert cli.main(["clean", "--data", str(noisy_digits[0]), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err
