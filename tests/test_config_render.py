import json
import os
import sys
from pathlib import Path

import pytest

from kohyagen.config import presets, schema
from kohyagen.config.lint import lint_files
from kohyagen.config.render import render_configs, write_configs
from kohyagen.errors import ConfigError, DatasetError, LintFailed, ModelNotFound, PresetError
from tests.conftest import make_image

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GOLDEN = Path(__file__).parent / "golden"


# 64 px: the smallest side kohya can bucket at 512 with bucket_no_upscale (smaller sides round
# down to a 0-pixel bucket and stop kohya with a ZeroDivisionError).
def make_train_dir(root: Path, folders=(("10_sks", 24),), ext=".txt") -> Path:
    data = root / "training_data"
    for folder, n in folders:
        for i in range(n):
            make_image(data / folder / f"img{i:02d}.png", size=(64, 64))
            if ext:
                tags = "sks, 1girl, smile" if i % 3 else "sks, 1girl, outdoors, red hair"
                (data / folder / f"img{i:02d}{ext}").write_text(tags + "\n")
    return data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_train_dir(tmp_path_factory.mktemp("ds"))


def _flat(rendered):
    data = tomllib.loads(rendered.training_text)
    flat, _ = schema.flatten_training_config(data)
    return flat


def _pairs():
    for model in presets.list_models():
        if model.is_dit:  # tests/test_families.py renders those (they need model files)
            continue
        for gpu in presets.list_gpus():
            yield model.name, gpu.name


@pytest.mark.parametrize(("model", "gpu"), list(_pairs()))
def test_every_preset_renders_valid_kohya_configs(dataset, tmp_path, model, gpu):
    try:
        rendered = render_configs(dataset, model=model, gpu=gpu, out_dir=tmp_path / "cfg")
    except PresetError:
        assert (model, gpu) == ("sdxl", "8gb")
        return
    preset = presets.get_model(model)
    first = rendered.training_text.splitlines()[0]
    assert first == f"# kohyagen-script: {preset.script}"
    flat = _flat(rendered)
    assert flat == rendered.training
    script = preset.script_name
    assert schema.script_for_config(rendered.training_text, flat) == script
    assert list(schema.validator_for(script).iter_errors(flat)) == []
    ds = tomllib.loads(rendered.dataset_text)
    assert list(schema.validator_for("dataset_config").iter_errors(ds)) == []
    assert isinstance(flat["resolution"], str) and isinstance(ds["general"]["resolution"], int)
    assert flat["network_module"] == "networks.lora"
    for key in ("output_dir", "logging_dir", "dataset_config"):
        assert Path(flat[key]).is_absolute()
    for subset in ds["datasets"][0]["subsets"]:
        assert Path(subset["image_dir"]).is_absolute()
    assert flat["output_dir"] == str(tmp_path / "cfg" / "output")
    assert flat["logging_dir"] == str(tmp_path / "cfg" / "logs")
    assert flat["save_every_n_epochs"] >= 1
    g = ds["general"]
    assert g["min_bucket_reso"] <= preset.resolution <= g["max_bucket_reso"]
    assert g["min_bucket_reso"] % 64 == 0 and g["max_bucket_reso"] % 64 == 0
    errors = [f for f in rendered.findings if f.severity.value == "error"]
    assert errors == []


@pytest.mark.parametrize(("model", "gpu"), [("sd15", "rtx4090"), ("sd2", "t4"), ("sdxl", "l4")])
def test_keys_exist_in_kohyas_own_argument_table(dataset, tmp_path, shared_dir, model, gpu):
    """Against facts/kohya/*.args.json directly, not only our schema made from it."""
    rendered = render_configs(dataset, model=model, gpu=gpu, out_dir=tmp_path)
    script = presets.get_model(model).script_name
    args = json.loads((shared_dir / "kohya" / f"{script}.args.json").read_text())["arguments"]
    table = {a["dest"]: a for a in args}
    for key, value in rendered.training.items():
        assert key in table, key
        arg = table[key]
        if arg["action"] == "store_true":
            assert value is True or value is False, key
        elif arg["nargs"] in ("*", "+"):
            assert isinstance(value, (list, float)), key
        elif arg["type"] == "int":
            assert isinstance(value, int) and not isinstance(value, bool), key
        elif arg["type"] == "float":
            assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        elif arg["type"] in ("str", None, "Path"):
            assert isinstance(value, str), key
        if arg.get("choices"):
            assert value in arg["choices"], key
    facts = json.loads((shared_dir / "kohya" / "dataset_config.schema-facts.json").read_text())
    general_keys = set(facts["levels_for_train_network"]["general"])
    ds = tomllib.loads(rendered.dataset_text)
    assert set(ds["general"]) <= general_keys


