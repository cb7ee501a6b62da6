"""Image tensors and VAE latents, cached in memory or in .npz files beside the images.

The disk cache uses kohya's file names (`<stem>_<W>x<H>_sd.npz`, `_sdxl.npz` for
SDXL, W and H zero-padded to 4 digits) and keys suffixed with the latent size,
so a cache is reused only for the same bucket.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohyagen.atomic import replacing
from kohyagen.trainer.augment import color_aug, face_crop, native_crop, resize_and_crop
from kohyagen.trainer.data import ImageItem

if TYPE_CHECKING:
    import torch


def load_pixels(
    item: ImageItem, *, flip: bool = False, rng: random.Random | None = None
) -> torch.Tensor:
    """The image as a (3, H, W) float tensor in [-1, 1], fitted to its bucket."""
    return load_image(item, flip=flip, rng=rng)[0]


def load_image(
    item: ImageItem, *, flip: bool = False, rng: random.Random | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pixels, mask): the image as a (3, H, W) float tensor in [-1, 1] fitted to its
    bucket, and with the subset's alpha_mask its alpha channel as an (H, W) tensor in 0..1
    (ones for an opaque image), else None.

    rng (training only) drives the subset's random_crop and color_aug, applied in kohya's
    order: crop, colour, flip.
    """
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    crop_rng = rng if rng is not None and item.subset.random_crop else None
    with Image.open(item.path) as im:
        # The alpha channel rides along through every crop and flip as a 4th channel.
        im = ImageOps.exif_transpose(im).convert("RGBA" if item.subset.alpha_mask else "RGB")
        if item.face is not None:
            im = face_crop(
                im,
                item.bucket,
                item.face,
                item.subset.face_crop_aug_range or (1.0, 1.0),
                random_crop=item.subset.random_crop,
                rng=rng or random.Random(0),  # validation and caches: one fixed cut
                interpolation=item.subset.resize_interpolation,
            )
        elif item.native_crop:
            im = native_crop(im, item.bucket, crop_rng or random.Random(0))
        else:
            im, _ = resize_and_crop(
                im, item.bucket, rng=crop_rng, interpolation=item.subset.resize_interpolation
            )
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    im = im.convert("RGB")  # drops the alpha without compositing, as kohya does
    if rng is not None and item.subset.color_aug:
        im = color_aug(im, rng)
    if flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        alpha = alpha.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if alpha is not None else None
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    pixels = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    mask = None
    if alpha is not None:
        mask = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)
    return pixels, mask


def crop_top_left(item: ImageItem) -> tuple[int, int]:
    """(top, left) of the crop, as SDXL's size conditioning wants it.

    Like kohya, the centre crop's even with random_crop (kohya leaves the random offset out).
    """
    if item.uncropped:
        return 0, 0  # kohya: the cut window is the "original", uncropped
    w, h = item.original_size
    bw, bh = item.bucket
    scale = max(bw / w, bh / h)
    new_w, new_h = max(bw, round(w * scale)), max(bh, round(h * scale))
    return (new_h - bh) // 2, (new_w - bw) // 2


def npz_path(item: ImageItem, *, sdxl: bool) -> Path:
    w, h = item.bucket
    suffix = "_sdxl.npz" if sdxl else "_sd.npz"
    return item.path.with_name(f"{item.path.stem}_{w:04d}x{h:04d}{suffix}")


def _key(name: str, latents_hw: tuple[int, int]) -> str:
    return f"{name}_{latents_hw[0]}x{latents_hw[1]}"


