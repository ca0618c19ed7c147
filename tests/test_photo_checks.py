"""Catalog photos are decoded once while unchanged: a catalog read again decodes only new, changed or
failing photos, and a photo damaged in place is caught at the next read."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from mmpc import catalog, photo_checks


def _jpeg(path, colour=(10, 120, 200)) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.setenv(photo_checks.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        _jpeg(folder / f"p{i}.jpg")
    (folder / "bad.jpg").write_bytes(b"")
    return folder


def _checked(folder, names):
    seen: list[str] = []

    def why(path: str) -> str:
        seen.append(os.path.basename(path))
        return catalog._unreadable(path)

    return photo_checks.unreadable(folder, names, why), seen


def test_unchanged_photos_are_decoded_once_and_failures_every_time(photos):
    names = ["p0.jpg", "p1.jpg", "p2.jpg", "bad.jpg"]
    first, seen = _checked(photos, names)
    assert seen == names and first[:3] == ["", "", ""] and first[3]
    again, seen = _checked(photos, names)
    assert seen == ["bad.jpg"] and again == first


def test_a_photo_damaged_in_place_is_decoded_again(photos):
    names = ["p0.jpg", "p1.jpg"]
    _checked(photos, names)
    data = (photos / "p1.jpg").read_bytes()
    (photos / "p1.jpg").write_bytes(data[: len(data) // 2])  # cut short: its size changes
    os.utime(photos / "p0.jpg", ns=(1, 1))  # touched: its time changes
    result, seen = _checked(photos, names)
    assert sorted(seen) == names and result[0] == "" and result[1]


def test_an_unwritable_cache_checks_every_photo(photos, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(photo_checks.CACHE_ENV, str(blocker / "cache"))
    for _ in range(2):
        result, seen = _checked(photos, ["p0.jpg", "bad.jpg"])
        assert seen == ["p0.jpg", "bad.jpg"] and result[0] == "" and result[1]
