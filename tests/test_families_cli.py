"""`kohyagen config` and `lint` for the DiT families: --model-file, --set, --fetch (with a
local fake of the hub), and lint's family rules."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.cli.dataset_cmd import MODEL_CHOICES
from kohyagen.config import model_files, presets
from kohyagen.config.lint import lint_files
from kohyagen.config.lint_family import family_findings
from tests.family_fixtures import TENSORS, family_files, write_safetensors
from tests.test_config_render import make_train_dir


@pytest.fixture
def data(tmp_path) -> Path:
    return make_train_dir(tmp_path, folders=(("5_sks", 6),))


def _run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_model_choices_are_the_presets():
    assert set(MODEL_CHOICES) == {m.name for m in presets.list_models()}


def test_config_takes_model_files_and_set(data, tmp_path):
    f = family_files("flux", tmp_path / "m")
    out = tmp_path / "cfg"
    result = _run("config", data, "--model", "flux", "--gpu", "rtx3060-12", "-o", out,
                  "--model-file", f"dit={f['dit']}", "--model-file", f"clip_l={f['clip_l']}",
                  "--set", f"t5xxl={f['t5xxl']}", "--set", f"ae={f['ae']}")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (out / "training_config.toml").read_text()
    assert f't5xxl = "{f["t5xxl"]}"' in text and "blocks_to_swap = " in text
    assert "loads in: ComfyUI" in result.output
    assert "flux_train_network.py" in result.output


def test_config_refuses_a_bad_model_file_before_writing(data, tmp_path):
    f = family_files("flux", tmp_path / "m")
    out = tmp_path / "cfg"
    result = _run("config", data, "--model", "flux", "--gpu", "rtx4090", "-o", out,
                  "--model-file", f"dit={f['dit']}", "--model-file", f"clip_l={f['clip_l']}",
                  "--model-file", f"t5xxl={tmp_path / 'typo.safetensors'}",
                  "--model-file", f"ae={f['ae']}")  # fmt: skip
    assert result.exit_code == 1
    assert "typo.safetensors" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output and not out.exists()
    bad = _run("config", data, "--model", "flux", "--gpu", "rtx4090", "--model-file", "dit")
    assert bad.exit_code == 2 and "ROLE=PATH" in bad.output


class FakeHub:
    """Stands in for huggingface_hub: files come from a local folder, calls are recorded."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, []

    def hf_hub_url(self, repo_id, filename):
        return f"{repo_id}::{filename}"

    def get_hf_file_metadata(self, url):
        repo_id, filename = url.split("::")
        path = self.root / repo_id / filename
        if not path.exists():
            raise type("EntryNotFoundError", (Exception,), {})(f"404 {url}")
        return SimpleNamespace(size=path.stat().st_size)

    def hf_hub_download(self, repo_id, filename):
        self.calls.append((repo_id, filename))
        path = self.root / repo_id / filename
        if not path.exists():
            raise type("LocalEntryNotFoundError", (Exception,), {})("not in the cache")
        return str(path)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub")
    for f in presets.get_model("flux").family.files:
        if f.hub:
            repo_id, filename = model_files.parse_hub_spec(f.hub)
            write_safetensors(fake.root / repo_id / filename, TENSORS[f.role])
    monkeypatch.setattr(model_files, "_hub", lambda: fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return fake


def test_fetch_downloads_the_public_files_and_says_how_large(data, tmp_path, hub):
    out = tmp_path / "cfg"
    result = _run("config", data, "--model", "flux", "--gpu", "rtx4090", "-o", out, "--fetch")
    assert result.exit_code == 0, result.output
    assert "fetching flux1-dev.safetensors from black-forest-labs/FLUX.1-dev (0.00 GB)" in (
        result.output
    )
    assert len(hub.calls) == 4
    text = (out / "training_config.toml").read_text()
    assert str(hub.root / "comfyanonymous/flux_text_encoders/t5xxl_fp16.safetensors") in text


def test_one_hub_file_given_by_hand_and_offline_mode(data, tmp_path, hub, monkeypatch):
    f = family_files("flux", tmp_path / "m")
    spec = "hf:comfyanonymous/flux_text_encoders/clip_l.safetensors"
    files = {**f, "clip_l": spec}
    from kohyagen.config.render import render_configs

    rendered = render_configs(data, model="flux", gpu="rtx4090", out_dir=tmp_path / "o",
                              model_files=files)  # fmt: skip
    assert rendered.training["clip_l"].startswith(str(hub.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = {**f, "clip_l": "hf:someone/absent/clip.safetensors"}
    from kohyagen.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match=r"cannot fetch clip\.safetensors") as exc:
        render_configs(data, model="flux", gpu="rtx4090", out_dir=tmp_path / "o",
                       model_files=missing)  # fmt: skip
    assert "HF_HUB_OFFLINE" in exc.value.hint


def _lint_text(tmp_path: Path, text: str, dataset_text: str | None = None):
    path = tmp_path / "t.toml"
    if dataset_text is not None:
        (tmp_path / "d.toml").write_text(dataset_text)
        text += f'\ndataset_config = "{tmp_path / "d.toml"}"\n'
    path.write_text(text)
    return {f.code: f for f in lint_files([path], cwd=tmp_path)}


def test_lint_knows_each_family(tmp_path):
    f = family_files("flux", tmp_path / "m")
    images = make_train_dir(tmp_path / "imgs", folders=(("5_sks", 2),)) / "5_sks"
    base = (
        f'pretrained_model_name_or_path = "{f["dit"]}"\nclip_l = "{f["clip_l"]}"\n'
        f't5xxl = "{f["t5xxl"]}"\nae = "{f["ae"]}"\noutput_dir = "{tmp_path}/out"\n'
        'resolution = "1024"\nguidance_scale = 1.0\n'
    )
    ds = "[general]\nshuffle_caption = true\nbucket_reso_steps = 32\n[[datasets]]\n"
    ds += f'[[datasets.subsets]]\nimage_dir = "{images}"\ncaption_extension = ".txt"\n'
    codes = _lint_text(tmp_path, base + 'network_module = "networks.lora"\n'
                       "cache_text_encoder_outputs = true\nblocks_to_swap = 40\n", ds)  # fmt: skip
    assert codes["family-network-module"].fix == 'network_module = "networks.lora_flux"'
    assert "te-cache-with-caption-changes" in codes
    assert "too-many-swapped-blocks" in codes
    assert "is not divisible by 64, which kohya asserts for flux" in codes["bucket-steps"].message
    ok = ds.replace("shuffle_caption = true\nbucket_reso_steps = 32\n", "")
    base += 'network_module = "networks.lora_flux"\n'
    clean = _lint_text(tmp_path, base, ok)
    assert not [c for c, x in clean.items() if x.severity.value == "error"], clean
    swapped = base.replace(f["t5xxl"], f["ae"])
    codes = _lint_text(tmp_path, swapped, ok)
    assert "does not look like a T5-XXL" in codes["model-file"].message
    no_ae = base.replace(f'ae = "{f["ae"]}"\n', "")
    assert "missing-model-file" in _lint_text(tmp_path, no_ae, ok)


@pytest.mark.parametrize(
    ("family", "training", "code"),
    [
        ("chroma", {"model_type": "chroma"}, "chroma-needs-t5-mask"),
        ("anima", {"cache_text_encoder_outputs": True}, "te-cache-with-te-training"),
        ("anima", {"unsloth_offload_checkpointing": True, "blocks_to_swap": 2},
         "swap-with-unsloth-offload"),
        ("sd3", {"blocks_to_swap": 4, "cpu_offload_checkpointing": True}, "swap-with-cpu-offload"),
        ("hunyuan-image", {}, "hunyuan-unet-only"),
        ("hunyuan-image", {"fp8_base": True, "network_train_unet_only": True}, "hunyuan-fp8-base"),
        ("flux", {"cache_text_encoder_outputs": True, "network_args": ["train_t5xxl=True"]},
         "t5-trained-with-cache"),
    ],
)  # fmt: skip
def test_family_assertions(tmp_path, family, training, code):
    script = presets.get_model(family).script_name
    codes = {f.code for f in family_findings(training, None, script, tmp_path)}
    assert code in codes
    assert family_findings(training, None, "train_network", tmp_path) == []


def test_anima_caption_dropout_is_allowed_with_cache_and_bucket_16(tmp_path):
    training = {"cache_text_encoder_outputs": True, "network_train_unet_only": True}
    dataset = {"general": {"caption_dropout_rate": 0.1}}
    codes = {f.code for f in family_findings(training, dataset, "anima", tmp_path)}
    assert codes == {"missing-model-file"}  # no qwen3/vae given; nothing about captions
    assert {f.code for f in family_findings(training, dataset, "flux", tmp_path)} >= {
        "te-cache-with-caption-changes"
    }