class LatentCache:
    """Latents for each (image, flip) pair, encoded once with the VAE."""

    def __init__(
        self, vae: Any, *, scaling_factor: float, sdxl: bool, to_disk: bool, batch_size: int
    ) -> None:
        self.vae = vae
        self.scaling_factor = scaling_factor
        self.sdxl = sdxl
        self.to_disk = to_disk
        self.batch_size = max(1, batch_size)
        self._mem: dict[tuple[Path, tuple[int, int], bool], torch.Tensor] = {}
        # alpha_mask subsets: the unflipped mask per image, flipped on the way out (kohya)
        self._masks: dict[tuple[Path, tuple[int, int]], torch.Tensor | None] = {}

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            vae_dtype = next(self.vae.parameters()).dtype
            dist = self.vae.encode(pixels.to(self.vae.device, vae_dtype)).latent_dist
            return (dist.sample() * self.scaling_factor).float()

    def _load_disk(self, item: ImageItem, flips: list[bool]) -> bool:
        import numpy as np
        import torch

        path = npz_path(item, sdxl=self.sdxl)
        if not path.is_file():
            return False
        hw = (item.bucket[1] // 8, item.bucket[0] // 8)
        try:
            with np.load(path) as data:
                found = {}
                for flip in flips:
                    key = _key("latents_flipped" if flip else "latents", hw)
                    if key not in data:
                        return False
                    found[flip] = torch.from_numpy(data[key].astype(np.float32))
                mask = None
                if item.subset.alpha_mask:
                    if _key("alpha_mask", hw) not in data:
                        return False  # cached without the mask: encode again
                    mask = torch.from_numpy(data[_key("alpha_mask", hw)].astype(np.float32))
        except (OSError, ValueError):
            return False
        for flip, lat in found.items():
            self._mem[(item.path, item.bucket, flip)] = lat
        if mask is not None:
            self._masks[(item.path, item.bucket)] = mask
        return True

    def _save_disk(self, item: ImageItem) -> None:
        import numpy as np

        hw = (item.bucket[1] // 8, item.bucket[0] // 8)
        arrays = {}
        for flip in (False, True):
            lat = self._mem.get((item.path, item.bucket, flip))
            if lat is not None:
                arrays[_key("latents_flipped" if flip else "latents", hw)] = lat.numpy()
        arrays[_key("original_size", hw)] = np.array(item.original_size)
        mask = self._masks.get((item.path, item.bucket))
        if mask is not None:
            arrays[_key("alpha_mask", hw)] = mask.numpy()
        path = npz_path(item, sdxl=self.sdxl)
        with replacing(path) as tmp, open(tmp, "xb") as handle:
            # a handle: np.savez would append .npz to a name. numpy's stub lets **kwds
            # collide with allow_pickle: bool; these keys are latents_*, never that.
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    def fill(
        self,
        items: list[ImageItem],
        *,
        flip_aug: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Encode every item not yet cached (reading or writing the disk cache)."""
        import torch

        todo: list[tuple[ImageItem, bool]] = []
        seen: set[tuple[Path, tuple[int, int]]] = set()
        for item in items:
            if (item.path, item.bucket) in seen:
                continue
            seen.add((item.path, item.bucket))
            flips = [False, True] if flip_aug or item.subset.flip_aug else [False]
            if self.to_disk and self._load_disk(item, flips):
                continue
            todo.extend((item, flip) for flip in flips)
        # Same-size batches only: group by bucket.
        todo.sort(key=lambda pair: pair[0].bucket)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            groups: dict[tuple[int, int], list[tuple[ImageItem, bool]]] = {}
            for pair in chunk:
                groups.setdefault(pair[0].bucket, []).append(pair)
            for group in groups.values():
                loaded = [load_image(it, flip=flip) for it, flip in group]
                pixels = torch.stack([px for px, _ in loaded])
                for (it, flip), (_, mask) in zip(group, loaded, strict=True):
                    if mask is not None and not flip:
                        self._masks[(it.path, it.bucket)] = mask
                latents = self.encode(pixels).cpu()
                for (it, flip), lat in zip(group, latents, strict=True):
                    self._mem[(it.path, it.bucket, flip)] = lat
            if progress:
                progress(min(start + self.batch_size, len(todo)), len(todo))
        if self.to_disk:
            for item, _flip in todo:
                self._save_disk(item)

    def get(self, item: ImageItem, flip: bool) -> torch.Tensor:
        return self._mem[(item.path, item.bucket, flip)]

    def get_mask(self, item: ImageItem, flip: bool) -> torch.Tensor | None:
        """The alpha mask (H, W) for an alpha_mask subset's image, else None."""
        import torch

        mask = self._masks.get((item.path, item.bucket))
        return torch.flip(mask, [1]) if mask is not None and flip else mask
