"""`kohyagen config` never writes what lint calls an error, whatever --set says."""

import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kohyagen.cli import main
from kohyagen.config.lint import lint_files
from kohyagen.config.presets import list_models
from kohyagen.config.render import render_configs, write_configs
from kohyagen.errors import KohyagenError
from tests.test_config_render import make_train_dir

# --set values people write, crash-prone combinations among them.
POOL = [
    "max_data_loader_n_workers=0", "max_data_loader_n_workers=4",
    "persistent_data_loader_workers=true", "persistent_data_loader_workers=false",
    "network_dim=1", "network_dim=64", "network_alpha=128", "train_batch_size=3",
    "learning_rate=5e-5", "resolution=64", "resolution=768", "bucket_no_upscale=true",
    "bucket_reso_steps=32", "clip_skip=2", "cache_latents=false", "color_aug=true",
    "sample_sampler=euler_a", "mixed_precision=fp16", "max_train_epochs=3",
    "save_every_n_epochs=1", "optimizer_type=Prodigy", "v_parameterization=true",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("never"))


def _key(item: str) -> str:
    return item.partition("=")[0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from([m.name for m in list_models()]),
    sets=st.lists(st.sampled_from(POOL), max_size=4, unique_by=_key),
)
def test_config_writes_only_what_lints_without_errors(data, model, sets):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cfg"
        try:
            rendered = render_configs(data, model=model, gpu="a100-80", out_dir=out,
                                      overrides=sets)  # fmt: skip
        except KohyagenError as exc:
            assert exc.message  # refused with a message, nothing written
            assert not out.exists()
            return
        write_configs(rendered)
        findings = lint_files(rendered.paths[:2], cwd=Path(tmp))
        assert [f for f in findings if f.severity.value == "error"] == [], (sets, findings)


def test_zero_workers_turn_persistent_workers_off(data, tmp_path):
    out = tmp_path / "cfg"
    result = CliRunner().invoke(main, ["config", str(data), "--model", "sd15", "--gpu", "l4",
                                       "-o", str(out), "--set", "max_data_loader_n_workers=0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (out / "training_config.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("persistent_data_loader_workers"))
    assert line.startswith("persistent_data_loader_workers = false #")
    assert "max_data_loader_n_workers > 0" in line
    lint = CliRunner().invoke(main, ["lint", str(out / "training_config.toml"),
                                     str(out / "dataset_config.toml")])  # fmt: skip
    assert lint.exit_code == 0, lint.output


def test_explicit_crash_pair_is_refused(data, tmp_path):
    result = CliRunner().invoke(main, ["config", str(data), "--model", "sd15", "--gpu", "l4",
                                       "-o", str(tmp_path / "o"),
                                       "--set", "max_data_loader_n_workers=0",
                                       "--set", "persistent_data_loader_workers=true"])  # fmt: skip
    assert result.exit_code == 1 and "persistent_data_loader_workers" in result.output
    assert not (tmp_path / "o").exists()


def test_tiny_images_get_upscaling_instead_of_a_crash(tmp_path):
    from tests.conftest import make_image

    sub = tmp_path / "data" / "5_sks"
    for i in range(3):
        make_image(sub / f"i{i}.png", size=(40, 40))
    rendered = render_configs(tmp_path / "data", model="sd15", gpu="l4", out_dir=tmp_path / "o")
    assert "bucket_no_upscale = false" in rendered.dataset_text
    assert any("bucket_no_upscale = false" in note for note in rendered.notes)
    write_configs(rendered)
    errors = [f for f in lint_files(rendered.paths[:2], cwd=tmp_path) if f.severity.value == "error"]
    assert errors == []
