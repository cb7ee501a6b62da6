"""The torch Dataset the DataLoader draws from: one item is one whole batch (as in kohya)."""

from __future__ import annotations

import random

import torch

from kohyagen.trainer.captions import expand_wildcards, process_caption
from kohyagen.trainer.data import (
    ImageItem,
    PreparedDataset,
    PreparedGroup,
    epoch_batches,
)
from kohyagen.trainer.latents import LatentCache, crop_top_left, load_image


class BatchDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        prepared: PreparedDataset | PreparedGroup,
        *,
        seed: int,
        cache: LatentCache | None,
        prior_loss_weight: float,
        flip_aug: bool,
        shuffle: bool = True,
    ):
        self.prepared = prepared
        self.seed = seed
        self.cache = cache
        self.prior_loss_weight = prior_loss_weight
        self.flip_aug = flip_aug
        self.shuffle = shuffle
        self.epoch = 0
        # Set by the training loop before iterating, for token warmup: each batch derives its
        # step from its position, so DataLoader workers need no shared counter.
        self.max_train_steps = 0
        self.grad_accum = 1
        self.batches = epoch_batches(prepared, seed, 0, shuffle=shuffle)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches = epoch_batches(self.prepared, self.seed, epoch, shuffle=self.shuffle)

    def __len__(self) -> int:
        return len(self.batches)

    def _flip(self, item: ImageItem, rng: random.Random) -> bool:
        return (self.flip_aug or item.subset.flip_aug) and rng.random() < 0.5

    def _caption(self, item: ImageItem, index: int, rng: random.Random) -> str:
        if not self.shuffle:  # validation: the caption as written, wildcards fixed per batch
            if item.subset.enable_wildcard:
                return expand_wildcards(item.caption, random.Random(index))
            return item.caption
        step = (self.epoch * len(self.batches) + index) // max(1, self.grad_accum)
        return process_caption(
            item.caption,
            item.subset,
            self.epoch + 1,
            rng,
            step=step,
            max_train_steps=self.max_train_steps,
        )

    def __getitem__(self, index: int) -> dict:
        rng = random.Random((self.seed * 7919 + self.epoch) * 100003 + index)
        items = self.batches[index]
        flips = [self._flip(it, rng) if self.shuffle else False for it in items]
        batch: dict = {
            "captions": [self._caption(it, index, rng) for it in items],
            "weights": torch.tensor(
                [self.prior_loss_weight if it.is_reg else 1.0 for it in items],
                dtype=torch.float32,
            ),
            "time_ids": torch.tensor(
                [
                    [
                        *(it.bucket[::-1] if it.uncropped else it.original_size[::-1]),
                        *crop_top_left(it),
                        it.bucket[1],
                        it.bucket[0],
                    ]
                    for it in items
                ],
                dtype=torch.float32,
            ),
        }
        if self.cache is not None:
            pairs = list(zip(items, flips, strict=True))
            batch["latents"] = torch.stack([self.cache.get(it, flip) for it, flip in pairs])
            masks = [self.cache.get_mask(it, flip) for it, flip in pairs]
            if any(mask is not None for mask in masks):
                size = (batch["latents"].shape[2] * 8, batch["latents"].shape[3] * 8)
                batch["alpha_masks"] = torch.stack(
                    [mask if mask is not None else torch.ones(size) for mask in masks]
                )
        else:
            loaded = [
                load_image(it, flip=flip, rng=rng if self.shuffle else None)
                for it, flip in zip(items, flips, strict=True)
            ]
            batch["pixels"] = torch.stack([pixels for pixels, _ in loaded])
            if any(mask is not None for _, mask in loaded):
                # kohya: once one sample has a mask, the others get all-ones masks
                batch["alpha_masks"] = torch.stack(
                    [
                        mask if mask is not None else torch.ones(pixels.shape[1:])
                        for pixels, mask in loaded
                    ]
                )
        return batch


def first(batch_list: list) -> dict:
    """collate_fn: the DataLoader's batch size is 1 because each item is a batch."""
    return batch_list[0]
