"""Cross-command checks: what one command writes, the next one reads without surprises."""

from __future__ import annotations

from click.testing import CliRunner
from train_fixtures import write_configs

from kohyagen.cli import main


def test_train_refuses_a_dataset_config_given_as_the_training_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, dataset = write_configs(tmp_path)
    result = CliRunner().invoke(main, ["train", str(dataset), "--backend", "builtin", "--dry-run"])
    assert result.exit_code == 1, result.output
    assert "dataset config" in result.output
    assert "training_config.toml" in result.output  # the fix names the file to pass
    assert not (tmp_path / "runs").exists()


def _image_folder(folder, n=3):
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (640, 512), (i * 40, 90, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("sks, photo\n")
    return folder


def _backticked(text: str) -> str:
    return text.split("`")[1]


def test_config_on_a_plain_folder_suggests_a_prepare_command_that_works(tmp_path, monkeypatch):
    import shlex

    monkeypatch.chdir(tmp_path)
    images = _image_folder(tmp_path / "my photos")
    result = CliRunner().invoke(main, ["config", str(images), "--model", "sd15", "--gpu", "24gb"])
    assert result.exit_code == 1
    argv = shlex.split(_backticked(result.output))
    assert argv[:3] == ["kohyagen", "dataset", "prepare"]
    prepared = CliRunner().invoke(main, argv[1:])
    assert prepared.exit_code == 0, prepared.output
    assert any(p.name.endswith("_sks") or "_" in p.name for p in (tmp_path / "OUT").iterdir())


def test_next_commands_quote_paths_with_spaces(tmp_path, monkeypatch):
    import shlex

    monkeypatch.chdir(tmp_path)
    images = _image_folder(tmp_path / "my photos")
    runner = CliRunner()
    out = tmp_path / "train dir"
    prepared = runner.invoke(
        main, ["dataset", "prepare", str(images), "-o", str(out), "--concept", "sks"]
    )
    assert prepared.exit_code == 0, prepared.output
    line = next(s for s in prepared.output.splitlines() if s.startswith("next:"))
    argv = shlex.split(line.removeprefix("next:"))
    assert argv[3] == str(out)
    assert runner.invoke(main, argv[1:]).exit_code == 0

    cfg = tmp_path / "my configs"
    configured = runner.invoke(
        main, ["config", str(out), "--model", "sd15", "--gpu", "24gb", "-o", str(cfg)]
    )
    assert configured.exit_code == 0, configured.output
    line = next(s for s in configured.output.splitlines() if s.startswith("next:"))
    argv = shlex.split(line.removeprefix("next:"))
    assert argv[:3] == ["kohyagen", "train", str(cfg / "training_config.toml")]
    assert argv[-1].removesuffix(")") == str(cfg / "training_config.toml")


def test_train_lint_refusal_suggests_a_lint_command_that_finds_the_file(tmp_path, monkeypatch):
    import shlex

    folder = tmp_path / "my run"
    folder.mkdir()
    config, _ = write_configs(folder, extra="network_dimm = 4\nnetwork_alpha = -\n")
    config.write_text(config.read_text().replace("network_alpha = -\n", ""))
    (folder / "data" / "10_sks" / "a.png").unlink()  # image_dir without images: an error
    monkeypatch.chdir(tmp_path / "..")
    result = CliRunner().invoke(main, ["train", str(config), "--backend", "builtin", "--dry-run"])
    assert result.exit_code == 1, result.output
    argv = shlex.split(_backticked(result.output))
    linted = CliRunner().invoke(main, argv[1:])
    assert linted.exit_code == 1 and "file not found" not in linted.output


def _train_dir(root, n=6, repeats=5):
    _image_folder(root / f"{repeats}_sks", n)
    return root


def _render(tmp_path, *overrides, **kwargs):
    from kohyagen.config.render import render_configs

    data = tmp_path / "data"
    if not data.exists():
        _train_dir(data)
    return render_configs(
        data, model="sd15", gpu="24gb", out_dir=tmp_path / "cfg", overrides=overrides, **kwargs
    )


def test_set_max_train_epochs_recomputes_save_interval_and_warmup(tmp_path):
    by_flag = _render(tmp_path, epochs=3)
    by_set = _render(tmp_path, "max_train_epochs=3")
    for key in ("max_train_epochs", "save_every_n_epochs", "lr_warmup_steps"):
        assert by_set.training[key] == by_flag.training[key], key
    # a checkpoint per epoch to choose from, and a warmup shorter than the run
    assert by_set.training["save_every_n_epochs"] < 3
    assert by_set.training["lr_warmup_steps"] < by_set.plan["total_steps"]
    assert not [f for f in by_set.findings if f.code == "no-intermediate-saves"]


def test_set_train_batch_size_recomputes_the_warmup(tmp_path):
    rendered = _render(tmp_path, "train_batch_size=1", "max_train_epochs=2")
    assert rendered.training["train_batch_size"] == 1
    assert rendered.plan["total_steps"] == 2 * 30
    assert rendered.training["lr_warmup_steps"] == round(0.05 * 60)


def test_set_resolution_moves_the_bucket_range_with_it(tmp_path):
    # a range left at 256-1024 would make kohya assert (min_bucket_reso > resolution)
    rendered = _render(tmp_path, "resolution=128")
    general = rendered.dataset["general"]
    assert general["resolution"] == 128
    assert general["min_bucket_reso"] <= 128 <= general["max_bucket_reso"]
    assert general["max_bucket_reso"] == 256
    assert rendered.training["resolution"] == "128"
    # given explicitly, the user's range is kept
    kept = _render(tmp_path, "resolution=128", "dataset.max_bucket_reso=1024")
    assert kept.dataset["general"]["max_bucket_reso"] == 1024


def test_pick_before_the_first_checkpoint_says_when_it_comes(tmp_path):
    config, _ = write_configs(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    text = config.read_text().replace("save_every_n_epochs = 1", "save_every_n_epochs = 3")
    (run / "training_config.toml").write_text(text)
    (run / "train.log").write_text("epoch 1/5\n")
    result = CliRunner().invoke(main, ["pick", str(run)])
    assert result.exit_code == 1, result.output
    assert "no checkpoints saved in this run yet" in result.output
    assert "after epoch 3" in result.output
    assert "set save_every_n_epochs" not in result.output


def test_config_out_that_is_a_file_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _train_dir(tmp_path / "data")
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    result = CliRunner().invoke(
        main, ["config", str(data), "--model", "sd15", "--gpu", "24gb", "-o", str(taken)]
    )
    assert result.exit_code == 1, result.output
    assert "unexpected" not in result.output and str(taken) in result.output
    assert taken.read_text() == "mine\n"


def test_config_out_below_a_file_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _train_dir(tmp_path / "data")
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "notes.txt" / "cfg"
    result = CliRunner().invoke(
        main, ["config", str(data), "--model", "sd15", "--gpu", "24gb", "-o", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "unexpected" not in result.output and "-o" in result.output


def test_config_and_check_agree_on_images_kohya_globs(tmp_path):
    """macOS '._x.png' files and '.Png' suffixes are not images to kohya's glob."""
    from kohyagen.dataset.check import check_dataset

    data = _train_dir(tmp_path / "data", n=4, repeats=5)
    subset = data / "5_sks"
    for i in range(4):
        (subset / f"._{i}.png").write_bytes(b"\x00\x05\x16\x07appledouble")
    (subset / "odd.Png").write_bytes((subset / "0.png").read_bytes())
    report = check_dataset(data, caption_ext=".txt")
    rendered = _render(tmp_path)
    assert report.image_count == 4
    assert rendered.plan["images"] == report.image_count
    assert rendered.plan["images_x_repeats"] == report.images_x_repeats == 20


def test_builtin_trainer_reads_the_images_kohya_globs(tmp_path):
    from kohyagen.dataset.layout import list_images

    folder = _image_folder(tmp_path / "5_sks", n=2)
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / ".hidden.jpg").write_bytes(b"x")
    (folder / "mixed.Jpg").write_bytes(b"x")
    (folder / "UPPER.PNG").write_bytes((folder / "0.png").read_bytes())
    assert [p.name for p in list_images(folder)] == ["0.png", "1.png", "UPPER.PNG"]


def test_lint_and_train_refuse_a_caption_kohya_cannot_decode(tmp_path, monkeypatch):
    """dataset check calls it an error; lint (which gates train) must too, not exit 3 later."""
    monkeypatch.chdir(tmp_path)
    config, dataset = write_configs(tmp_path)
    (tmp_path / "data" / "10_sks" / "a.txt").write_bytes("\ufeffsks".encode("utf-16"))
    linted = CliRunner().invoke(main, ["lint", str(dataset), "--json"])
    assert linted.exit_code == 1, linted.output
    import json

    codes = [f["code"] for f in json.loads(linted.stdout)["findings"]]
    assert "caption-not-utf8" in codes
    trained = CliRunner().invoke(main, ["train", str(config), "--backend", "builtin", "--dry-run"])
    assert trained.exit_code == 1 and "not starting" in trained.output


def test_tagged_with_the_trigger_is_not_class_tokens_unused(tmp_path, monkeypatch):
    """prepare --concept 'sks woman' then tag --trigger sks: the usual flow, no warning."""
    import json

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    _image_folder(data / "10_sks woman", n=2)  # captions "sks, photo"
    result = CliRunner().invoke(
        main, ["config", str(data), "--model", "sd15", "--gpu", "24gb", "--json"]
    )
    assert result.exit_code == 0, result.output
    codes = [f["code"] for f in json.loads(result.stdout)["findings"]]
    assert "class-tokens-unused" not in codes
    # captions without the trigger still warn
    for caption in (data / "10_sks woman").glob("*.txt"):
        caption.write_text("1girl, photo\n")
    result = CliRunner().invoke(
        main, ["config", str(data), "--model", "sd15", "--gpu", "24gb", "--json", "--force"]
    )
    codes = [f["code"] for f in json.loads(result.stdout)["findings"]]
    assert "class-tokens-unused" in codes


def test_set_num_repeats_is_not_silently_shadowed_by_the_subsets(tmp_path):
    import pytest

    from kohyagen.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _render(tmp_path, "num_repeats=3")
    assert "num_repeats" in str(info.value) and "folder" in (info.value.hint or "")


def test_set_non_square_resolution_reaches_both_files(tmp_path):
    for text in ("resolution=768,512", "resolution=[768, 512]", 'resolution="768,512"'):
        rendered = _render(
            tmp_path, text, "dataset.min_bucket_reso=256", "dataset.max_bucket_reso=1024"
        )
        assert rendered.dataset["general"]["resolution"] == [768, 512], text
        assert rendered.training["resolution"] == "768,512", text


def test_prepare_into_its_own_source_folder_is_refused(tmp_path):
    images = _image_folder(tmp_path / "photos")
    before = sorted(p.name for p in images.iterdir())
    result = CliRunner().invoke(
        main, ["dataset", "prepare", str(images), "-o", str(images), "--concept", "sks"]
    )
    assert result.exit_code == 2, result.output
    assert "-o" in result.output
    assert sorted(p.name for p in images.iterdir()) == before  # SRC is never changed


def test_report_status_line_does_not_repeat_the_status(tmp_path):
    from train_fixtures import make_run

    run = make_run(tmp_path, [1.0, 0.9, 0.8], finished=False)
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == "mylora: unknown", first
    assert "ended by" not in (run / "summary.md").read_text()


def test_check_on_a_plain_folder_suggests_a_prepare_command_that_works(tmp_path, monkeypatch):
    import json
    import shlex

    monkeypatch.chdir(tmp_path)
    images = _image_folder(tmp_path / "my photos")
    result = CliRunner().invoke(main, ["dataset", "check", str(images), "--json"])
    fix = next(
        f["fix"] for f in json.loads(result.stdout)["findings"] if f["code"] == "image-folder"
    )
    argv = shlex.split(fix.removesuffix(" builds the kohya layout"))
    prepared = CliRunner().invoke(main, argv[1:])
    assert prepared.exit_code == 0, prepared.output


def test_lora_name_keeps_accented_letters_as_their_ascii_base(tmp_path):
    from kohyagen.config.render_inputs import _safe_name

    assert _safe_name("Ünïcode LoRA ☃") == "Unicode_LoRA"
    assert _safe_name("café-au-lait") == "cafe-au-lait"
    assert _safe_name("日本語") == "lora"


def test_lint_missing_dataset_config_is_one_error_not_also_no_data(tmp_path):
    from kohyagen.config.lint import lint_files

    config, dataset = write_configs(tmp_path)
    dataset.unlink()
    codes = [f.code for f in lint_files([config], cwd=tmp_path)]
    assert "dataset-config-unreadable" in codes
    assert "no-training-data" not in codes  # dataset_config is set; it is just missing


def test_train_refuses_a_training_config_given_as_the_dataset_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = write_configs(tmp_path)
    result = CliRunner().invoke(
        main,
        ["train", str(config), "--dataset-config", str(config), "--backend", "builtin",
         "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "not a dataset config" in result.output


def test_epochs_given_twice_differently_is_refused(tmp_path):
    import pytest

    from kohyagen.errors import ConfigError

    with pytest.raises(ConfigError, match="--epochs"):
        _render(tmp_path, "max_train_epochs=3", epochs=5)
    assert _render(tmp_path, "max_train_epochs=3", epochs=3).training["max_train_epochs"] == 3


def test_lint_and_config_catch_an_empty_image_file(tmp_path, monkeypatch):
    """A 0-byte image (a failed download or sync) stops kohya; dataset check says so too."""
    from kohyagen.config.lint import lint_files

    config, dataset = write_configs(tmp_path)
    (tmp_path / "data" / "10_sks" / "broken.png").write_bytes(b"")
    codes = [f.code for f in lint_files([config, dataset], cwd=tmp_path)]
    assert "empty-image" in codes
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["config", str(tmp_path / "data"), "--model", "sd15", "--gpu", "24gb"]
    )
    assert result.exit_code == 1 and "broken.png" in result.output


def test_pick_on_an_ended_run_ignores_checkpoints_a_later_run_wrote(tmp_path):
    import json
    import os
    import time

    from train_fixtures import make_run

    run = make_run(tmp_path, [1.0, 0.9, 0.8])
    out = tmp_path / "out" / "output"
    start = time.time() - 1000
    state = {"status": "succeeded", "started_at": start, "ended_at": start + 100,
             "attempts": [{"number": 1, "started_at": start, "ended_at": start + 100}]}  # fmt: skip
    (run / "train.json").write_text(json.dumps(state))
    for path in out.iterdir():
        os.utime(path, (start + 50, start + 50))
    # a later run with the same output_name rewrote the final file
    os.utime(out / "mylora.safetensors", (start + 900, start + 900))
    result = CliRunner().invoke(main, ["pick", str(run), "--json"])
    assert result.exit_code == 0, result.output
    files = {row["file"] for row in json.loads(result.stdout)["ranking"]}
    assert files == {"mylora-000001.safetensors", "mylora-000002.safetensors"}


def test_prepare_refuses_an_image_extension_for_captions(tmp_path):
    images = _image_folder(tmp_path / "photos")
    out = tmp_path / "train"
    result = CliRunner().invoke(
        main,
        ["dataset", "prepare", str(images), "-o", str(out), "--concept", "sks",
         "--caption-ext", ".png"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "caption extension" in result.output
    assert not out.exists()


def test_lint_catches_a_broken_image_link_kohya_would_load(tmp_path):
    from kohyagen.config.lint import lint_files

    config, dataset = write_configs(tmp_path)
    (tmp_path / "data" / "10_sks" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    codes = [f.code for f in lint_files([config, dataset], cwd=tmp_path)]
    assert "broken-image-link" in codes
