"""Text batching shared by training and inference: pre-tokenised datasets, dynamic padding, the
length-bucketed batch sampler, and the autocast policy. Inference imports it without the training loop."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on a GPU (fp16 on one without bf16); full precision on the CPU."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


class TextDataset(Dataset):
    """Pre-tokenised texts (token id lists, already truncated) and their class indices."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None = None):
        self.input_ids = input_ids
        self.labels = labels
        self.lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


class TextCollator:
    """Dynamic padding: a batch is padded to its own longest text, not to max_len."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.as_tensor(it["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return batch


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar lengths, in random order, so padding costs little.

    Indices are shuffled, cut into pools of ``batch_size * pool_batches``, each pool sorted by length
    and cut into batches; the batch order is shuffled again. ``lengths=None`` (images, embeddings)
    gives plain random batches. The order is a pure function of (seed, epoch), so a resumed training
    skips exactly the batches it had done (``set_epoch(epoch, start_batch)``).

    With ``num_replicas`` > 1 (DDP), ``batch_size`` is the global batch: every rank draws the same
    global batches and takes its own slice ``[rank::num_replicas]`` of each, so the averaged gradient
    is the single-process gradient of that batch and the loss curve matches one process's.
    """

    def __init__(
        self,
        lengths: np.ndarray | int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        # An int is a dataset size without lengths: no sorting, random batches.
        self.lengths = np.zeros(lengths, dtype=np.int64) if isinstance(lengths, int) else np.asarray(lengths)
        self.start_batch = 0
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = batch_size * pool_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches: list[np.ndarray] = []
        for start in range(0, n, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.num_replicas > 1:
            # Every rank must take a step for every batch: drop a tail batch too small to share.
            batches = [b[self.rank :: self.num_replicas] for b in batches if len(b) >= self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches()[self.start_batch :]:
            yield batch.tolist()

    def epoch_batches(self) -> int:
        """Batches in a whole epoch (what ``len`` gives before any ``start_batch``)."""
        n = len(self.lengths)
        sizes = [min(self.pool, n - s) for s in range(0, n, self.pool)]
        batches = sum(math.ceil(size / self.batch_size) for size in sizes)
        if self.num_replicas > 1:
            batches -= sum(0 < size % self.batch_size < self.num_replicas for size in sizes)
        return batches

    def __len__(self) -> int:
        return self.epoch_batches() - self.start_batch
