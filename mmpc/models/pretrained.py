"""Pretrained checkpoints, checked before any training: a hub name or a local folder or file.

A text model's ``pretrained`` is whatever ``from_pretrained`` takes (a hub name, resolved from the
local cache when offline, or a folder written by ``save_pretrained``); an image model's is ``true``
(timm's hub weights for ``arch``), a weights file, or a folder in timm's own layout (``config.json``
naming the architecture beside ``model.safetensors``). Every failure is one line naming the model
and the path, raised before a run starts, so a wrong checkpoint never costs a half-done training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from mmpc import kinds
from mmpc.kinds.image import ImageModelConfig
from mmpc.kinds.text import TextModelConfig
from mmpc.models import image, store
from mmpc.models.tokenizer import load_tokenizer
from mmpc.recipe import RecipeError

# Weight files ``from_pretrained`` reads from a transformers folder, and timm from its own layout.
TEXT_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
IMAGE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
IMAGE_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class CheckpointError(RecipeError):
    """A ``pretrained`` checkpoint is missing, of another architecture, or inconsistent."""


def looks_local(ref: str) -> bool:
    """A path rather than a hub name: it exists, or it is written the way only paths are."""
    return Path(ref).expanduser().exists() or ref.startswith(("/", "./", "../", "~", "\\"))


def _fail(name: str, ref: str, what: str) -> CheckpointError:
    return CheckpointError(f"models.{name}.pretrained: {ref}: {what}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ------------------------------------------------------------------------------------------- text


def text_config(name: str, ref: str) -> PretrainedConfig:
    """The checkpoint's config, from its folder or the hub cache, or one line saying why not."""
    path = Path(ref).expanduser()
    if looks_local(ref):
        if not path.is_dir():
            raise _fail(name, ref, "no such checkpoint folder")
        if not (path / "config.json").is_file():
            raise _fail(name, ref, "no config.json (not a folder written by save_pretrained)")
        if not any((path / f).is_file() for f in TEXT_WEIGHT_FILES):
            raise _fail(name, ref, f"no weights in the folder (looked for {', '.join(TEXT_WEIGHT_FILES)})")
    try:
        return AutoConfig.from_pretrained(str(path) if looks_local(ref) else ref)
    except (OSError, ValueError) as exc:
        raise _fail(name, ref, f"cannot read its config: {_first_line(exc)}") from exc


def checkpoint_tokenizer(name: str, ref: str) -> PreTrainedTokenizerBase:
    """The checkpoint's own tokenizer class (FlauBERT's Moses + BPE, CamemBERT's SentencePiece, ...)."""
    try:
        return load_tokenizer(Path(ref).expanduser() if looks_local(ref) else ref)
    except (OSError, ValueError, ImportError, TypeError) as exc:
        raise CheckpointError(f"models.{name}.tokenizer: {ref}: cannot load it: {_first_line(exc)}") from exc


def check_text(name: str, cfg: TextModelConfig) -> None:
    """Config, weights and tokenizer of a text checkpoint agree with each other and with the recipe."""
    if not cfg.pretrained:
        return
    ref = cfg.pretrained
    config = text_config(name, ref)
    kind = config.model_type
    if cfg.backbone_type and kind != cfg.backbone_type:
        raise _fail(name, ref, f"a {kind} checkpoint, but the recipe's backbone_type is {cfg.backbone_type}")
    if kind not in MODEL_MAPPING_NAMES or getattr(config, "vocab_size", None) is None:
        raise _fail(name, ref, f"a {kind} checkpoint is not a text encoder transformers' AutoModel loads")
    tok_ref = cfg.tokenizer.pretrained or ref
    tokenizer = checkpoint_tokenizer(name, tok_ref)
    if len(tokenizer) > config.vocab_size:
        raise CheckpointError(
            f"models.{name}.tokenizer: {tok_ref}: {len(tokenizer)} tokens, but the checkpoint {ref} "
            f"embeds only {config.vocab_size}: not the tokenizer of this checkpoint"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and cfg.max_len > positions:
        raise _fail(name, ref, f"max_len {cfg.max_len} exceeds the checkpoint's {positions} positions")


# ------------------------------------------------------------------------------------------ image


def image_weights_file(name: str, ref: str, arch: str) -> Path:
    """The weights file of a local image checkpoint (a file, or a folder in timm's layout)."""
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix not in IMAGE_WEIGHT_SUFFIXES:
            raise _fail(name, ref, f"not a weights file (expected {', '.join(IMAGE_WEIGHT_SUFFIXES)})")
        return path
    if not path.is_dir():
        raise _fail(name, ref, "no such weights file or folder")
    config = path / "config.json"
    if not config.is_file():
        raise _fail(name, ref, "no config.json (a timm folder names its architecture there)")
    try:
        found = json.loads(config.read_text()).get("architecture")
    except (ValueError, AttributeError) as exc:
        raise _fail(name, ref, f"config.json is not a timm config: {_first_line(exc)}") from exc
    if found != arch:
        raise _fail(name, ref, f"weights of {found}, but the recipe's arch is {arch}")
    for file in IMAGE_WEIGHT_FILES:
        if (path / file).is_file():
            return path / file
    raise _fail(name, ref, f"no weights in the folder (looked for {', '.join(IMAGE_WEIGHT_FILES)})")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_image(name: str, cfg: ImageModelConfig) -> None:
    """A local weights file must hold every backbone tensor at its shape (timm skips missing keys
    quietly once the classifier is replaced, which would train from random weights unnoticed)."""
    if not isinstance(cfg.pretrained, str):
        return
    path = image_weights_file(name, cfg.pretrained, cfg.arch)
    backbone_shapes = image.backbone_shapes(cfg.arch)
    try:
        found = _tensor_shapes(path)
    except Exception as exc:  # a truncated or foreign file: whatever its reader raises
        raise _fail(name, cfg.pretrained, f"unreadable weights: {_first_line(exc)}") from exc
    missing = [k for k in backbone_shapes if k not in found]
    if missing:
        raise _fail(
            name,
            cfg.pretrained,
            f"lacks {len(missing)} of the {len(backbone_shapes)} tensors of {cfg.arch} "
            f"(first: {missing[0]}): not weights of this architecture",
        )
    wrong = [k for k, shape in backbone_shapes.items() if found[k] != shape]
    if wrong:
        key = wrong[0]
        needed = list(backbone_shapes[key])
        raise _fail(name, cfg.pretrained, f"{key} has shape {list(found[key])}, {cfg.arch} needs {needed}")


def fingerprint(cfg: object) -> dict[str, str]:
    """SHA-256 of a local checkpoint's files (config, weights, tokenizer), by name: part of a training's
    key, so a version reused from the registry was trained from these very weights. Hub names are
    recorded by name alone."""
    files = []
    for ref in dict.fromkeys(kinds.of(cfg).checkpoints(cfg)):
        path = Path(ref).expanduser()
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {str(f): store.file_digest(f) for f in files if f.is_file()}


def check(name: str, cfg: object) -> None:
    """The recipe's checkpoint for model ``name``, if its kind reads one, checked before training."""
    if ref := kinds.of(cfg).preflight:
        kinds.resolve(ref)(name, cfg)
