"""The serving input contract and the recipe parser: clear errors that name the field and the row."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmpc import images, serving_input, text
from mmpc.recipe import RecipeError, StackingConfig, load_recipe, parse_overrides, resolve_path


def _b64(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_text_join_cleans_html_and_missing_descriptions():
    assert (
        text.join("Coussin &amp; housse", "<p>Velours&nbsp;<b>bleu</b></p>")
        == "Coussin & housse Velours bleu"
    )
    assert text.join("Titre", float("nan")) == "Titre"
    assert text.clean("a\x00b\n\tc") == "a b c"


def test_request_parses_text_and_image_statuses():
    frame = pd.DataFrame(
        {
            "designation": ["Livre", "Console", "Piscine"],
            "description": ["<p>roman</p>", None, np.nan],
            "image": [_b64(Image.new("RGBA", (40, 40), (255, 0, 0, 128))), "", "bm90IGFuIGltYWdl"],
            "extra": [1, 2, 3],  # unknown columns are ignored
        }
    )
    parsed = serving_input.parse(frame)
    assert parsed.texts == ["Livre roman", "Console", "Piscine"]
    assert parsed.image_status == ["ok", "missing", "invalid"]
    assert parsed.images[0].mode == "RGB" and parsed.images[1] is None


@pytest.mark.parametrize(
    "frame,message",
    [
        (pd.DataFrame({"description": ["x"]}), "missing required column 'designation'"),
        (pd.DataFrame({"designation": ["ok", None]}), "row 1: 'designation' is missing"),
        (pd.DataFrame({"designation": ["ok", "  <br/> "]}), "row 1: 'designation' is empty"),
        (pd.DataFrame({"designation": [12]}), "row 0: 'designation' must be text"),
        (
            pd.DataFrame({"designation": ["a"], "image": ["https://example.com/x.jpg"]}),
            "row 0: 'image' is a URL",
        ),
    ],
)
def test_bad_requests_name_the_field_and_row(frame, message):
    with pytest.raises(serving_input.RequestError, match=message):
        serving_input.parse(frame)


def test_image_paths_are_confined_to_the_image_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    Image.new("RGB", (30, 30), (0, 0, 255)).save(root / "a.jpg")
    Image.new("RGB", (30, 30)).save(tmp_path / "secret.jpg")
    monkeypatch.setenv(serving_input.IMAGE_ROOT_ENV, str(root))
    parsed = serving_input.parse(pd.DataFrame({"designation": ["x"], "image": ["a.jpg"]}))
    assert parsed.image_status == ["ok"]
    with pytest.raises(serving_input.RequestError, match="outside the allowed image root"):
        serving_input.parse(pd.DataFrame({"designation": ["x"], "image": ["../secret.jpg"]}))


def test_base64_photos_stay_photos_when_an_image_root_is_set(tmp_path, monkeypatch):
    # JPEG base64 starts with "/9j/": it must not be taken for an absolute path.
    monkeypatch.setenv(serving_input.IMAGE_ROOT_ENV, str(tmp_path))
    jpeg = _b64(Image.new("RGB", (30, 30), (10, 200, 30)), "JPEG")
    assert jpeg.startswith("/9j/")
    unpadded = jpeg.rstrip("=")
    wrapped = "\n".join(jpeg[i : i + 76] for i in range(0, len(jpeg), 76))
    parsed = serving_input.parse(
        pd.DataFrame(
            {"designation": ["x"] * 4, "image": [jpeg, unpadded, wrapped, "data:image/jpeg;base64," + jpeg]}
        )
    )
    assert parsed.image_status == ["ok"] * 4


def test_paths_are_refused_without_an_image_root(monkeypatch):
    monkeypatch.delenv(serving_input.IMAGE_ROOT_ENV, raising=False)
    with pytest.raises(serving_input.RequestError, match=r"row 0: 'image' looks like a file path"):
        serving_input.parse(pd.DataFrame({"designation": ["x"], "image": ["photos/a.jpg"]}))


def test_special_files_and_symlinks_under_the_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.jpg")  # reading it would block forever
    (root / "link.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    monkeypatch.setenv(serving_input.IMAGE_ROOT_ENV, str(root))
    assert serving_input.parse(pd.DataFrame({"designation": ["x"], "image": ["pipe.jpg"]})).image_status == [
        "invalid"
    ]
    with pytest.raises(serving_input.RequestError, match="outside the allowed image root"):
        serving_input.parse(pd.DataFrame({"designation": ["x"], "image": ["link.jpg"]}))


def test_limits_refuse_or_cut_and_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MMPC_MAX_ROWS", "3")
    monkeypatch.setenv("MMPC_MAX_TEXT_CHARS", "10")
    limits = serving_input.Limits.from_env()
    assert limits.max_rows == 3 and limits.max_text_chars == 10
    with pytest.raises(
        serving_input.RequestError, match=r"4 rows in one request; the limit is 3 \(MMPC_MAX_ROWS\)"
    ):
        serving_input.parse(pd.DataFrame({"designation": ["x"] * 4}))
    assert serving_input.parse(pd.DataFrame({"designation": ["abcdefghijklmnop"]})).texts == ["abcdefghij"]
    tight = serving_input.Limits(max_request_mb=0.001)
    with pytest.raises(
        serving_input.RequestError,
        match=r"request too large: 0\.002 MB of text and images; the limit is 0\.001 MB",
    ):
        serving_input.parse(pd.DataFrame({"designation": ["x" * 2000]}), tight)
    monkeypatch.setenv("MMPC_MAX_ROWS", "many")
    with pytest.raises(ValueError, match="MMPC_MAX_ROWS='many' is not a number"):
        serving_input.Limits.from_env()


def test_images_are_shrunk_and_their_declared_pixels_budgeted():
    big = _b64(Image.new("RGB", (1200, 900), (200, 10, 10)), "JPEG")
    parsed = serving_input.parse(pd.DataFrame({"designation": ["x"], "image": [big]}))
    assert max(parsed.images[0].size) == serving_input.Limits().image_max_side
    budget = serving_input.Limits(max_request_megapixels=2.0)  # two 1.08 MP photos do not fit
    with pytest.raises(serving_input.RequestError, match=r"row 1: the request's images exceed 2 megapixels"):
        serving_input.parse(pd.DataFrame({"designation": ["x", "y"], "image": [big, big]}), budget)
    huge = serving_input.Limits(max_image_mb=0.0001)
    assert serving_input.parse(pd.DataFrame({"designation": ["x"], "image": [big]}), huge).image_status == [
        "invalid"
    ]


def test_pillow_pixel_limit_is_mmpc_s():
    assert Image.MAX_IMAGE_PIXELS == images.MAX_IMAGE_PIXELS


def test_decompression_bomb_is_refused():
    # A tiny PNG that declares a 30000 x 30000 canvas.
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, format="PNG")
    with pytest.raises(images.ImageDecodeError):
        images.decode(buf.getvalue())


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_every_image_mode_becomes_rgb(mode):
    img = Image.new(mode, (20, 20))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    assert images.decode(buf.getvalue()).mode == "RGB"


def test_border_trim_removes_a_white_frame():
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    img.paste(Image.new("RGB", (60, 50), (200, 10, 10)), (20, 25))
    assert images.trim_border(img).size == (60, 50)
    plain = Image.new("RGB", (50, 50), (0, 0, 0))
    assert images.trim_border(plain).size == (50, 50)


def test_recipes_load_and_override():
    demo = load_recipe("demo")
    assert set(demo.models) == {"flaubert", "camembert", "tfidf", "seresnext", "fusion"}
    paper = load_recipe(
        "paper", parse_overrides(["models.camembert.head=flatten", "models.flaubert.train.lr=3e-5"])
    )
    assert paper.models["camembert"].head == "flatten"
    assert paper.models["flaubert"].train.lr == pytest.approx(3e-5)
    assert paper.models["camembert"].pretrained == "camembert-base"
    assert paper.models["seresnext"].arch == "legacy_seresnext50_32x4d"


def test_the_paper_stacker_is_the_default():
    """The paper's recipe spells out its LightGBM stacker, and a recipe without one gets the same."""
    paper = load_recipe("paper").stacking
    assert paper == StackingConfig()
    assert paper.params["num_leaves"] == 22 and paper.params["min_data_in_leaf"] == 125
    assert paper.early_stopping_rounds == 100


