"""The run pipeline's bookkeeping with stand-in stages: resume, budget, changed inputs.

The real stages are exercised end to end in test_run_e2e.py; here each stage is replaced
by a small function so that the orchestration itself is tested in milliseconds.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.errors import (
    BudgetExceeded,
    KohyagenError,
    RunStateError,
    SdScriptsNotFound,
    TrainingFailed,
)
from kohyagen.run import stages
from kohyagen.run.manifest import DONE, FAILED, PENDING, RUNNING, SKIPPED, STAGES, Manifest
from kohyagen.run.pipeline import RunOptions, run_pipeline
from tests.conftest import make_image


@pytest.fixture(autouse=True)
def _no_user_prices(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    for i in range(4):
        make_image(folder / f"{i}.png", color=(i * 40, 10, 10))
        (folder / f"{i}.txt").write_text(f"sks, picture {i}\n")
    return folder


class FakeStages:
    """Stand-ins for the stages that need the other modules; estimate stays real."""

    def __init__(self, monkeypatch, *, fail_train: int = 0):
        self.calls: list[str] = []
        self.fail_train = fail_train
        fakes = {
            "check": self.check,
            "prepare": self.prepare,
            "tag": self.tag,
            "config": self.config,
            "train": self.train,
            "report": self.report,
            "pick": self.pick,
        }
        real_estimate = stages.STAGE_FUNCTIONS["estimate"]

        def estimate(ctx):
            self.calls.append("estimate")
            return real_estimate(ctx)

        fakes["estimate"] = estimate
        for name, fn in fakes.items():
            monkeypatch.setitem(stages.STAGE_FUNCTIONS, name, fn)

    def check(self, ctx):
        self.calls.append("check")
        digest = stages.hash_dataset(ctx.options.images, exclude=ctx.run_dir)
        ctx.manifest.update("dataset", source=digest.to_dict())
        return {"kind": "image_folder", "images": 4, "images_x_repeats": 4,
                "steps_per_epoch": None, "caption_extension": ".txt"}, "4 images"  # fmt: skip

    def prepare(self, ctx):
        self.calls.append("prepare")
        return {"train_dir": str(ctx.run_dir / "training_data"), "repeats": 10}, "prepared"

    def tag(self, ctx):
        self.calls.append("tag")
        return None

    def config(self, ctx):
        self.calls.append("config")
        ctx.manifest.update(
            "configs",
            training=str(ctx.run_dir / "training_config.toml"),
            dataset=str(ctx.run_dir / "dataset_config.toml"),
            gpu=ctx.options.gpu,
            values={"batch_size": 2, "epochs": ctx.options.epochs or 10, "resolution": 512,
                    "gradient_checkpointing": False, "gradient_accumulation_steps": 1,
                    "optimizer": "AdamW8bit", "unet_only": False, "seed": 42},
        )  # fmt: skip
        return {"gpu": ctx.options.gpu}, "configs"

    def train(self, ctx):
        self.calls.append("train")
        if self.fail_train:
            self.fail_train -= 1
            raise KeyboardInterrupt
        (ctx.run_dir / "output").mkdir(exist_ok=True)
        (ctx.run_dir / "output" / "x.safetensors").write_bytes(b"lora")
        return {"status": "ok", "attempts": 1}, "trained"

    def report(self, ctx):
        self.calls.append("report")
        (ctx.run_dir / "summary.json").write_text("{}")
        return {"summary.json": str(ctx.run_dir / "summary.json")}, "report"

    def pick(self, ctx):
        self.calls.append("pick")
        lora = ctx.run_dir / "output" / "x.safetensors"
        return {"lora": str(lora), "epoch": 2, "reason": "lowest loss"}, "x"


def options(images, tmp_path, **kw):
    base = {"images": images, "name": "x", "trigger": "sks", "gpu": "rtx4090",
            "run_dir": tmp_path / "run"}  # fmt: skip
    base.update(kw)
    return RunOptions(**base)


def test_full_run_records_every_stage(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    result = run_pipeline(options(images, tmp_path))
    assert fake.calls == list(STAGES)
    m = Manifest.load(tmp_path / "run")
    assert [m.status(s) for s in STAGES] == [DONE, DONE, SKIPPED, DONE, DONE, DONE, DONE, DONE]
    assert m.stage("tag")["note"] == "every image has a caption"
    assert m.data["estimate"]["steps"] == 4 * 10 * 10 // 2
    assert result.lora == tmp_path / "run" / "output" / "x.safetensors"
    assert result.resumed_from is None and not result.already_finished
    assert [stage for stage, _ in result.seconds] == list(STAGES)
    assert all(seconds >= 0 for _, seconds in result.seconds)


def test_finished_run_is_not_trained_twice(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    run_pipeline(options(images, tmp_path))
    fake.calls.clear()
    result = run_pipeline(options(images, tmp_path))
    assert fake.calls == []
    assert result.already_finished and result.lora is not None


def test_interrupted_training_resumes_at_train(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch, fail_train=1)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(options(images, tmp_path))
    m = Manifest.load(tmp_path / "run")
    assert m.status("train") == FAILED and m.stage("train")["error"] == "interrupted"
    config_finished = m.stage("config")["finished"]
    fake.calls.clear()
    result = run_pipeline(options(images, tmp_path))
    assert fake.calls == ["train", "report", "pick"]
    assert result.resumed_from == "train"
    m = Manifest.load(tmp_path / "run")
    assert m.stage("config")["finished"] == config_finished
    assert m.stage("train")["attempts"] == 2


def test_killed_process_leaves_stage_running_and_resumes(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    run_pipeline(options(images, tmp_path), stop_after="estimate")
    m = Manifest.load(tmp_path / "run")
    m.start("train")  # as if the process was killed -9 during training
    assert Manifest.load(tmp_path / "run").status("train") == RUNNING
    fake.calls.clear()
    run_pipeline(options(images, tmp_path))
    assert fake.calls == ["train", "report", "pick"]


def test_preparing_a_prepared_run_again_does_not_train(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    run_pipeline(options(images, tmp_path), stop_after="estimate")
    fake.calls.clear()
    run_pipeline(options(images, tmp_path), stop_after="estimate")
    assert fake.calls == []
    assert Manifest.load(tmp_path / "run").status("train") == PENDING


def test_budget_below_estimate_stops_before_training(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    with pytest.raises(BudgetExceeded) as info:
        run_pipeline(options(images, tmp_path, budget=0.001))
    assert "train" not in fake.calls
    assert "budget" in str(info.value)
    m = Manifest.load(tmp_path / "run")
    assert m.status("estimate") == FAILED and m.status("train") == PENDING
    # a higher budget continues from the estimate, without redoing the earlier stages
    fake.calls.clear()
    run_pipeline(options(images, tmp_path, budget=100.0))
    assert fake.calls == ["estimate", "train", "report", "pick"]


def test_budget_cli_exit_code_is_1(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    result = CliRunner().invoke(
        main,
        ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
         "--run-dir", str(tmp_path / "run"), "--budget", "0.01", "--yes"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "budget" in result.output and "nothing was trained" in result.output
    assert "train" not in fake.calls


def test_changed_images_are_detected_and_explained(monkeypatch, images, tmp_path):
    FakeStages(monkeypatch, fail_train=1)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(options(images, tmp_path))
    make_image(images / "new.png")
    (images / "0.txt").write_text("sks, changed\n")
    with pytest.raises(RunStateError) as info:
        run_pipeline(options(images, tmp_path))
    text = str(info.value)
    assert "1 added (new.png)" in text and "1 changed (0.txt)" in text and "--restart" in text


def test_restart_moves_the_old_run_aside(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    run_pipeline(options(images, tmp_path))
    make_image(images / "new.png")
    fake.calls.clear()
    run_pipeline(options(images, tmp_path, restart=True))
    assert fake.calls == list(STAGES)
    previous = list((tmp_path / "run" / "previous").iterdir())
    assert len(previous) == 1 and (previous[0] / "kohyagen.json").is_file()
    assert (previous[0] / "output" / "x.safetensors").read_bytes() == b"lora"


def test_other_inputs_in_same_run_dir_are_refused(monkeypatch, images, tmp_path):
    FakeStages(monkeypatch)
    run_pipeline(options(images, tmp_path), stop_after="check")
    with pytest.raises(RunStateError) as info:
        run_pipeline(options(images, tmp_path, model="sdxl"))
    assert "model" in str(info.value)


def test_foreign_folder_is_not_touched(images, tmp_path):
    foreign = tmp_path / "run"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(RunStateError):
        run_pipeline(options(images, tmp_path))
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_training_failure_is_recorded_and_exit_3(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)

    def failing(ctx):
        raise TrainingFailed("CUDA out of memory", path=ctx.run_dir / "train.log")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "train", failing)
    result = CliRunner().invoke(
        main,
        ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
         "--run-dir", str(tmp_path / "run"), "--yes"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    m = Manifest.load(tmp_path / "run")
    assert m.status("train") == FAILED and "out of memory" in m.stage("train")["error"]
    assert "report" not in fake.calls


def test_not_confirmed_stops_before_training(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    seen = []
    with pytest.raises(Exception, match="not confirmed"):
        run_pipeline(options(images, tmp_path), confirm=lambda est: seen.append(est) or False)
    assert seen and seen[0].steps > 0 and "train" not in fake.calls


def test_cli_prints_where_the_lora_is_and_how_to_use_it(monkeypatch, images, tmp_path):
    FakeStages(monkeypatch)
    args = ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
            "--run-dir", str(tmp_path / "run"), "--yes"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "x.safetensors" in out and "models/Lora" in out and "models/loras" in out
    assert "<lora:x:0.8>" in out and "sks" in out
    data = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert data["already_finished"] and data["lora"].endswith("x.safetensors")


def test_gpu_configs_are_not_trained_on_a_cpu(monkeypatch, images, tmp_path):
    from kohyagen.run import stages_training

    fake = FakeStages(monkeypatch)
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "train", stages_training.stage_train)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    monkeypatch.setattr("kohyagen.estimate.hardware._from_torch", lambda: ((), "torch sees no CUDA device"))
    with pytest.raises(KohyagenError) as info:
        run_pipeline(options(images, tmp_path))
    assert "configs are for rtx4090" in str(info.value) and "--gpu cpu" in str(info.value)
    assert fake.calls[-1] == "estimate"
    m = Manifest.load(tmp_path / "run")
    assert m.status("train") == FAILED and not (tmp_path / "run" / "train.log").exists()


def test_run_folder_inside_the_images_folder_is_not_a_dataset_change(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch, fail_train=1)
    inside = {"run_dir": images / "runs" / "x"}
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(options(images, tmp_path, **inside))
    (images / "runs" / "x" / "preview.png").write_bytes(b"not in the dataset")
    fake.calls.clear()
    run_pipeline(options(images, tmp_path, **inside))
    assert fake.calls == ["train", "report", "pick"]


def test_auto_without_a_gpu_stops_before_training_unless_cpu_is_asked(
    monkeypatch, images, tmp_path
):
    from kohyagen.run import stages_training

    fake = FakeStages(monkeypatch)
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "train", stages_training.stage_train)

    def config_for_cpu(ctx):
        fake.config(ctx)
        ctx.manifest.update("configs", gpu="cpu")
        return {"gpu": "cpu"}, "configs"

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "config", config_for_cpu)
    with pytest.raises(KohyagenError) as info:
        run_pipeline(options(images, tmp_path, gpu="auto"))
    assert "no NVIDIA GPU" in str(info.value) and "--gpu cpu" in str(info.value)
    assert Manifest.load(tmp_path / "run").status("train") == FAILED
    # --gpu cpu says "train here anyway": the train stage goes on to the launcher
    launched = []

    def fake_train(*args, **kwargs):
        launched.append(kwargs)
        return types.SimpleNamespace(status="succeeded", attempts=[1], command=["x"])

    def no_checkout(flag=None):
        raise SdScriptsNotFound("no sd-scripts")

    fake_launch = types.SimpleNamespace(train=fake_train)
    monkeypatch.setitem(sys.modules, "kohyagen.launch.train", fake_launch)
    monkeypatch.setattr("kohyagen.launch.checkout.find_sd_scripts", no_checkout)
    run_pipeline(options(images, tmp_path, gpu="cpu"))
    assert launched and launched[0]["backend"] == "auto"


def test_prepare_only_stops_before_training_and_says_how_to_train(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    args = ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
            "--run-dir", str(tmp_path / "run"), "--prepare-only"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert fake.calls == ["check", "prepare", "tag", "config", "estimate"]
    assert "kohyagen queue" in result.output
    assert Manifest.load(tmp_path / "run").status("train") == PENDING
    fake.calls.clear()
    result = CliRunner().invoke(main, [*args[:-1], "--yes"])
    assert result.exit_code == 0, result.output
    assert fake.calls == ["train", "report", "pick"]


def test_interactive_run_asks_before_training(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)
    args = ["run", str(images), "--name", "x", "--trigger", "sks", "--gpu", "rtx4090",
            "--run-dir", str(tmp_path / "run")]  # fmt: skip
    monkeypatch.setattr("kohyagen.cli.run_cmd._stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(main, args, input="n\n")
    assert result.exit_code == 1, result.output
    assert "start training?" in result.output and "steps:" in result.output
    assert "not confirmed" in result.output and "train" not in fake.calls
    result = CliRunner().invoke(main, args, input="y\n")
    assert result.exit_code == 0, result.output
    assert fake.calls[-3:] == ["train", "report", "pick"]


def test_edited_prepared_captions_are_noted_not_refused(monkeypatch, images, tmp_path):
    fake = FakeStages(monkeypatch)

    def prepare(ctx):
        fake.calls.append("prepare")
        subset = ctx.run_dir / "training_data" / "10_x"
        subset.mkdir(parents=True)
        (subset / "0.png").write_bytes((images / "0.png").read_bytes())
        (subset / "0.txt").write_text("sks, picture\n")
        digest = stages.hash_dataset(subset.parent)
        ctx.manifest.update("dataset", training_data=digest.to_dict())
        return {"train_dir": str(subset.parent), "repeats": 10}, "prepared"

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "prepare", prepare)
    run_pipeline(options(images, tmp_path), stop_after="estimate")
    (tmp_path / "run" / "training_data" / "10_x" / "0.txt").write_text("sks, my own words\n")
    said = []
    result = run_pipeline(options(images, tmp_path), progress=lambda s, m: said.append(m))
    assert result.resumed_from == "train" and result.lora is not None
    assert any("1 changed (10_x/0.txt)" in n for n in result.notes)
    assert any("training uses it as it is now" in m for m in said)


@pytest.mark.parametrize(
    ("extra", "code", "text"),
    [
        (["--gpu", "rtx9999"], 1, "rtx9999"),
        (["--name", "a/b"], 2, "--name"),
        (["--budget", "-1"], 2, "--budget"),
    ],
)
def test_bad_options_fail_before_any_stage(monkeypatch, images, tmp_path, extra, code, text):
    fake = FakeStages(monkeypatch)
    args = ["run", str(images), "--name", "x", "--trigger", "sks",
            "--run-dir", str(tmp_path / "run"), "--yes", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert text in result.output and "Traceback" not in result.output
    assert fake.calls == [] and not (tmp_path / "run").exists()


def test_missing_images_folder_names_it(tmp_path):
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "nope"), "--name", "x", "--trigger", "sks", "--yes"]
    )
    assert result.exit_code == 1 and str(tmp_path / "nope") in result.output
