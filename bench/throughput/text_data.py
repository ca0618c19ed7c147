"""The text samples: token lengths from the real sample (or a log-normal), and the same samples
batched the paper's way and mmpc's."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from bench.throughput.settings import NUM_CLASSES, BenchArgs, Setup, TextArch
from mmpc.models.batching import LengthBucketSampler, TextCollator
from mmpc.models.tokenizer import train_wordpiece
from mmpc.text import join


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1: the tokenizers trainer draws its progress bar there from Rust."""
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def real_texts(folder: Path) -> list[str]:
    with open(folder / "X_train_update.csv", newline="", encoding="utf-8") as f:
        return [join(row["designation"], row["description"]) for row in csv.DictReader(f)]


def token_lengths(args: BenchArgs, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Token counts per product text (with <s> and </s>, before truncation), and where they came from."""
    if not args.synthetic and (args.real_sample / "X_train_update.csv").exists():
        texts = real_texts(args.real_sample)
        # No pretrained CamemBERT/FlauBERT tokenizer offline: a WordPiece of CamemBERT's vocabulary size
        # trained on these texts stands in (it knows their words, so it splits a little less than a
        # pretrained one would: a slight under-estimate of lengths, i.e. of the paper way's waste).
        with quiet_stdout():
            tok = train_wordpiece(texts, vocab_size=32_005)
        counts = np.array([len(ids) for ids in tok(texts)["input_ids"]])
        words = np.array([len(t.split()) for t in texts])
        source = (
            f"token counts of a WordPiece (vocab {len(tok)}) trained offline on the {len(texts)} "
            f"real_sample texts, {(counts - 2).sum() / words.sum():.2f} tokens per whitespace word "
            f"(the 1.3 x words rule would give a median of {np.median(1.3 * words + 2):.0f})"
        )
        return counts, source
    # Product texts: median ~50 tokens with a long tail (mean about twice the median).
    counts = np.maximum(3, rng.lognormal(np.log(50), 1.1, size=20_000)).astype(int)
    return counts, "synthetic log-normal (median 50 tokens, sigma 1.1): no real_sample texts found"


def representative_batches(lengths: np.ndarray, batch_size: int, n: int, seed: int) -> list[np.ndarray]:
    """n batches of an epoch of mmpc's LengthBucketSampler, chosen at evenly spaced quantiles of their
    padded width: with tens of steps and heavy-tailed lengths, n random batches would swing widely."""
    sampler = LengthBucketSampler(lengths, batch_size, seed=seed)
    batches = [np.asarray(b) for b in sampler if len(b) == batch_size]
    widths = np.array([lengths[b].max() for b in batches])
    order = np.argsort(widths, kind="stable")
    picks = order[((np.arange(n) + 0.5) * len(order) / n).astype(int)]
    np.random.default_rng(seed).shuffle(picks)
    return [batches[i] for i in picks]


def make_item(length: int, arch: TextArch, rng: np.random.Generator) -> dict:
    body = rng.integers(10, arch.vocab_size, size=max(0, length - 2)).tolist()
    ids = [arch.special_ids["bos"], *body, arch.special_ids["eos"]]
    return {"input_ids": ids, "labels": int(rng.integers(NUM_CLASSES))}


def pad_to(batch: dict, width: int, pad_id: int) -> dict:
    extra = width - batch["input_ids"].shape[1]
    batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    return batch


def text_batches(arch: TextArch, lengths: np.ndarray, setup: Setup, seed: int) -> dict[str, list[dict]]:
    """The same samples batched both ways: mmpc's length buckets, dynamically padded; the paper's plain
    random batches padded to max_len. Collated up front: the loop times the model, not the collator."""
    rng = np.random.default_rng(seed)
    max_len = arch.cfg.max_len
    epoch = rng.choice(np.minimum(lengths, max_len), size=setup.text_batch * max(200, 2 * setup.steps))
    chosen = representative_batches(epoch, setup.text_batch, setup.steps, seed)
    items = {int(i): make_item(int(epoch[i]), arch, rng) for i in np.concatenate(chosen)}
    collate = TextCollator(arch.special_ids["pad"])
    mmpc = [collate([items[int(i)] for i in b]) for b in chosen]
    shuffled = rng.permutation(np.concatenate(chosen))
    paper = [
        pad_to(
            collate([items[int(i)] for i in shuffled[s : s + setup.text_batch]]),
            max_len,
            arch.special_ids["pad"],
        )
        for s in range(0, len(shuffled), setup.text_batch)
    ]
    return {"paper": paper, "mmpc": mmpc}
