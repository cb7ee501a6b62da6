"""Severity by what kohya does, plain messages, paths, pairs, zero-side buckets, output."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.config.lint import lint_files
from tests.conftest import make_image

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = """
pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"
network_module = "networks.lora"
output_dir = "/abs/out"
resolution = "512"
train_data_dir = "{root}/training_data"
caption_extension = ".txt"
save_every_n_epochs = 1
max_train_epochs = 4
"""


def _train_dir(root: Path, size=(64, 64), n=2) -> Path:
    sub = root / "training_data" / "10_sks"
    for i in range(n):
        make_image(sub / f"img{i}.png", size=size)
        (sub / f"img{i}.txt").write_text("sks, smile\n")
    return root / "training_data"


def _lint(tmp_path, extra, *more_files):
    _train_dir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD.format(root=tmp_path) + extra + "\n")
    return lint_files([cfg, *more_files], cwd=tmp_path)


def _only(findings, code):
    return [f for f in findings if f.code == code]


def test_clean_base_is_clean(tmp_path):
    assert [f for f in _lint(tmp_path, "") if f.severity.value != "info"] == []


@pytest.mark.parametrize(
    ("extra", "code", "severity"),
    [
        ("epoch = 10", "unknown-key", "error"),
        ("batch_size = 1", "unknown-key", "warning"),  # kohya's default anyway
        ("batch_size = 4", "unknown-key", "error"),
        ("noise_offset_type = 'Original'", "gui-only-key", "warning"),
        ("dynamo_backend = 'no'\ntorch_compile = true", "no-effect", "warning"),
        ("max_token_length = 75", "no-effect", "warning"),
        ("resume = false", "no-effect", "warning"),
        ("sample_sampler = 'dpmpp_2m'", "unknown-sampler", "warning"),
        ("loss_type = 'mse'", "bad-choice", "error"),
        ("huber_schedule = 'linear'", "no-effect", "warning"),
        ("mixed_precision = 'fp32'", "bad-choice", "error"),
        ("persistent_data_loader_workers = true\nmax_data_loader_n_workers = 0",
         "persistent-workers-without-workers", "error"),
        ("sample_every_n_steps = 100", "sampling-without-prompts", "error"),
        ("sample_prompts = ['a cat']", "sample-prompts-array", "error"),
        ("learning_rate = 0.0", "bad-learning-rate", "error"),
        ("learning_rate = nan", "bad-learning-rate", "error"),
        ("unet_lr = -1e-4", "bad-learning-rate", "error"),
        ("network_dim = 0", "below-one", "error"),
        ("train_batch_size = 0", "below-one", "error"),
        ("max_train_steps = 0", "below-one", "error"),
        ("optimizer_type = 'AdamW9bit'", "unknown-optimizer", "error"),
    ],
)  # fmt: skip
def test_severity_follows_what_kohya_does(tmp_path, extra, code, severity):
    hits = _only(_lint(tmp_path, extra), code)
    assert [f.severity.value for f in hits] == [severity], hits


@pytest.mark.parametrize(
    "extra",
    ["dynamo_backend = 'no'", "lr_scheduler_args = []", "optimizer_args = []",
     "text_encoder_lr = 0.0", "max_token_length = 225", "sample_sampler = 'euler_a'",
     "max_data_loader_n_workers = 0\npersistent_data_loader_workers = false"],
)  # fmt: skip
def test_no_false_alarms(tmp_path, extra):
    assert [f for f in _lint(tmp_path, extra) if f.severity.value != "info"] == []


def test_sampler_names_the_nearest_real_one(tmp_path):
    (hit,) = _only(_lint(tmp_path, "sample_sampler = 'dpmpp_2m'"), "unknown-sampler")
    assert hit.fix == 'sample_sampler = "dpmsolver++"' and "DDIM" in hit.message


def test_no_rename_to_an_option_of_another_type(tmp_path):
    # noise_offset_strength would alias noise_offset, a float: "rename" would crash kohya
    (hit,) = _only(_lint(tmp_path, "noise_offset_strength = 'Original'"), "unknown-key")
    assert "rename" not in (hit.fix or "") and hit.severity.value == "error"
    (ok,) = _only(_lint(tmp_path, "noise_offset_strength = 0.05"), "unknown-key")
    assert ok.fix == "rename it to noise_offset"


def test_epoch_says_what_kohya_trains_instead(tmp_path):
    _train_dir(tmp_path)
    (hit,) = _only(lint_files([_no_epochs(tmp_path, "epoch = 10")], cwd=tmp_path), "unknown-key")
    assert "1600" in hit.message and hit.fix == "rename it to max_train_epochs"


def _no_epochs(tmp_path, extra):
    cfg = tmp_path / "e.toml"
    cfg.write_text(GOOD.format(root=tmp_path).replace("max_train_epochs = 4\n", "") + extra)
    return cfg


def test_wrong_type_in_plain_words(tmp_path):
    (hit,) = _only(_lint(tmp_path, "sample_prompts = false"), "wrong-type")
    assert "sample_prompts must be the path of a prompts file" in hit.message
    assert "is not of type" not in hit.message
    (hit,) = _only(_lint(tmp_path, "network_args = 'conv_dim=4'"), "wrong-type")
    assert "list of strings" in hit.message


def test_windows_paths_are_from_another_machine(tmp_path):
    findings = _lint(tmp_path, "reg_data_dir = 'D:\\\\lora\\\\reg'\nlogging_dir = 'C:/logs'")
    assert not _only(findings, "relative-path") and not _only(findings, "data-dir-not-found")
    assert {f.key for f in _only(findings, "other-machine-path")} == {"reg_data_dir", "logging_dir"}
    assert all("cannot be checked here" in f.message for f in _only(findings, "other-machine-path"))


def test_fine_tuning_and_controlnet_paths_are_checked(tmp_path):
    _train_dir(tmp_path)
    ds = tmp_path / "ds.toml"
    ds.write_text(f"""
