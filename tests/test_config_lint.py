import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.config.lint import lint_files
from kohyagen.findings import Severity
from tests.conftest import make_image

FIXTURES = Path(__file__).parent / "fixtures"


def _train_dir(root: Path, folder="10_sks", n=3, ext=".txt", caption="sks, 1girl, smile"):
    sub = root / "training_data" / folder
    for i in range(n):
        make_image(sub / f"img{i}.png")
        if ext:
            (sub / f"img{i}{ext}").write_text(caption + "\n")
    return root / "training_data"


def _codes(findings):
    return {(f.code, f.key) for f in findings}


def _by_code(findings, code):
    return [f for f in findings if f.code == code]


@pytest.fixture
def seed_project(tmp_path):
    """The seed guide's training_config.toml next to training_data/10_sks/ with .txt captions."""
    _train_dir(tmp_path)
    shutil.copy(FIXTURES / "seed_training_config.toml", tmp_path / "training_config.toml")
    return tmp_path


def test_seed_config_acceptance(seed_project, monkeypatch):
    monkeypatch.chdir(seed_project)
    result = CliRunner().invoke(main, ["lint", "training_config.toml", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    findings = data["findings"]
    by = {(f["code"], f["key"]): f for f in findings}
    unknown = by[("unknown-key", "batch_size")]
    assert unknown["severity"] == "error" and "train_batch_size" in unknown["fix"]
    res = by[("wrong-type", "resolution")]
    assert "string" in res["message"] and res["fix"] == 'resolution = "512"'
    assert by[("missing-network-module", "network_module")]["fix"] == (
        'network_module = "networks.lora"'
    )
    captions = by[("captions-not-read", "caption_extension")]
    assert ".txt" in captions["message"] and ".caption" in captions["message"]
    assert captions["fix"] == 'caption_extension = ".txt"'
    assert all(f["file"].endswith("training_config.toml") for f in findings)
    assert data["errors"] == sum(1 for f in findings if f["severity"] == "error")


def test_seed_config_table_output(seed_project, monkeypatch):
    monkeypatch.chdir(seed_project)
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(main, ["lint", "training_config.toml"])
    assert result.exit_code == 1
    assert "batch_size" in result.output and "train_batch_size" in result.output
    assert "[dataset]" in result.output  # section names are not eaten as rich markup
    assert "error(s)" in result.output


def test_relative_paths_resolve_against_cwd(seed_project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    findings = lint_files([seed_project / "training_config.toml"], cwd=elsewhere)
    assert ("data-dir-not-found", "train_data_dir") in _codes(findings)
    assert not _by_code(findings, "captions-not-read")
    rel = _by_code(findings, "relative-path")
    assert {f.key for f in rel} >= {"train_data_dir", "output_dir"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """
pretrained_model_name_or_path = "stabilityai/stable-diffusion-xl-base-1.0"
network_module = "networks.lora"
output_dir = "{root}/out"
resolution = "1024"
train_data_dir = "{root}/training_data"
caption_extension = ".txt"
save_every_n_epochs = 1
"""


def test_clean_config_has_no_errors(tmp_path):
    _train_dir(tmp_path)
    cfg = _write(tmp_path / "c.toml", GOOD.format(root=tmp_path))
    findings = lint_files([cfg], cwd=tmp_path)
    assert [f for f in findings if f.severity is not Severity.INFO] == []
    result = CliRunner().invoke(main, ["lint", str(cfg), "--cwd", str(tmp_path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("extra", "code", "key"),
    [
        ("epochs = 10", "unknown-key", "epochs"),
        ("lr = 1e-4", "unknown-key", "lr"),
        ("netwrok_dim = 8", "unknown-key", "netwrok_dim"),
        ("num_repeats = 3", "unknown-key", "num_repeats"),
        ("class_tokens = 'x'", "dataset-key-in-training-config", "class_tokens"),
        ("learning_rate = '1e-4'", "wrong-type", "learning_rate"),
        ("max_train_epochs = 10.0", "wrong-type", "max_train_epochs"),
        ("gradient_checkpointing = 'true'", "wrong-type", "gradient_checkpointing"),
        ("mixed_precision = 'fp99'", "bad-choice", "mixed_precision"),
        ("full_fp16 = true", "full-fp16-needs-fp16", "full_fp16"),
        ("fp8_base = true", "fp8-needs-mixed-precision", "fp8_base"),
        ("cache_latents = true\ncolor_aug = true", "cache-latents-with-augment", "cache_latents"),
        ("adaptive_noise_scale = 0.01", "adaptive-noise-needs-offset", "adaptive_noise_scale"),
        ("enable_bucket = true\nmin_bucket_reso = 1280", "min-bucket-above-resolution",
         "min_bucket_reso"),
        ("enable_bucket = true\nmax_bucket_reso = 768", "max-bucket-below-resolution",
         "max_bucket_reso"),
        ("bucket_reso_steps = 48", "bucket-steps", "bucket_reso_steps"),
        ("cache_text_encoder_outputs = true", "te-cache-with-te-training",
         "cache_text_encoder_outputs"),
        ("cache_text_encoder_outputs = true\nnetwork_train_unet_only = true\n"
         "shuffle_caption = true", "te-cache-with-caption-changes", "shuffle_caption"),
        ("optimizer_type = 'AdamW9bit'", "unknown-optimizer", "optimizer_type"),
        ("caption_extention = '.txt'", "misspelled-alias", "caption_extention"),
        ("reg_data_dir = 'reg'", "data-dir-not-found", "reg_data_dir"),
        ("mixed_precision = 'fp16'", "sdxl-vae-fp16", "mixed_precision"),
        ("network_dim = 4\nnetwork_alpha = 8.0", "alpha-above-dim", "network_alpha"),
        ("network_dim = 4", "default-steps", "max_train_epochs"),
        ("[extra]\nresolution = '1024'", "duplicate-key", "resolution"),
        ("max_train_epochs = 1", "no-intermediate-saves",
         "save_every_n_epochs"),
    ],
)  # fmt: skip
def test_training_rules(tmp_path, extra, code, key):
    _train_dir(tmp_path)
    cfg = _write(tmp_path / "c.toml", GOOD.format(root=tmp_path) + extra + "\n")
    findings = lint_files([cfg], cwd=tmp_path)
    assert (code, key) in _codes(findings), findings
    hit = next(f for f in findings if (f.code, f.key) == (code, key))
    assert hit.fix and hit.file == str(cfg)


def test_suggestions(tmp_path):
    _train_dir(tmp_path)
    cfg = _write(
        tmp_path / "c.toml",
        GOOD.format(root=tmp_path) + "epochs = 3\nnetwrok_dim = 8\nmixed_precision = 'bf61'\n",
    )
    fixes = {f.key: f.fix for f in lint_files([cfg], cwd=tmp_path)}
    assert fixes["epochs"] == "rename it to max_train_epochs"
    assert fixes["netwrok_dim"] == "rename it to network_dim"
    assert fixes["mixed_precision"] == 'mixed_precision = "bf16"'


def test_missing_essentials_and_data(tmp_path):
    cfg = _write(tmp_path / "c.toml", "learning_rate = 1e-4\n")
    codes = {f.code for f in lint_files([cfg], cwd=tmp_path)}
    assert {
        "missing-pretrained-model-name-or-path",
        "missing-network-module",
        "missing-output-dir",
        "missing-resolution",
        "no-training-data",
    } <= codes


def test_no_subsets_and_folder_checks(tmp_path):
    make_image(tmp_path / "training_data" / "loose.png")
    (tmp_path / "training_data" / "noprefix").mkdir()
    cfg = _write(tmp_path / "c.toml", GOOD.format(root=tmp_path))
    codes = {f.code for f in lint_files([cfg], cwd=tmp_path)}
    assert "no-subsets" in codes


def test_captions_partial_empty_and_class_tokens(tmp_path):
    data = _train_dir(tmp_path, caption="1girl, smile")  # captions lack the class token
    (data / "10_sks" / "img0.txt").write_text("")
    make_image(data / "10_sks" / "uncaptioned.png")
    cfg = _write(tmp_path / "c.toml", GOOD.format(root=tmp_path))
    codes = {f.code for f in lint_files([cfg], cwd=tmp_path)}
    assert {"empty-caption", "missing-captions"} <= codes
    (data / "10_sks" / "uncaptioned.png").unlink()
    (data / "10_sks" / "img0.txt").write_text("1girl\n")
    codes = {f.code for f in lint_files([cfg], cwd=tmp_path)}
    assert "class-tokens-unused" in codes


DATASET = """
[general]
resolution = 512
caption_extension = ".txt"

[[datasets]]
  [[datasets.subsets]]
  image_dir = "{root}/training_data/10_sks"
  num_repeats = 10
  class_tokens = "sks"
"""


def test_dataset_config_clean_and_detected(tmp_path):
    _train_dir(tmp_path)
    ds = _write(tmp_path / "ds.toml", DATASET.format(root=tmp_path))
    assert lint_files([ds], cwd=tmp_path) == []


@pytest.mark.parametrize(
    ("edit", "code", "key"),
    [
        (("[general]", "[general]\ntrain_batch_size = 2"), "unknown-key",
         "general.train_batch_size"),
        (("[general]", "[general]\nprior_loss_weight = 1.0"), "cli-only-key",
         "general.prior_loss_weight"),
        (("[general]", "[general]\nlearning_rate = 1e-4"), "training-key-in-dataset-config",
         "general.learning_rate"),
        (("num_repeats = 10", "num_repeats = 10\n  validation_split = 0.1"), "wrong-level",
         "datasets[0].subsets[0].validation_split"),
        (("resolution = 512", 'resolution = "512,512"'), "wrong-type", "general.resolution"),
        (("resolution = 512", "resolution = 512\nvalidation_split = 1"), "wrong-type",
         "general.validation_split"),
        (("resolution = 512", "resolution = 512\nvalidation_split = 0.2"),
         "validation-without-seed", "datasets[0].validation_seed"),
        (("  num_repeats = 10\n", ""), "repeats-not-parsed", "datasets[0].subsets[0].num_repeats"),
        (('caption_extension = ".txt"', 'caption_extension = ".caption"'), "captions-not-read",
         "general.caption_extension"),
        (("[general]", "[general]\nenable_bucket = true\nmin_bucket_reso = 640"),
         "min-bucket-above-resolution", "general.min_bucket_reso"),
        (("10_sks\"", "nope\""), "image-dir-not-found", "datasets[0].subsets[0].image_dir"),
    ],
)  # fmt: skip
def test_dataset_rules(tmp_path, edit, code, key):
    _train_dir(tmp_path)
    ds = _write(tmp_path / "ds.toml", DATASET.format(root=tmp_path).replace(*edit))
    findings = lint_files([ds], cwd=tmp_path)
    assert (code, key) in _codes(findings), findings


def test_class_tokens_not_parsed_with_dataset_config(tmp_path):
    _train_dir(tmp_path, ext=None)
    ds = _write(
        tmp_path / "ds.toml", DATASET.format(root=tmp_path).replace('  class_tokens = "sks"\n', "")
    )
    assert "class-tokens-not-parsed" in {f.code for f in lint_files([ds], cwd=tmp_path)}


def test_training_with_dataset_config(tmp_path):
    _train_dir(tmp_path)
    ds = _write(
        tmp_path / "ds.toml",
        DATASET.format(root=tmp_path).replace("[general]", "[general]\nbatch_size = 1"),
    )
    cfg = _write(
        tmp_path / "c.toml",
        GOOD.format(root=tmp_path)
        + f'dataset_config = "{ds}"\ntrain_batch_size = 4\nflip_aug = true\n',
    )
    findings = lint_files([cfg], cwd=tmp_path)
    codes = _codes(findings)
    assert ("ignored-with-dataset-config", "train_data_dir") in codes
    assert ("overridden-by-dataset-config", "train_batch_size") in codes
    # resolution "1024" here vs 512 in the dataset file: the dataset file wins.
    assert ("overridden-by-dataset-config", "resolution") in codes
    # the dataset file was linted too, once, with the training options as fallback
    assert not _by_code(findings, "captions-not-read")
    both = lint_files([cfg, ds], cwd=tmp_path)
    assert len(both) == len(findings)


def test_training_dataset_config_missing(tmp_path):
    cfg = _write(tmp_path / "c.toml", GOOD.format(root=tmp_path) + 'dataset_config = "nope.toml"\n')
    assert "dataset-config-unreadable" in {f.code for f in lint_files([cfg], cwd=tmp_path)}


def test_lint_cli_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["lint", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1 and "file not found" in result.output
    assert "Traceback" not in result.output
    bad = _write(tmp_path / "bad.toml", "a = = 1\n")
    result = runner.invoke(main, ["lint", str(bad)])
    assert result.exit_code == 1 and "malformed TOML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_resolution_string(tmp_path):
    _train_dir(tmp_path)
    text = GOOD.format(root=tmp_path).replace('"1024"', '"1024x1024"')
    findings = lint_files([_write(tmp_path / "c.toml", text)], cwd=tmp_path)
    assert ("bad-resolution", "resolution") in _codes(findings)


def test_train_data_dir_at_subset_level_points_to_parent(tmp_path):
    data = _train_dir(tmp_path)
    text = GOOD.format(root=tmp_path).replace(str(data), str(data / "10_sks"))
    findings = lint_files([_write(tmp_path / "c.toml", text)], cwd=tmp_path)
    (hit,) = _by_code(findings, "no-subsets")
    assert str(data) in hit.fix


def test_image_dir_at_train_dir_level(tmp_path):
    data = _train_dir(tmp_path)
    text = DATASET.format(root=tmp_path).replace(str(data / "10_sks"), str(data))
    findings = lint_files([_write(tmp_path / "ds.toml", text)], cwd=tmp_path)
    (hit,) = _by_code(findings, "no-images")
    assert "10_sks" in hit.fix and "one subset per folder" in hit.fix


@pytest.mark.parametrize(
    ("name", "flagged"),
    [("AdamW8bit", False), ("prodigy", False), ("RAdam", False), ("radam", True),
     ("torch.optim.SGD", False), ("AdamW9bit", True)],
)  # fmt: skip
def test_optimizer_names_as_kohya_resolves_them(tmp_path, name, flagged):
    _train_dir(tmp_path)
    text = GOOD.format(root=tmp_path) + f'optimizer_type = "{name}"\n'
    findings = lint_files([_write(tmp_path / "c.toml", text)], cwd=tmp_path)
    assert bool(_by_code(findings, "unknown-optimizer")) is flagged
