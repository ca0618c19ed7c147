"""Checkpoint folders as the hub publishes them, made offline at a tiny size with the real classes.

- CamemBERT: a ``CamembertModel`` (RoBERTa architecture) and ``CamembertTokenizer`` over a SentencePiece
  unigram vocabulary, the layout of ``camembert-base`` (``<s>NOTUSED``, ``<pad>``, ``</s>NOTUSED``,
  ``<unk>`` first, ``<mask>`` last), its ``sentencepiece.bpe.model`` kept beside ``tokenizer.json``.
- FlauBERT: a ``FlaubertModel`` (XLM architecture) and ``FlaubertTokenizer``: Moses pre-tokenisation
  (sacremoses), then BPE with ``</w>`` word ends in ``vocab.json`` + ``merges.txt``, special tokens at
  FlauBERT's ids (``<s>`` 0, ``</s>`` 1, ``<pad>`` 2, ``<unk>`` 3).
- An image backbone's weights as a file (safetensors, with an ImageNet-sized classifier) and as a folder
  in timm's own layout (``config.json`` + ``model.safetensors``, written by timm's ``save_for_hf``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch

SPECIALS_FLAUBERT = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]


def camembert_checkpoint(folder: Path, texts: Sequence[str], hidden: int = 32, vocab: int = 400) -> Path:
    import sentencepiece as spm
    from transformers import CamembertConfig, CamembertModel, CamembertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model_file,
        vocab_size=vocab,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (folder / "sentencepiece.bpe.model").write_bytes(model_file.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model_file.getvalue())
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    pieces = [p for p in pieces if p[0] not in ("<unk>", "<s>", "</s>")]
    head = [("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0)]
    tokenizer = CamembertTokenizer(vocab=[*head, *pieces, ("<s>", 0.0), ("</s>", 0.0), ("<mask>", 0.0)])
    tokenizer.save_pretrained(folder)
    config = CamembertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    CamembertModel(config, add_pooling_layer=True).save_pretrained(folder)
    return folder


def flaubert_checkpoint(folder: Path, texts: Sequence[str], dim: int = 32, vocab: int = 600) -> Path:
    from sacremoses import MosesTokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import FlaubertConfig, FlaubertModel, FlaubertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    moses = MosesTokenizer(lang="fr")
    words = [moses.tokenize(t, escape=False, return_str=True) for t in texts]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS_FLAUBERT, end_of_word_suffix="</w>", show_progress=False
    )
    bpe.train_from_iterator(words, trainer)
    raw = folder / "bpe"
    raw.mkdir(exist_ok=True)
    bpe.model.save(str(raw))
    tokenizer = FlaubertTokenizer(
        vocab_file=str(raw / "vocab.json"), merges_file=str(raw / "merges.txt"), do_lowercase=False
    )
    tokenizer.save_pretrained(folder)
    config = FlaubertConfig(
        vocab_size=len(tokenizer),
        emb_dim=dim,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=130,
        pad_index=tokenizer.pad_token_id,
        bos_index=tokenizer.bos_token_id,
        eos_index=tokenizer.sep_token_id,
        unk_index=tokenizer.unk_token_id,
    )
    torch.manual_seed(0)
    FlaubertModel(config).save_pretrained(folder)
    return folder


def timm_weights(out: Path, arch: str, folder: bool = False) -> Path:
    """An ImageNet-shaped checkpoint of ``arch`` (1,000-class classifier included), seeded."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    if folder:
        from timm.models import save_for_hf

        save_for_hf(model, out, safe_serialization=True)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out