[general]
resolution = 512
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{tmp_path}/training_data/10_sks"
  metadata_file = "{tmp_path}/meta.json"
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{tmp_path}/training_data/10_sks"
  conditioning_data_dir = "{tmp_path}/cond"
""")
    found = {(f.code, f.key) for f in lint_files([ds], cwd=tmp_path)}
    assert ("path-not-found", "datasets[0].subsets[0].metadata_file") in found
    assert ("path-not-found", "datasets[1].subsets[0].conditioning_data_dir") in found
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "cond").mkdir()
    assert not [f for f in lint_files([ds], cwd=tmp_path) if f.code == "path-not-found"]
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD.format(root=tmp_path) + f'in_json = "{tmp_path}/missing.json"\n')
    assert ("file-not-found", "in_json") in {(f.code, f.key) for f in lint_files([cfg], cwd=tmp_path)}


def test_files_given_together_are_one_launch(tmp_path):
    _train_dir(tmp_path)
    cfg = tmp_path / "t.toml"
    cfg.write_text(GOOD.format(root=tmp_path).replace('resolution = "512"\n', "").replace(
        f'train_data_dir = "{tmp_path}/training_data"\n', ""))
    ds = tmp_path / "d.toml"
    ds.write_text(f'[general]\nresolution = 512\ncaption_extension = ".txt"\n[[datasets]]\n'
                  f'  [[datasets.subsets]]\n  image_dir = "{tmp_path}/training_data/10_sks"\n'
                  "  num_repeats = 10\n  class_tokens = 'sks'\n")  # fmt: skip
    alone = {f.code for f in lint_files([cfg], cwd=tmp_path)}
    assert {"missing-resolution", "no-training-data"} <= alone
    together = lint_files([cfg, ds], cwd=tmp_path)
    assert [f for f in together if f.severity.value != "info"] == []


def test_single_dataset_table_is_a_training_section(tmp_path):
    shutil.copy(FIXTURES / "seed_training_config.toml", tmp_path / "t.toml")
    codes = {f.code for f in lint_files([tmp_path / "t.toml"], cwd=tmp_path)}
    assert "misnamed-datasets" not in codes and "unknown-key" in codes


def _ds(tmp_path, no_upscale=True, resolution=64):
    ds = tmp_path / "d.toml"
    ds.write_text(f"[general]\nresolution = {resolution}\nenable_bucket = true\n"
                  f"min_bucket_reso = 64\nmax_bucket_reso = 128\n"
                  f"bucket_no_upscale = {str(no_upscale).lower()}\ncaption_extension = '.txt'\n"
                  f"[[datasets]]\n  [[datasets.subsets]]\n"
                  f"  image_dir = '{tmp_path}/training_data/10_sks'\n  num_repeats = 10\n"
                  "  class_tokens = 'sks'\n")  # fmt: skip
    return ds


def test_zero_side_bucket_images_are_named(tmp_path):
    _train_dir(tmp_path, size=(128, 96))
    (hit,) = _only(lint_files([_ds(tmp_path)], cwd=tmp_path), "bucket-zero-side")
    assert hit.severity.value == "error" and "ZeroDivisionError" in hit.message
    assert "img0.png (128x96)" in hit.message
    assert not _only(lint_files([_ds(tmp_path, no_upscale=False)], cwd=tmp_path),
                     "bucket-zero-side")  # fmt: skip


def test_dataset_check_names_zero_side_images(tmp_path):
    from kohyagen.dataset.check import check_dataset

    sub = tmp_path / "5_x"
    make_image(sub / "thin.png", size=(600, 40))
    make_image(sub / "fine.png", size=(512, 512))
    report = check_dataset(tmp_path, model="sd15", bucket_no_upscale=True)
    hits = [f for f in report.findings if f.code == "bucket-zero-side"]
    assert [Path(f.file).name for f in hits] == ["thin.png"]
    assert report.errors
    # asked for nothing: what `kohyagen config` renders (upscaling, for this dataset)
    report = check_dataset(tmp_path, model="sd15")
    hits = [f for f in report.findings if f.code == "bucket-zero-side"]
    assert [f.severity.value for f in hits] == ["warning"] and not report.errors
    assert "bucket_no_upscale = false" in hits[0].message


def test_seed_config_four_errors_one_per_line_when_piped(tmp_path, monkeypatch):
    _train_dir(tmp_path)
    for img in (tmp_path / "training_data" / "10_sks").glob("*.png"):
        img.with_suffix(".txt").write_text("sks, smile\n")
    shutil.copy(FIXTURES / "seed_training_config.toml", tmp_path / "training_config.toml")
    (tmp_path / "models" / "sd").mkdir(parents=True)
    (tmp_path / "models" / "sd" / "v1-5-pruned.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal must not wrap anything
    result = CliRunner().invoke(main, ["lint", "training_config.toml"])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if "error[" in ln]
    assert len(errors) == 4, result.output
    pattern = re.compile(r"^training_config\.toml:(\d+):(\d+): error\[[a-z-]+\] \S+: .+ \(fix: .+\)$")
    lines = {m.group(0).split(" ")[1]: int(m.group(1)) for ln in errors if (m := pattern.match(ln))}
    assert len(lines) == 4, errors
    assert lines["error[unknown-key]"] == 9 and lines["error[wrong-type]"] == 8
    assert result.output.splitlines()[-2].startswith("4 error(s)")


def test_json_keeps_its_shape_and_gains_line_and_column(tmp_path):
    _train_dir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD.format(root=tmp_path) + "[extra]\n  epochs = 3\nsample_prompts = 'p.txt'\n")
    result = CliRunner().invoke(main, ["lint", str(cfg), "--cwd", str(tmp_path), "--json"])
    data = json.loads(result.output)
    assert set(data) >= {"files", "errors", "findings", "checked_against"}
    by_key = {f["key"]: f for f in data["findings"]}
    assert (by_key["epochs"]["line"], by_key["epochs"]["column"]) == (11, 3)
    missing = [f for f in data["findings"] if f["code"] == "file-not-found"]
    assert [f["key"] for f in missing] == ["sample_prompts"]  # the option, not the path
    assert all(set(f) >= {"severity", "code", "message", "file", "key", "fix", "line", "column"}
               for f in data["findings"])  # fmt: skip


def test_lint_rejects_an_unknown_family(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("network_module = 'networks.lora'\n")
    result = CliRunner().invoke(main, ["lint", str(cfg), "--model", "sd9"])
    assert result.exit_code != 0 and "unknown model family" in result.output