def _normalise(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "<TMP>")


@pytest.mark.parametrize(
    ("model", "gpu", "extra"),
    [
        ("sd15", "rtx4090", {"trigger": "sks", "samples": True}),
        ("sd2", "t4", {}),
        ("sdxl", "12gb", {"name": "my_style", "overrides": ["network_dim=16"]}),
    ],
)
def test_golden_renders(tmp_path, model, gpu, extra):
    data = make_train_dir(tmp_path, folders=(("10_sks", 24), ("3_sks woman", 5)))
    rendered = render_configs(data, model=model, gpu=gpu, out_dir=tmp_path / "out", **extra)
    name = f"{model}_{gpu}"
    texts = {
        f"{name}.training_config.toml": rendered.training_text,
        f"{name}.dataset_config.toml": rendered.dataset_text,
    }
    if rendered.sample_prompts_text:
        texts[f"{name}.sample_prompts.txt"] = rendered.sample_prompts_text
    for file, text in texts.items():
        path = GOLDEN / file
        text = _normalise(text, tmp_path)
        if os.environ.get("KOHYAGEN_UPDATE_GOLDEN"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.read_text() == text, f"{file} changed; KOHYAGEN_UPDATE_GOLDEN=1 to accept"


def test_repeats_class_tokens_and_captions(tmp_path):
    data = make_train_dir(tmp_path, folders=(("10_sks", 4), ("3_sks woman", 2)), ext=".caption")
    rendered = render_configs(data, model="sd15", gpu="24gb", out_dir=tmp_path / "o")
    ds = rendered.dataset
    subsets = {Path(s["image_dir"]).name: s for s in ds["datasets"][0]["subsets"]}
    assert subsets["10_sks"]["num_repeats"] == 10 and subsets["10_sks"]["class_tokens"] == "sks"
    assert subsets["3_sks woman"]["num_repeats"] == 3
    assert subsets["3_sks woman"]["class_tokens"] == "sks woman"
    assert ds["general"]["caption_extension"] == ".caption"
    assert "validation_split" not in ds["general"]  # 6 images: too few
    assert any("no validation split" in n for n in rendered.notes)
    uncaptioned = make_train_dir(tmp_path / "u", ext=None)
    r2 = render_configs(uncaptioned, model="sd15", gpu="24gb", out_dir=tmp_path / "o2")
    assert r2.dataset["general"]["caption_extension"] == ".txt"
    assert any("class tokens" in n for n in r2.notes)


def test_validation_split_and_step_budget(dataset, tmp_path):
    rendered = render_configs(dataset, model="sd15", gpu="rtx3090", out_dir=tmp_path)
    g = rendered.dataset["general"]
    assert g["validation_split"] == 0.1 and g["validation_seed"] == 42
    plan = rendered.plan
    model = presets.get_model("sd15")
    views = plan["epochs"] * plan["images_x_repeats"]
    assert model.min_samples <= views <= model.max_samples
    # 24 images, 10% held out per subset -> ceil(24 * 0.9) = 22 train images, x10 repeats
    assert plan["images_x_repeats"] == 220
    assert plan["total_steps"] == plan["epochs"] * -(-220 // plan["batch_size"])
    # Bigger batch, fewer steps, same image views.
    small = render_configs(dataset, model="sd15", gpu="8gb", out_dir=tmp_path / "s").plan
    assert small["batch_size"] < plan["batch_size"] or small["total_steps"] >= plan["total_steps"]
    fixed = render_configs(dataset, model="sd15", gpu="rtx3090", out_dir=tmp_path, epochs=3)
    assert fixed.training["max_train_epochs"] == 3


def test_samples(dataset, tmp_path):
    rendered = render_configs(
        dataset, model="sd15", gpu="l4", out_dir=tmp_path, trigger="sks", samples=True
    )
    text = rendered.sample_prompts_text
    prompts = [line for line in text.splitlines() if line and not line.startswith("#")]
    bodies = [p.split(" --")[0] for p in prompts]
    assert bodies[0] == "sks"  # the trigger alone
    assert bodies[1].startswith("sks, 1girl, smile")  # most frequent tags first
    assert "forest" in bodies[2] and "watercolor" in bodies[3]  # somewhere new
    assert "sks" not in bodies[4] and bodies[4].startswith("1girl")  # bleed check
    seeds = [p.rsplit("--d ", 1)[1] for p in prompts]
    assert len(set(seeds)) == len(prompts)  # a fixed seed per prompt
    assert all("--s 28" in p for p in prompts)
    assert rendered.training["sample_sampler"] == "euler_a"
    assert all("--w 512 --h 512" in p and "--n " in p for p in prompts)
    assert rendered.training["sample_prompts"] == str(tmp_path / "sample_prompts.txt")
    assert rendered.training["sample_every_n_epochs"] == rendered.training["save_every_n_epochs"]
    assert "sample_prompts" not in render_configs(dataset, model="sd15", gpu="l4",
                                                  out_dir=tmp_path, samples=False).training  # fmt: skip


def test_samples_by_default_follow_overridden_interval_and_size(dataset, tmp_path):
    rendered = render_configs(dataset, model="sdxl", gpu="l4", out_dir=tmp_path, trigger="sks",
                              overrides=("save_every_n_epochs=3", "resolution=768"))  # fmt: skip
    assert rendered.training["sample_every_n_epochs"] == 3
    assert "--w 768 --h 768" in rendered.sample_prompts_text
    assert "--s 30" in rendered.sample_prompts_text  # SDXL's steps


def test_set_overrides_typed_by_schema(dataset, tmp_path):
    rendered = render_configs(
        dataset,
        model="sd15",
        gpu="rtx4090",
        out_dir=tmp_path,
        overrides=[
            "network_dim=16",
            "resolution=640",
            "learning_rate=2e-4",
            "optimizer_type=Lion",
            "noise_offset=0.05",
            "validation_split=1",
            "training.flip_aug=true",
            "dataset.keep_tokens=2",
        ],
    )
    t, g = rendered.training, rendered.dataset["general"]
    assert t["network_dim"] == 16
    assert t["resolution"] == "640" and g["resolution"] == 640  # string there, int here
    assert t["learning_rate"] == 2e-4 and t["optimizer_type"] == "Lion"
    assert t["noise_offset"] == 0.05  # new key -> [overrides] table
    assert g["validation_split"] == 1.0 and isinstance(g["validation_split"], float)
    assert t["flip_aug"] is True and "flip_aug" not in g
    assert g["keep_tokens"] == 2
    # comments survive tomlkit, and each override says where it came from
    assert "# LoRA rank" in rendered.training_text
    assert "network_dim = 16 # set with --set network_dim=16" in rendered.training_text
    assert "[overrides]" in rendered.training_text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=4", "did you mean train_batch_size"),
        ("epochs=4", "did you mean max_train_epochs"),
        ("netwrk_dim=4", "did you mean network_dim"),
        ("network_dim=4.5", "network_dim=4.5"),
        ("mixed_precision=fp99", "valid values: no, fp16, bf16"),
        ("gradient_checkpointing=maybe", "gradient_checkpointing=maybe"),
        ("novalue", "expected key=value"),
        ("dataset.learning_rate=1", "not a kohya option of the dataset config"),
    ],
)
def test_set_errors(dataset, tmp_path, override, message):
    with pytest.raises(ConfigError) as exc:
        render_configs(dataset, model="sd15", gpu="l4", out_dir=tmp_path, overrides=[override])
    assert message in str(exc.value)


