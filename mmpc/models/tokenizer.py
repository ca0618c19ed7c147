"""Tokenizers: a pretrained one by name, or a WordPiece trained offline on the catalog's own text.

Training takes about a second on a few thousand products; the result is a regular
``PreTrainedTokenizerFast`` saved with ``save_pretrained``, loaded again with ``AutoTokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, lowercase: bool = False
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL["unk_token"]))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL.values()), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = SPECIAL["bos_token"], SPECIAL["eos_token"]
    # Every sequence starts with <s>: the heads classify from the first token.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL, cls_token=bos, sep_token=eos)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(name_or_path))


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The ids a backbone config must agree on (padding index, sequence start and end)."""
    ids = {
        "pad": tokenizer.pad_token_id,
        "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
        "eos": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id,
    }
    return {k: int(v) for k, v in ids.items() if v is not None}
