"""Product images: safe decoding, border trimming, and the train/eval transforms.

Rakuten photos are 500x500 JPEGs, often framed by a white or black border; trimming it gives the
network more pixels of the product itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageChops, ImageFile

# A decompression bomb (a tiny file declaring a huge canvas) must fail, not exhaust memory: the
# declared size is checked before any pixel is decoded, and Pillow's own limit is set to the same
# figure (it raises DecompressionBombError past twice its limit). 4096 x 4096 is far above any
# product photo.
MAX_IMAGE_PIXELS = 4096 * 4096
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Only raster formats a shop photo comes in: Pillow would otherwise also try formats such as EPS,
# whose loader runs Ghostscript on the bytes.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

ImageStatus = Literal["ok", "missing", "invalid"]


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (or declare a canvas over the pixel limit)."""


def looks_like_image(data: bytes) -> bool:
    """Whether the bytes start like one of the accepted formats (the file signature alone)."""
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode(data: bytes, max_side: int | None = None, max_aspect: float | None = None) -> Image.Image:
    """Decode image bytes into an RGB image; raise ImageDecodeError on anything unusable.

    With ``max_side`` the image is shrunk to fit ``max_side`` x ``max_side`` (JPEGs are decoded at a
    reduced scale directly), which bounds the memory a request of many large photos can take. With
    ``max_aspect`` an image whose long side is more than that many times its short side is refused
    before any pixel is decoded (see ``check_size``). The size the file declared is kept in
    ``info["source_size"]``.
    """
    if not data:
        raise ImageDecodeError("empty image")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            check_size(img.width, img.height, max_aspect)
            source_size = img.size
            if max_side:
                img.draft(None, (max_side, max_side))
            img.load()
            rgb = to_rgb(img)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc
    if max_side:
        rgb.thumbnail((max_side, max_side))
    rgb.info["source_size"] = source_size
    return rgb


def check_size(width: int, height: int, max_aspect: float | None = None) -> None:
    """Refuse a declared canvas over the pixel limit, or (``max_aspect``) too elongated: the eval
    transform resizes the short side to ~256 pixels, so a 512 x 1 image would become 131072 x 256,
    a tiny file costing hundreds of ordinary photos."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"image of {width}x{height} exceeds the pixel limit ({MAX_IMAGE_PIXELS})")
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise ImageDecodeError(f"image of {width}x{height} is more elongated than {max_aspect:g}:1")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for every mode: alpha is composited on white, 16-bit and CMYK are converted."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits before converting.
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def load_file(path: str | Path, max_side: int | None = None, max_aspect: float | None = None) -> Image.Image:
    return decode(Path(path).read_bytes(), max_side, max_aspect)


def load_optional(paths: Iterable[str], present: Iterable[bool]) -> list[Image.Image | None]:
    """Catalog photos, None where a product has none or its file does not decode."""
    out: list[Image.Image | None] = []
    for path, has in zip(paths, present, strict=True):
        try:
            out.append(load_file(path) if has else None)
        except (OSError, ImageDecodeError):
            out.append(None)
    return out


def trim_border(img: Image.Image, tolerance: int = 12, min_fraction: float = 0.2) -> Image.Image:
    """Crop a uniform frame whose colour is the top-left pixel's.

    Keeps the original when the crop would leave less than ``min_fraction`` of each side
    (a plain image is not all border).
    """
    corner = img.getpixel((0, 0))
    diff = ImageChops.difference(img, Image.new(img.mode, img.size, corner)).convert("L")
    bbox = diff.point(lambda v: 255 if v > tolerance else 0).getbbox()
    if bbox is None:
        return img
    left, top, right, bottom = bbox
    if (right - left) < min_fraction * img.width or (bottom - top) < min_fraction * img.height:
        return img
    return img.crop(bbox)


@dataclass(frozen=True)
class ImageTransformConfig:
    """The paper's augmentation: random resized crop (scale 0.8-1), rotation 15 deg, h-flip;
    eval: resize to img_size / crop_fraction, centre crop img_size (256 -> 224 by default)."""

    img_size: int = 224
    crop_fraction: float = 224 / 256
    scale_min: float = 0.8
    rotation: float = 15.0
    hflip: float = 0.5
    trim: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def eval_transform(cfg: ImageTransformConfig):
    """timm's eval pipeline (resize, centre crop, normalise)."""
    from timm.data import create_transform

    return create_transform(
        input_size=(3, cfg.img_size, cfg.img_size),
        is_training=False,
        crop_pct=cfg.crop_fraction,
        interpolation="bilinear",
        mean=cfg.mean,
        std=cfg.std,
    )


def train_transform(cfg: ImageTransformConfig):
    """torchvision's v2 transforms: timm's training factory has no rotation, the paper uses one."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(cfg.img_size, scale=(cfg.scale_min, 1.0), antialias=True),
            v2.RandomRotation(cfg.rotation, fill=255),
            v2.RandomHorizontalFlip(cfg.hflip),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(cfg.mean, cfg.std),
        ]
    )


def prepare(img: Image.Image, cfg: ImageTransformConfig) -> Image.Image:
    """What both pipelines do first: trim the border."""
    return trim_border(img) if cfg.trim else img