def test_set_that_breaks_kohya_assertions_is_refused(dataset, tmp_path):
    with pytest.raises(LintFailed, match="min_bucket_reso") as exc:
        render_configs(
            dataset, model="sd15", gpu="l4", out_dir=tmp_path, overrides=["min_bucket_reso=768"]
        )
    assert exc.value.findings
    with pytest.raises(LintFailed, match="cache"):
        render_configs(
            dataset, model="sdxl", gpu="l4", out_dir=tmp_path,
            overrides=["network_train_unet_only=false"],
        )  # fmt: skip


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        render_configs(tmp_path / "nope", model="sd15", gpu="l4", out_dir=tmp_path)
    plain = tmp_path / "plain"
    make_image(plain / "a.png")
    with pytest.raises(DatasetError, match="plain folder of images") as exc:
        render_configs(plain, model="sd15", gpu="l4", out_dir=tmp_path)
    assert "kohyagen dataset prepare" in exc.value.hint
    sub = tmp_path / "data" / "5_x"
    make_image(sub / "a.png")
    with pytest.raises(DatasetError, match="subset folder"):
        render_configs(sub, model="sd15", gpu="l4", out_dir=tmp_path)
    (tmp_path / "empty" / "5_x").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        render_configs(tmp_path / "empty", model="sd15", gpu="l4", out_dir=tmp_path)


