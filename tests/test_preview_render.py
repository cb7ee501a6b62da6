"""kohyagen preview with the real renderer: a tiny random pipeline and a real LoRA file."""

from __future__ import annotations

import json

import pytest
from preview_fixtures import make_preview_run

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from kohyagen.report.preview import PreviewOptions, render_preview

pytestmark = [pytest.mark.slow, pytest.mark.train]


def write_lora(model_dir, path, *, sdxl: bool) -> None:
    """A kohya-format LoRA for the tiny model whose up weights are not zero (so it acts)."""
    import torch
    from safetensors.torch import save_file

    from kohyagen.trainer.lora import LoRANetwork
    from kohyagen.trainer.preview import LoraRenderer

    renderer = LoraRenderer(str(model_dir), sdxl=sdxl, device="cpu")
    components = renderer.components
    torch.manual_seed(0)
    network = LoRANetwork(components.unet, components.text_encoders, rank=2, alpha=2, sdxl=sdxl)
    with torch.no_grad():
        for mod in [*network.text_encoder_loras, *network.unet_loras]:
            mod.lora_up.weight.normal_(0, 0.5)
    state = {k: v.detach().contiguous() for k, v in network.kohya_state_dict().items()}
    save_file(state, str(path))


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_base_model_with_a_lora_at_each_weight(tmp_path, kind):
    from PIL import Image, ImageChops

    from kohyagen.run.tiny import make_tiny_pipeline

    model = make_tiny_pipeline(tmp_path / f"tiny-{kind}", kind=kind)
    script = "sdxl_train_network" if kind == "sdxl" else "train_network"
    run = make_preview_run(tmp_path, model=model, script=script)
    final = tmp_path / "out" / "output" / "mylora.safetensors"
    write_lora(model, final, sdxl=kind == "sdxl")
    prompts = tmp_path / "one.txt"
    prompts.write_text("sks, red circle --w 64 --h 64 --l 5 --s 2 --d 11\n")
    options = PreviewOptions(checkpoints="best", weights=(0.0, 1.0), seeds=1, prompts=prompts,
                             trigger="nobody")  # fmt: skip
    result = render_preview(run, options)
    assert result.total == result.drawn == 3
    cells = json.loads(result.index.read_text())["grids"][0]["cells"][0]
    base, zero, one = (Image.open(result.folder / cell[0]).convert("RGB") for cell in cells)
    assert base.size == (64, 64)
    # weight 0 is the base model exactly; weight 1 changes the picture
    assert ImageChops.difference(base, zero).getbbox() is None
    assert ImageChops.difference(base, one).getbbox() is not None
    # a seed's image does not depend on the batch it was drawn in
    from kohyagen.trainer.preview import LoraRenderer

    renderer = LoraRenderer(str(model), sdxl=kind == "sdxl", device="cpu")
    job = {"prompt": "sks, red circle", "negative": "", "width": 64, "height": 64, "steps": 2,
           "scale": 5.0}  # fmt: skip
    alone = renderer.draw(seeds=[11], **job)[0]
    assert ImageChops.difference(alone, base).getbbox() is None
    batched = renderer.draw(seeds=[5, 11], **job)
    diff = ImageChops.difference(batched[1], alone).getextrema()
    assert max(high for _low, high in diff) <= 2  # batched float math, not another image
    assert ImageChops.difference(batched[0], alone).getbbox() is not None
