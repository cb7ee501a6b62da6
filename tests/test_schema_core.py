import json

import pytest

from kohyagen.config import schema
from kohyagen.errors import ConfigError


def _errors(name, instance):
    return sorted(e.message for e in schema.validator_for(name).iter_errors(instance))


def test_every_kohya_argument_is_a_property(shared_dir):
    for script in schema.SCRIPTS:
        args = json.loads((shared_dir / "kohya" / f"{script}.args.json").read_text())["arguments"]
        props = schema.training_properties(script)
        assert {a["dest"] for a in args} == set(props)


def test_training_types_follow_kohya():
    assert _errors("train_network", {"resolution": "512,512", "train_batch_size": 2}) == []
    assert _errors("train_network", {"resolution": 512})  # kohya needs a string
    assert _errors("train_network", {"batch_size": 2})  # unknown key
    assert _errors("train_network", {"max_train_epochs": 10.0})  # TOML float for an int
    assert _errors("train_network", {"mixed_precision": "fp99"})
    assert _errors("train_network", {"gradient_checkpointing": "true"})
    assert _errors("train_network", {"network_args": ["conv_dim=4"], "text_encoder_lr": 5e-5}) == []
    assert _errors("train_network", {"lr_warmup_steps": "10%"}) == []
    assert _errors("sdxl_train_network", {"cache_text_encoder_outputs": True}) == []
    assert _errors("train_network", {"cache_text_encoder_outputs": True})


def test_dataset_types_follow_voluptuous():
    ok = {
        "general": {"resolution": 512, "validation_split": 0.1},
        "datasets": [{"subsets": [{"image_dir": "/x", "num_repeats": 3}]}],
    }
    assert _errors("dataset_config", ok) == []
    assert _errors("dataset_config", {"general": {"validation_split": 1}})
    assert _errors("dataset_config", {"general": {"resolution": "512,512"}})
    assert _errors("dataset_config", {"general": {"train_batch_size": 2}})


def test_defaults_and_script_detection():
    defaults = schema.training_defaults("train_network")
    assert defaults["mixed_precision"] == "no"
    assert defaults["caption_extension"] == ".caption"
    text = "# kohyagen-script: sdxl_train_network.py\n"
    assert schema.script_for_config(text, {}) == "sdxl_train_network"
    assert (
        schema.script_for_config("", {"cache_text_encoder_outputs": True}) == "sdxl_train_network"
    )
    model = {"pretrained_model_name_or_path": "/m/sd_xl_base_1.0.safetensors"}
    assert schema.script_for_config("", model) == "sdxl_train_network"
    assert schema.script_for_config("", {"pretrained_model_name_or_path": "/m/v1-5.ckpt"}) == (
        "train_network"
    )


def test_flatten_and_load(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('top = 1\n[model]\na = "x"\n[training]\na = "y"\nb = 2\n')
    flat, origin = schema.flatten_training_config(schema.load_toml(path).data)
    assert flat == {"top": 1, "a": "y", "b": 2}
    assert origin == {"top": None, "a": "training", "b": "training"}
    bad = tmp_path / "bad.toml"
    bad.write_text("a = = 1\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        schema.load_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        schema.load_toml(tmp_path / "missing.toml")
