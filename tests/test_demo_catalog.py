"""mmpc.demo_catalog: layout, determinism, overwrite rules, and the text/image ambiguity design."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmpc import demo_catalog
from mmpc.demo_catalog import DEMO_FAMILIES, IMAGE_FAMILIES, TEXT_FAMILIES, write_demo_catalog
from mmpc.labels import RAKUTEN_CODES

X_HEADER = ",designation,description,productid,imageid"
Y_HEADER = ",prdtypecode"
IMAGE_DIR = Path("images/image_train")


def read(out: Path) -> tuple[pd.DataFrame, pd.Series]:
    x = pd.read_csv(out / "X_train_update.csv", index_col=0)
    y = pd.read_csv(out / "Y_train_CVw08PX.csv", index_col=0)["prdtypecode"]
    return x, y


def image_path(out: Path, imageid: int, productid: int) -> Path:
    return out / IMAGE_DIR / f"image_{imageid}_product_{productid}.jpg"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog", size=1200, seed=0, image_size=96)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = write_demo_catalog(tmp_path / "a", size=150, seed=7, image_size=48)
    b = write_demo_catalog(tmp_path / "b", size=150, seed=7, image_size=48)
    c = write_demo_catalog(tmp_path / "c", size=150, seed=8, image_size=48)
    for name in ("X_train_update.csv", "Y_train_CVw08PX.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    names = sorted(p.name for p in (a / IMAGE_DIR).iterdir())
    assert names == sorted(p.name for p in (b / IMAGE_DIR).iterdir())
    for name in names[:: len(names) // 5]:
        assert (a / IMAGE_DIR / name).read_bytes() == (b / IMAGE_DIR / name).read_bytes()
    assert not set(names) & {p.name for p in (c / IMAGE_DIR).iterdir()}


def test_layout(catalog: Path) -> None:
    assert (catalog / "X_train_update.csv").read_text(encoding="utf-8").splitlines()[0] == X_HEADER
    assert (catalog / "Y_train_CVw08PX.csv").read_text(encoding="utf-8").splitlines()[0] == Y_HEADER
    x, y = read(catalog)
    assert len(x) == len(y) == 1200
    assert list(x.index) == list(range(1200)) and list(y.index) == list(range(1200))
    for column in ("productid", "imageid"):
        ids = x[column]
        assert ids.dtype.kind == "i" and ids.is_unique
        assert ids.between(10**8, 10**10 - 1).all()  # 9-10 digits, like the challenge's ids
    assert x["designation"].notna().all() and (x["designation"].str.len() > 3).all()

    expected = {image_path(catalog, i, p).name for i, p in zip(x["imageid"], x["productid"], strict=True)}
    assert {p.name for p in (catalog / IMAGE_DIR).iterdir()} == expected
    for i, p in zip(x["imageid"], x["productid"], strict=True):
        with Image.open(image_path(catalog, i, p)) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))

    counts = Counter(y)
    assert set(counts) == set(RAKUTEN_CODES)
    assert min(counts.values()) >= math.ceil(1200 / 100)
    assert 2.5 <= max(counts.values()) / min(counts.values()) <= 5  # imbalanced, but not hopelessly

    description = x["description"]
    assert 0.2 < description.isna().mean() < 0.4
    html = description.dropna().str.contains(r"<p>|<br />|&eacute;|&amp;")
    assert 0.1 < html.mean() < 0.7
    assert (description.dropna().str.len() > 300).any()  # some long, several-sentence descriptions


def test_images_have_borders(catalog: Path) -> None:
    x, _ = read(catalog)
    corners = []
    for i, p in zip(x["imageid"][:60], x["productid"][:60], strict=True):
        pixels = np.asarray(Image.open(image_path(catalog, i, p)))
        corners.append(int(pixels[1, 1].mean()))
    # White or black frames, both present.
    assert all(c > 235 or c < 20 for c in corners)
    assert any(c > 235 for c in corners) and any(c < 20 for c in corners)


def test_same_arguments_is_a_no_op(tmp_path: Path) -> None:
    out = write_demo_catalog(tmp_path / "cat", size=60, seed=1, image_size=32)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    start = time.perf_counter()
    assert write_demo_catalog(out, size=60, seed=1, image_size=32) == out
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]  # no staging folder left beside it


def test_empty_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    out = write_demo_catalog(tmp_path / "cat", size=40, seed=0, image_size=32)
    assert (out / "X_train_update.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]


def test_foreign_or_different_folder_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_catalog(foreign, size=40)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    other = write_demo_catalog(tmp_path / "other", size=40, seed=0, image_size=32)
    with pytest.raises(FileExistsError, match="seed=1"):
        write_demo_catalog(other, size=40, seed=1, image_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "other"]


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = demo_catalog._product_image

    def failing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_catalog, "_product_image", failing)
    with pytest.raises(KeyboardInterrupt):
        write_demo_catalog(tmp_path / "cat", size=40, image_size=32)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        write_demo_catalog("/nonexistent/never", size=10)
    with pytest.raises(ValueError, match="image_size"):
        write_demo_catalog("/nonexistent/never", image_size=8)


def test_ambiguity_design() -> None:
    assert set(DEMO_FAMILIES) == set(RAKUTEN_CODES)
    assert {f.text for f in DEMO_FAMILIES.values()} <= set(TEXT_FAMILIES)
    assert {f.image for f in DEMO_FAMILIES.values()} <= set(IMAGE_FAMILIES)
    by_text = Counter(f.text for f in DEMO_FAMILIES.values())
    by_image = Counter(f.image for f in DEMO_FAMILIES.values())
    assert sum(n >= 2 for n in by_text.values()) >= 3
    assert sum(n >= 2 for n in by_image.values()) >= 3
    # Text + image together determine the class.
    assert len(set(DEMO_FAMILIES.values())) == len(DEMO_FAMILIES)
    # Each image family looks different from every other one.
    assert len(set(IMAGE_FAMILIES.values())) == len(IMAGE_FAMILIES)
    # The books and the games are the text-ambiguous groups a reader of the real catalog expects.
    assert DEMO_FAMILIES[10].text == DEMO_FAMILIES[2705].text == DEMO_FAMILIES[2403].text
    assert DEMO_FAMILIES[40].text == DEMO_FAMILIES[2462].text == DEMO_FAMILIES[2905].text


def _trim(image: Image.Image) -> Image.Image:
    """Drop the plain frame: rows and columns that all match the corner colour."""
    pixels = np.asarray(image, dtype=np.int16)
    content = np.abs(pixels - pixels[0, 0]).max(axis=2) > 40
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        return image
    return image.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def _image_features(path: Path) -> np.ndarray:
    image = _trim(Image.open(path).convert("RGB"))
    small = np.asarray(image.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32).ravel() / 255
    levels = (np.asarray(image.resize((32, 32)), dtype=np.int32) // 64).reshape(-1, 3)
    histogram = np.bincount(levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2], minlength=64) / len(levels)
    return np.concatenate([small, histogram])


def test_each_modality_alone_is_ambiguous_and_together_they_help(catalog: Path) -> None:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from mmpc.text import join

    x, y = read(catalog)
    labels = y.to_numpy()
    texts = [join(a, b) for a, b in zip(x["designation"], x["description"], strict=True)]
    pixels = np.stack(
        [
            _image_features(image_path(catalog, i, p))
            for i, p in zip(x["imageid"], x["productid"], strict=True)
        ]
    )
    n = int(0.7 * len(x))

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2).fit(texts[:n])
    text_train, text_test = tfidf.transform(texts[:n]), tfidf.transform(texts[n:])
    scaler = StandardScaler().fit(pixels[:n])
    image_train, image_test = scaler.transform(pixels[:n]), scaler.transform(pixels[n:])
    # Image features are dense and many; scale them down so they do not drown the sparse text.
    both_train = sparse.hstack([text_train, sparse.csr_matrix(0.3 * image_train)]).tocsr()
    both_test = sparse.hstack([text_test, sparse.csr_matrix(0.3 * image_test)]).tocsr()

    def accuracy(train, test, c: float) -> float:
        model = LogisticRegression(C=c, max_iter=2000).fit(train, labels[:n])
        return float((model.predict(test) == labels[n:]).mean())

    # One BLAS thread: on a small CPU box, threaded BLAS inside lbfgs is ~10x slower, not faster.
    with threadpool_limits(limits=1):
        text_only = accuracy(text_train, text_test, 10.0)
        image_only = accuracy(image_train, image_test, 0.1)
        both = accuracy(both_train, both_test, 10.0)
    print(f"demo catalog accuracy: text {text_only:.3f}, image {image_only:.3f}, both {both:.3f}")
    chance = max(Counter(labels[n:]).values()) / len(labels[n:])
    assert chance < 0.1
    assert text_only > 0.4 and image_only > 0.4
    assert both >= max(text_only, image_only) + 0.05
