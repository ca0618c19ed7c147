"""mmpc.catalog: reading, validation, stable splits, fingerprints and manifests."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmpc.catalog import (
    SPLITS,
    Catalog,
    CatalogError,
    SplitSpec,
    find_image_dir,
    image_filename,
    read_catalog,
)
from mmpc.labels import RAKUTEN_CODES, LabelMap

REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/rakuten/real_sample"
X_COLUMNS = ["designation", "description", "productid", "imageid"]


def product(i: int, **overrides: object) -> dict:
    row = {
        "designation": f"Produit num&eacute;ro {i}",
        "description": f"<p>Une <b>belle</b> description {i}</p>",
        "productid": 1_000_000 + i,
        "imageid": 5_000_000 + i,
        "prdtypecode": RAKUTEN_CODES[i % len(RAKUTEN_CODES)],
    }
    return {**row, **overrides}


def write_jpeg(path: Path, colour: tuple[int, int, int] | None = None) -> None:
    """A tiny JPEG whose bytes differ per file name (or take the given colour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shade = zlib.crc32(path.name.encode())
    Image.new("RGB", (8, 8), colour or (shade % 256, (shade >> 8) % 256, 90)).save(path, "JPEG")


def write_catalog(
    root: Path,
    products: list[dict],
    *,
    images: bool = True,
    image_dir: str = "images/image_train",
    index: list | None = None,
) -> Path:
    """Write the challenge's layout: X and Y CSVs joined on an unnamed index column, plus JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    index = list(range(len(products))) if index is None else index
    x = pd.DataFrame({c: [p[c] for p in products] for c in X_COLUMNS}, index=index)
    y = pd.DataFrame({"prdtypecode": [p["prdtypecode"] for p in products]}, index=index)
    x.to_csv(root / "X_train_update.csv")
    y.to_csv(root / "Y_train_CVw08PX.csv")
    if images:
        for p in products:
            write_jpeg(root / image_dir / image_filename(p["imageid"], p["productid"]))
    return root


def image_of(root: Path, p: dict) -> Path:
    return root / "images/image_train" / image_filename(p["imageid"], p["productid"])


@pytest.fixture
def products() -> list[dict]:
    return [product(i) for i in range(12)]


# --- a valid catalog ------------------------------------------------------------------------------


def test_valid_catalog_loads(tmp_path: Path, products: list[dict]) -> None:
    products[2]["description"] = ""
    root = write_catalog(tmp_path / "shop", products)

    cat = read_catalog(root)

    assert isinstance(cat, Catalog) and cat.name == "shop" and cat.root == root.resolve()
    f = cat.frame
    assert list(f.columns) == [
        "productid",
        "imageid",
        "designation",
        "description",
        "text",
        "prdtypecode",
        "label",
        "image_path",
        "has_image",
        "split",
    ]
    for col in ("productid", "imageid", "prdtypecode", "label"):
        assert f[col].dtype == np.int64, col
    assert f["has_image"].dtype == bool
    for col in ("designation", "description", "text", "image_path", "split"):
        assert pd.api.types.is_string_dtype(f[col]), col
    assert len(f) == 12 and f["productid"].tolist() == [p["productid"] for p in products]
    # Raw text is kept; `text` is the cleaned join.
    assert f.loc[0, "description"] == "<p>Une <b>belle</b> description 0</p>"
    assert f.loc[0, "text"] == "Produit numéro 0 Une belle description 0"
    assert f.loc[2, "description"] == "" and f.loc[2, "text"] == "Produit numéro 2"
    assert not f["text"].str.contains("nan").any()
    assert f["label"].tolist() == [RAKUTEN_CODES.index(c) for c in f["prdtypecode"]]
    assert f["has_image"].all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in f["image_path"])
    assert set(f["split"]) <= set(SPLITS)
    assert cat.dropped.empty and list(cat.dropped.columns) == ["row", "productid", "reason", "detail"]


def test_image_dir_layouts(tmp_path: Path) -> None:
    assert image_filename(7, 42) == "image_7_product_42.jpg"
    assert find_image_dir(tmp_path) is None
    (tmp_path / "image_train").mkdir()
    assert find_image_dir(tmp_path) == tmp_path / "image_train"
    (tmp_path / "images/image_train").mkdir(parents=True)
    assert find_image_dir(tmp_path) == tmp_path / "images/image_train"


def test_flat_image_layout(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "flat", products, image_dir="image_train")
    cat = read_catalog(root)
    assert cat.frame["has_image"].all()
    assert all(Path(p).parent == (root / "image_train").resolve() for p in cat.frame["image_path"])


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["X_train_update.csv", "Y_train_CVw08PX.csv"])
def test_missing_csv_file(tmp_path: Path, products: list[dict], missing: str) -> None:
    root = write_catalog(tmp_path / "c", products)
    (root / missing).unlink()
    with pytest.raises(CatalogError, match="file missing") as err:
        read_catalog(root)
    assert str(root.resolve() / missing) in str(err.value)


def test_missing_columns(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    x = pd.read_csv(root / "X_train_update.csv", index_col=0)
    x.drop(columns=["imageid", "description"]).to_csv(root / "X_train_update.csv")
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "missing column(s)" in message and "imageid" in message and "description" in message
    assert "X_train_update.csv" in message


def test_malformed_csv_record(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    with open(root / "X_train_update.csv", "a") as fh:
        fh.write("99,too,many,fields,1,2,3,4\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "malformed CSV record: 1 row(s) in X_train_update.csv" in message
    assert "row 99: productid '', value 'line 14: 8 field(s), expected 5'" in message
    assert err.value.problems == {"malformed CSV record": 1}


def test_undecodable_csv(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    with open(root / "Y_train_CVw08PX.csv", "ab") as fh:
        fh.write(b"12,\xff\xfe10\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "malformed CSV" in message and "Y_train_CVw08PX.csv" in message and "utf-8" in message
    assert "drop_invalid" not in message  # a file-level problem: dropping rows cannot help


def test_index_mismatch(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    y = pd.read_csv(root / "Y_train_CVw08PX.csv", index_col=0)
    y = y.drop(index=[3, 4])
    y.loc[77] = 10
    y.to_csv(root / "Y_train_CVw08PX.csv")
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "row index in X_train_update.csv but not in Y_train_CVw08PX.csv: 2 row(s)" in message
    assert "row 3: productid '1000003'" in message and "row 4: productid '1000004'" in message
    assert "row index in Y_train_CVw08PX.csv but not in X_train_update.csv: 1 row(s)" in message
    assert "row 77" in message


def _break_productid(root: Path, ps: list[dict]) -> str:
    ps[4]["productid"] = "12ab"
    write_catalog(root, ps, images=False)
    return "12ab"


def _break_imageid(root: Path, ps: list[dict]) -> str:
    ps[4]["imageid"] = "1.5"
    write_catalog(root, ps, images=False)
    return str(ps[4]["productid"])


def _duplicate_productid(root: Path, ps: list[dict]) -> str:
    ps[6]["productid"] = ps[1]["productid"]
    write_catalog(root, ps)
    return f"{ps[1]['productid']}', value 'first at row 1'"


def _empty_designation(root: Path, ps: list[dict]) -> str:
    ps[5]["designation"] = ""
    write_catalog(root, ps)
    return str(ps[5]["productid"])


def _markup_only_designation(root: Path, ps: list[dict]) -> str:
    ps[5]["designation"] = " <br /> &nbsp;"
    write_catalog(root, ps)
    return str(ps[5]["productid"])


def _missing_label(root: Path, ps: list[dict]) -> str:
    ps[7]["prdtypecode"] = ""
    write_catalog(root, ps)
    return str(ps[7]["productid"])


def _unknown_label(root: Path, ps: list[dict]) -> str:
    ps[7]["prdtypecode"] = 9999
    write_catalog(root, ps)
    return f"{ps[7]['productid']}', value '9999'"


def _missing_image(root: Path, ps: list[dict]) -> str:
    write_catalog(root, ps)
    image_of(root, ps[8]).unlink()
    return f"{ps[8]['productid']}', value '{image_filename(ps[8]['imageid'], ps[8]['productid'])}'"


@pytest.mark.parametrize(
    ("breaker", "problem"),
    [
        (_break_productid, "productid not an integer: 1 row(s)"),
        (_break_imageid, "imageid not an integer: 1 row(s)"),
        (_duplicate_productid, "duplicate productid: 1 row(s)"),
        (_empty_designation, "empty or missing designation: 1 row(s)"),
        (_markup_only_designation, "empty or missing designation: 1 row(s)"),
        (_missing_label, "label missing or not in the label set: 1 row(s)"),
        (_unknown_label, "label missing or not in the label set: 1 row(s)"),
        (_missing_image, "image file missing: 1 row(s) of 12"),
    ],
)
def test_each_validation_error(tmp_path: Path, products: list[dict], breaker, problem: str) -> None:
    root = tmp_path / "c"
    offender = breaker(root, products)
    # Catalogs written without images are read with images optional: only the intended problem shows.
    images = "required" if find_image_dir(root) else "optional"
    with pytest.raises(CatalogError) as err:
        read_catalog(root, images=images)
    message = str(err.value)
    assert "1 problem(s)" in message
    assert problem in message
    assert f"productid '{offender}" in message
    assert sum(err.value.problems.values()) == 1


def test_missing_images_hint_and_row_limit(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    for p in products[:7]:
        image_of(root, p).unlink()
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "image file missing: 7 row(s) of 12" in message
    assert 'images="optional"' in message
    assert message.count("    row ") == 5 and "... and 2 more" in message
    assert err.value.problems == {"image file missing": 7}


def test_several_problems_reported_together(tmp_path: Path, products: list[dict]) -> None:
    products[1]["productid"] = "oops"
    products[2]["designation"] = ""
    products[3]["prdtypecode"] = 12345
    root = write_catalog(tmp_path / "c", products)
    image_of(root, products[9]).unlink()
    with pytest.raises(CatalogError) as err:
        read_catalog(root)
    message = str(err.value)
    assert "4 problem(s)" in message
    for part in (
        "productid not an integer: 1 row(s)",
        "'oops'",
        "empty or missing designation: 1 row(s)",
        f"productid '{products[2]['productid']}'",
        "label missing or not in the label set: 1 row(s)",
        "'12345'",
        "image file missing: 1 row(s)",
        f"productid '{products[9]['productid']}'",
    ):
        assert part in message
    assert len(err.value.problems) == 4


def test_drop_invalid_drops_and_records(tmp_path: Path, products: list[dict]) -> None:
    products[1]["productid"] = "oops"
    products[2]["designation"] = ""
    products[3]["prdtypecode"] = 12345
    products[5]["productid"] = products[4]["productid"]
    root = write_catalog(tmp_path / "c", products)
    image_of(root, products[9]).unlink()

    cat = read_catalog(root, drop_invalid=True)

    assert len(cat.frame) == 12 - 5
    assert cat.frame["productid"].is_unique
    dropped = cat.dropped.sort_values("row").reset_index(drop=True)
    assert dropped["row"].tolist() == [1, 2, 3, 5, 9]
    assert dropped["productid"].tolist() == ["oops"] + [str(products[i]["productid"]) for i in (2, 3, 5, 9)]
    assert dropped["reason"].tolist() == [
        "productid not an integer",
        "empty or missing designation",
        "label missing or not in the label set",
        "duplicate productid",
        "image file missing",
    ]
    assert products[4]["productid"] in set(cat.frame["productid"])  # the first occurrence is kept


def test_images_optional(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "c", products)
    for p in products[:3]:
        image_of(root, p).unlink()
    cat = read_catalog(root, images="optional")
    f = cat.frame
    assert f["has_image"].tolist() == [False] * 3 + [True] * 9
    assert (f.loc[~f["has_image"], "image_path"] == "").all()
    assert all(Path(p).is_file() for p in f.loc[f["has_image"], "image_path"])
    with pytest.raises(ValueError, match="images must be one of"):
        read_catalog(root, images="sometimes")


# --- splits ---------------------------------------------------------------------------------------


def test_splits_are_stable_as_the_catalog_grows(tmp_path: Path) -> None:
    old = [product(i, description="") for i in range(2000)]
    new = [product(i, description="") for i in range(2000, 2500)]
    grown = old + new
    np.random.default_rng(0).shuffle(grown)
    before = read_catalog(write_catalog(tmp_path / "v1", old, images=False), images="optional")
    after = read_catalog(write_catalog(tmp_path / "v2", grown, images=False), images="optional")

    merged = before.frame[["productid", "split"]].merge(after.frame[["productid", "split"]], on="productid")
    assert len(merged) == 2000
    assert (merged["split_x"] == merged["split_y"]).all()
    assert set(before.frame["split"]) == set(SPLITS)


def test_split_fractions() -> None:
    ids = pd.Series(np.arange(20_000, dtype="int64") * 7919 + 10**9)
    shares = SplitSpec().assign(ids).value_counts(normalize=True)
    for name, expected in zip(SPLITS, (0.75, 0.05, 0.10, 0.10), strict=True):
        assert abs(shares[name] - expected) < 0.015, (name, shares[name])


def test_split_spec_validation_and_salt() -> None:
    with pytest.raises(ValueError, match=r"train=0\.8.*test=0\.1"):
        SplitSpec(train=0.8)
    with pytest.raises(ValueError, match=r"valid=-0\.05"):
        SplitSpec(train=0.9, valid=-0.05, stack=0.05, test=0.1)
    ids = pd.Series(np.arange(2000), index=np.arange(2000) + 5)
    no_valid = SplitSpec(train=0.8, valid=0.0, stack=0.1, test=0.1).assign(ids)
    assert "valid" not in set(no_valid) and no_valid.index.equals(ids.index)
    assert (SplitSpec(salt="a").assign(ids) != SplitSpec(salt="b").assign(ids)).any()
    assert SplitSpec().to_dict() == {"train": 0.75, "valid": 0.05, "stack": 0.1, "test": 0.1, "salt": "mmpc"}
    # Depends only on (salt, productid): string and integer ids agree.
    assert SplitSpec().assign(ids.astype(str)).tolist() == SplitSpec().assign(ids).tolist()


def test_split_selection_and_class_counts(tmp_path: Path) -> None:
    ps = [product(i, description="") for i in range(300)]
    cat = read_catalog(write_catalog(tmp_path / "c", ps, images=False), images="optional")
    train = cat.split("train")
    assert (train["split"] == "train").all() and train.index.equals(pd.RangeIndex(len(train)))
    both = cat.split("stack", "test")
    assert set(both["split"]) == {"stack", "test"}
    assert len(both) == int(cat.frame["split"].isin(["stack", "test"]).sum())
    with pytest.raises(ValueError, match="unknown split"):
        cat.split("holdout")

    counts = cat.class_counts()
    assert list(counts.columns) == [*SPLITS, "total"] and counts.index.name == "prdtypecode"
    assert counts.index.tolist() == list(RAKUTEN_CODES)
    assert counts["total"].sum() == 300 and (counts[list(SPLITS)].sum(axis=1) == counts["total"]).all()
    for split in SPLITS:
        assert counts[split].sum() == (cat.frame["split"] == split).sum()
    assert counts.loc[10, "total"] == sum(p["prdtypecode"] == 10 for p in ps)


# --- fingerprints ---------------------------------------------------------------------------------


def test_fingerprint_ignores_row_order(tmp_path: Path, products: list[dict]) -> None:
    a = read_catalog(write_catalog(tmp_path / "a", products))
    b = read_catalog(write_catalog(tmp_path / "b", products[::-1], index=list(range(100, 112))))
    assert len(a.fingerprint()) == 64
    assert a.fingerprint() == b.fingerprint()
    for split in SPLITS:
        assert a.fingerprint([split]) == b.fingerprint([split])


@pytest.mark.parametrize("change", ["designation", "description", "prdtypecode"])
def test_fingerprint_follows_content(tmp_path: Path, products: list[dict], change: str) -> None:
    base = read_catalog(write_catalog(tmp_path / "a", products)).fingerprint()
    products[3][change] = {"designation": "Autre titre", "description": "autre", "prdtypecode": 2905}[change]
    assert read_catalog(write_catalog(tmp_path / "b", products)).fingerprint() != base


def test_fingerprint_follows_image_bytes_and_is_cached(tmp_path: Path, products: list[dict]) -> None:
    root = write_catalog(tmp_path / "a", products)
    cat = read_catalog(root)
    before = cat.fingerprint()
    write_jpeg(image_of(root, products[0]), colour=(255, 0, 0))
    assert read_catalog(root).fingerprint() != before
    assert cat.fingerprint() == before  # row digests are computed once per Catalog


def test_split_fingerprint_ignores_other_splits(tmp_path: Path) -> None:
    ps = [product(i) for i in range(60)]
    splits = SplitSpec().assign(pd.Series([p["productid"] for p in ps]))
    in_test = int(np.flatnonzero(splits == "test")[0])
    a = read_catalog(write_catalog(tmp_path / "a", ps))
    ps[in_test]["designation"] = "Titre modifié"
    b = read_catalog(write_catalog(tmp_path / "b", ps))
    assert b.fingerprint(["train"]) == a.fingerprint(["train"])
    assert b.fingerprint(["train", "valid", "stack"]) == a.fingerprint(["train", "valid", "stack"])
    assert b.fingerprint(["test"]) != a.fingerprint(["test"]) and b.fingerprint() != a.fingerprint()
    assert a.fingerprint("train") == a.fingerprint(["train"])
    with pytest.raises(ValueError, match="unknown split"):
        a.fingerprint(["nope"])


# --- manifest -------------------------------------------------------------------------------------


def test_write_manifest(tmp_path: Path) -> None:
    ps = [product(i) for i in range(40)]
    cat = read_catalog(write_catalog(tmp_path / "shop", ps), splits=SplitSpec(salt="s1"))
    paths = cat.write_manifest(tmp_path / "out" / "manifest")
    assert set(paths) == {"manifest", "class_counts", "fingerprint"}
    assert all(p.is_file() for p in paths.values())

    manifest = pd.read_csv(paths["manifest"])
    assert list(manifest.columns) == ["productid", "imageid", "prdtypecode", "split"]
    pd.testing.assert_frame_equal(
        manifest, cat.frame[["productid", "imageid", "prdtypecode", "split"]], check_dtype=False
    )

    counts = pd.read_csv(paths["class_counts"], index_col="prdtypecode")
    pd.testing.assert_frame_equal(counts, cat.class_counts())

    info = json.loads(paths["fingerprint"].read_text())
    assert info["catalog"] == "shop" and info["rows"] == 40
    assert info["fingerprint"] == cat.fingerprint()
    assert set(info["splits"]) == set(SPLITS)
    for split in SPLITS:
        assert info["splits"][split] == {
            "rows": int((cat.frame["split"] == split).sum()),
            "fingerprint": cat.fingerprint([split]),
        }
    assert info["split_spec"] == {"train": 0.75, "valid": 0.05, "stack": 0.1, "test": 0.1, "salt": "s1"}


# --- the real sample ------------------------------------------------------------------------------

needs_real_sample = pytest.mark.skipif(
    not REAL_SAMPLE.is_dir(), reason=f"real Rakuten sample not present at {REAL_SAMPLE}"
)


@needs_real_sample
def test_real_sample_requires_images() -> None:
    with pytest.raises(CatalogError) as err:
        read_catalog(REAL_SAMPLE)
    assert "image file missing: 447 row(s) of 499" in str(err.value)
    assert err.value.problems == {"image file missing": 447}


@needs_real_sample
def test_real_sample_loads_with_optional_images() -> None:
    cat = read_catalog(REAL_SAMPLE, images="optional")
    f = cat.frame
    assert len(f) == 499 and f["productid"].is_unique
    assert int(f["has_image"].sum()) == 52
    assert all(Path(p).is_file() for p in f.loc[f["has_image"], "image_path"])
    assert (f.loc[~f["has_image"], "image_path"] == "").all()
    assert set(f["prdtypecode"]) <= set(LabelMap().codes)
    assert not f["text"].str.contains(r"<[a-zA-Z/][^>]*>").any()
    assert f["description"].str.contains("<").any()  # the raw column keeps the HTML
    assert not (f["description"] == "nan").any() and (f["description"] == "").any()
    assert set(f["split"]) == set(SPLITS)
