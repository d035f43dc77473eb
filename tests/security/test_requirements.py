"""requirements.txt floors sit above the versions with known advisories, and the installed set satisfies them."""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REQS = Path(__file__).resolve().parents[2] / "requirements.txt"
# The first version without the advisory (torch: weights_only bypass fixed in 2.6; torchvision to match).
FLOORS = {"torch": "2.6", "torchvision": "0.21", "pillow": "10.3", "onnx": "1.17", "streamlit": "1.54"}


def _requirements() -> dict[str, Requirement]:
    lines = [ln.strip() for ln in REQS.read_text().splitlines()]
    return {Requirement(ln).name.lower(): Requirement(ln) for ln in lines if ln and not ln.startswith("#")}


@pytest.mark.parametrize("name, floor", sorted(FLOORS.items()))
def test_no_version_below_the_advisory_floor_is_admitted(name, floor):
    spec = _requirements()[name].specifier
    below = Version(floor).release
    older = Version(".".join(map(str, below[:-1] + (below[-1] - 1,))) + ".99")  # e.g. 2.5.99 for 2.6
    assert not spec.contains(older, prereleases=True), f"{name}{spec} admits {older}"
    assert spec.contains(floor, prereleases=True), f"{name}{spec} refuses the fixed {floor}"


def test_the_installed_packages_satisfy_every_requirement():
    for name, req in _requirements().items():
        assert req.specifier.contains(version(name), prereleases=True), f"{name} {version(name)} vs {req}"
