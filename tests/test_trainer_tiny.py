"""kohyagen.run.tiny: tiny random pipelines that diffusers loads offline."""

from __future__ import annotations

import pytest

from kohyagen.errors import UsageError
from tests.trainer_helpers import generate

pytest.importorskip("diffusers")


@pytest.mark.parametrize("kind", ["sd15", "sd2", "sdxl"])
def test_tiny_pipeline_loads_and_generates(tmp_path, kind):
    import diffusers

    from kohyagen.run.tiny import make_tiny_pipeline

    folder = make_tiny_pipeline(tmp_path / kind, kind=kind)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 2_500_000
    cls = (
        diffusers.StableDiffusionXLPipeline if kind == "sdxl" else diffusers.StableDiffusionPipeline
    )
    pipe = cls.from_pretrained(folder)
    assert pipe.vae_scale_factor == 8
    assert pipe.tokenizer.model_max_length == 77
    expected = "v_prediction" if kind == "sd2" else "epsilon"
    assert pipe.scheduler.config.prediction_type == expected
    assert generate(pipe, "a photo of sks").shape == (1, 64, 64, 3)


def test_tokenizer_uses_merges_and_specials(tmp_path):
    from transformers import CLIPTokenizer

    from kohyagen.run.tiny import vocab_size, write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"))
    ids = tok("the sks").input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|startoftext|>")
    assert ids[-1] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["the</w>", "sks</w>"]
    assert len(tok) == vocab_size()


def test_refuses_non_empty_folder(tmp_path):
    from kohyagen.run.tiny import make_tiny_pipeline

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError):
        make_tiny_pipeline(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    with pytest.raises(UsageError):
        make_tiny_pipeline(tmp_path / "y", kind="flux")