def test_base_model(dataset, tmp_path):
    model_file = tmp_path / "m.safetensors"
    model_file.write_bytes(b"x")
    r = render_configs(
        dataset, model="sd15", gpu="l4", out_dir=tmp_path, base_model="m.safetensors",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.training["pretrained_model_name_or_path"] == str(model_file)
    r = render_configs(dataset, model="sd15", gpu="l4", out_dir=tmp_path, base_model="me/my-sd")
    assert r.training["pretrained_model_name_or_path"] == "me/my-sd"
    with pytest.raises(ModelNotFound):
        render_configs(
            dataset, model="sd15", gpu="l4", out_dir=tmp_path, base_model="./gone.safetensors"
        )


def test_write_configs_atomic_and_no_overwrite(dataset, tmp_path):
    out = tmp_path / "cfg"
    rendered = render_configs(dataset, model="sd15", gpu="l4", out_dir=out, samples=True)
    written = write_configs(rendered)
    assert [p.name for p in written] == [
        "training_config.toml",
        "dataset_config.toml",
        "sample_prompts.txt",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    before = (out / "training_config.toml").read_text()
    (out / "training_config.toml").write_text("# mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        write_configs(rendered)
    assert (out / "training_config.toml").read_text() == "# mine\n"
    write_configs(rendered, force=True)
    assert (out / "training_config.toml").read_text() == before
    # What was written lints clean (errors) from any folder: every path is absolute.
    findings = lint_files([out / "training_config.toml"], cwd=tmp_path / "elsewhere")
    assert [f for f in findings if f.severity.value == "error"] == []
    assert not [f for f in findings if f.code == "relative-path"]


def _simple_keys(script: str, kind: str) -> list[str]:
    props = schema.training_properties(script)
    skip = {"dataset_config", "resolution", "config_file", "output_config"}
    return sorted(k for k, p in props.items() if p.get("type") == kind and "enum" not in p
                  and k not in skip)  # fmt: skip


def test_set_typing_property(dataset, tmp_path):
    """Any integer/boolean/number option set with --set lands with kohya's TOML type."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from kohyagen.config.overrides import parse_override
    from kohyagen.config.ranges import check_option_value
    from kohyagen.errors import UsageError

    ints = _simple_keys("train_network", "integer")
    bools = _simple_keys("train_network", "boolean")
    nums = _simple_keys("train_network", "number")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        key_kind=st.sampled_from(
            [(k, "int") for k in ints] + [(k, "bool") for k in bools] + [(k, "num") for k in nums]
        ),
        n=st.integers(min_value=0, max_value=10_000),
        b=st.booleans(),
    )
    def check(key_kind, n, b):
        key, kind = key_kind
        raw = {"int": str(n), "bool": str(b).lower(), "num": str(n)}[kind]
        if kind != "bool" and check_option_value(key, n) is not None:
            # out of kohyagen.config.ranges' range (batch 0, ...): refused at the edge
            with pytest.raises(UsageError, match=key):
                parse_override(f"training.{key}={raw}", "train_network")
            return
        (ov,) = [o for o in parse_override(f"training.{key}={raw}", "train_network")]
        if kind == "int":
            assert ov.value == n and type(ov.value) is int
        elif kind == "bool":
            assert ov.value is b
        else:
            assert ov.value == n and isinstance(ov.value, (int, float))
        if kind != "bool":
            with pytest.raises(ConfigError):
                parse_override(f"training.{key}=lots", "train_network")
        if kind == "int":
            with pytest.raises(ConfigError):
                parse_override(f"training.{key}={n}.5", "train_network")

    check()
