"""The serving input contract and the recipe parser: clear errors that name the field and the row."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmpc import images, requests, text
from mmpc.recipe import RecipeError, load_recipe, parse_overrides


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
    parsed = requests.parse(frame)
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
    with pytest.raises(requests.RequestError, match=message):
        requests.parse(frame)


def test_image_paths_are_confined_to_the_image_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    Image.new("RGB", (30, 30), (0, 0, 255)).save(root / "a.jpg")
    Image.new("RGB", (30, 30)).save(tmp_path / "secret.jpg")
    monkeypatch.setenv(requests.IMAGE_ROOT_ENV, str(root))
    parsed = requests.parse(pd.DataFrame({"designation": ["x"], "image": ["a.jpg"]}))
    assert parsed.image_status == ["ok"]
    with pytest.raises(requests.RequestError, match="outside the allowed image root"):
        requests.parse(pd.DataFrame({"designation": ["x"], "image": ["../secret.jpg"]}))


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