@pytest.mark.parametrize(
    "override,message",
    [
        ({"models.flaubert.train.lrr": 1}, r"models\.flaubert\.train: unknown key\(s\) \['lrr'\]"),
        ({"models.camembert.head": "pooler"}, r"models\.camembert\.head: 'pooler' is not one of"),
        ({"models.fusion.image": "nope"}, r"models\.fusion: input 'nope'"),
        ({"models.seresnext.train.epochs": "ten"}, r"models\.seresnext\.train\.epochs: expected int"),
    ],
)
def test_recipe_errors_name_their_path(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("demo", override)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"known recipes: .*demo.*paper"):
        load_recipe("nope")


def test_registered_versions_are_parsed_in_one_place(capsys):
    """NAME=VERSION and NAME=@alias, the same for `mmpc` and the MLproject entry points; a bad item
    is exit 2 with one line."""
    from mmpc import cli, project
    from mmpc.recipe import parse_refs

    assert parse_refs(["flaubert=3", "camembert=@candidate"]) == {"flaubert": "3", "camembert": "@candidate"}
    assert project.refs("flaubert=3 camembert=@candidate") == parse_refs(
        ["flaubert=3", "camembert=@candidate"]
    )
    for bad in ("flaubert", "=3", "flaubert="):
        with pytest.raises(RecipeError, match="expected NAME=VERSION"):
            parse_refs([bad])
    assert cli.main(["stack", "--catalog", "nowhere", "--models", "flaubert"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: expected NAME=VERSION or NAME=@alias, got 'flaubert'"
    ]


def test_split_fractions_are_checked_when_the_recipe_is_read():
    """The recipe's splits are the catalog's own SplitSpec: bad fractions are a recipe error naming them."""
    recipe = load_recipe("demo")
    assert recipe.split_spec() == recipe.catalog.splits and recipe.split_spec().train == 0.55
    with pytest.raises(RecipeError, match=r"catalog\.splits: split fractions must be >= 0 and sum to 1"):
        load_recipe("demo", parse_overrides(["catalog.splits.train=0.9"]))


def test_recipes_compose_from_overlays_and_defaults(tmp_path):
    """``demo+fast`` lays mlproject/overlays/fast.yaml over demo; a file's ``defaults:`` list names the
    recipes it starts from; mappings merge key by key, the last word wins."""
    demo, fast = load_recipe("demo"), load_recipe("demo+fast")
    assert fast.name == "demo+fast"
    assert fast.models["seresnext"].train.epochs == 3 and fast.stacking.num_boost_round == 100
    assert fast.models["seresnext"].train.lr == demo.models["seresnext"].train.lr  # merged, not replaced
    child = tmp_path / "child.yaml"
    child.write_text("defaults: [demo]\nname: child\nmodels: {tfidf: {C: 2.0}}\n")
    (tmp_path / "demo.yaml").write_text(resolve_path("demo").read_text())
    recipe = load_recipe(child, {"seed": 3})
    assert (recipe.name, recipe.seed, recipe.models["tfidf"].C) == ("child", 3, 2.0)
    assert set(recipe.models) == set(demo.models)
    with pytest.raises(RecipeError, match="overlay 'fats' not found"):
        load_recipe("demo+fats")
    loop = tmp_path / "loop.yaml"
    loop.write_text("defaults: [loop]\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(loop)
