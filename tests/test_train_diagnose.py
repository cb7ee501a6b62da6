"""Failure signatures from kohya's real messages (facts/kohya/kohya-interface.md §i)."""

from __future__ import annotations

import pytest

from kohyagen.launch.diagnose import diagnose_run, find_signature, last_error_line

CASES = [
    (
        'Traceback (most recent call last):\n  File "train_network.py", line 1460\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
        "total capacity of 23.55 GiB",
        "out-of-memory",
    ),
    (
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "out-of-memory",
    ),
    (
        "2026-11-29 11:04:10 ERROR    No data found. Please verify arguments    train_network.py:577\n"
        "                             (train_data_dir must be the parent of folders with images)",
        "no-data",
    ),
    (
        "import network module: None\nAttributeError: 'NoneType' object has no attribute 'startswith'",
        "no-network-module",
    ),
    ("ModuleNotFoundError: No module named 'networks.loraa'", "network-module-missing"),
    ("ModuleNotFoundError: No module named 'bitsandbytes'", "missing-package"),
    (
        "ERROR    model is not found as a file or in Hugging Face, perhaps file name is wrong?\n"
        "OSError: Error no file named model_index.json",
        "model-not-found",
    ),
    (
        '  File ".../transformers/models/clip/tokenization_clip.py", line 316, in __init__\n'
        "    with open(vocab_file, encoding='utf-8') as vocab_handle:\n"
        "TypeError: expected str, bytes or os.PathLike object, not NoneType",
        "tokenizer-offline",
    ),
    (
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='huggingface.co', port=443): "
        "Max retries exceeded with url: /openai/clip-vit-large-patch14/resolve/main/vocab.json",
        "tokenizer-offline",
    ),
    (
        "RuntimeError: Error(s) in loading state_dict for UNet2DConditionModel:\n"
        '\tMissing key(s) in state_dict: "down_blocks.0.attentions.1.norm.weight"',
        "wrong-architecture",
    ),
    ("INFO     /x/cfg.toml not found.", "config-not-found"),
    (
        "ERROR    Invalid user config / ユーザ設定の形式が正しくないようです\n"
        "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['validation_split']",
        "dataset-config-invalid",
    ),
    (
        "AssertionError: resolution is required / resolution（解像度）指定は必須です",
        "resolution-missing",
    ),
    ("AttributeError: 'int' object has no attribute 'split'", "resolution-type"),
    ("AssertionError: image too large, but cropping and bucketing are disabled", "image-too-large"),
    ("AssertionError: min_bucket_reso must be equal or less than resolution", "min-bucket-reso"),
    ("AssertionError: bucket_reso_steps is 48. it must be divisible by 64.", "bucket-steps"),
    ("AssertionError: full_fp16 requires mixed precision='fp16'", "full-fp16"),
    ("AssertionError: fp8_base requires mixed precision='fp16' or 'bf16'", "fp8-base"),
    ("ValueError: fp16 mixed precision requires a GPU (not 'cpu').", "fp16-on-cpu"),
    (
        "AssertionError: network for Text Encoder cannot be trained with caching Text Encoder outputs",
        "sdxl-te-cache",
    ),
    (
        "AssertionError: when caching latents, either color_aug or random_crop cannot be used",
        "cache-latents-augmentation",
    ),
    ("ValueError: adaptive_noise_scale requires noise_offset", "adaptive-noise"),
    ("RuntimeError: NaN detected in latents: /data/img/1.png", "nan-latents"),
    ("OSError: [Errno 28] No space left on device", "disk-full"),
]


@pytest.mark.parametrize(("text", "code"), CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_signatures(text, code):
    found = find_signature(text)
    assert found is not None and found.code == code
    assert found.cause and found.fix and found.evidence
    assert found.retryable == (code == "out-of-memory")


def test_rich_wrapped_no_data_line_is_found():
    # at 80 columns rich splits the message over lines with the file column in between
    text = (
        "2026-11-29 11:04:10 ERROR    No data found. Please        train_network.py:577\n"
        "                             verify arguments\n"
    )
    assert find_signature(text).code == "no-data"


def test_no_data_with_exit_zero_is_a_failure():
    text = "ERROR    No data found. Please verify arguments"
    assert diagnose_run(text, 0, model_saved=False).code == "no-data"


def test_clean_run_is_not_a_failure(shared_dir):
    text = (
        (shared_dir / "kohya" / "samples" / "run_B" / "combined.log").read_bytes().decode("utf-8")
    )
    assert find_signature(text) is None
    assert diagnose_run(text, 0, model_saved=True) is None


def test_fallbacks():
    generic = diagnose_run("boom\nValueError: something odd\n", 1)
    assert generic.code == "trainer-error" and generic.evidence == "ValueError: something odd"
    assert diagnose_run("", -9).code == "killed"
    assert diagnose_run("all fine but nothing saved", 0, model_saved=False).code == "no-model"
    assert diagnose_run("x", None, interrupted=True).code == "interrupted"
    assert diagnose_run("x", 0, nan_at_step=7).code == "nan-loss"
    assert "7" in diagnose_run("x", 0, nan_at_step=7).cause
    assert last_error_line("nothing here") is None


def test_module_names_are_named_in_the_cause():
    text = "ModuleNotFoundError: No module named 'bitsandbytes'"
    assert "bitsandbytes" in find_signature(text).cause


def test_warnings_in_a_finished_run_are_not_failures():
    text = "WARNING: triton not found: No module named 'triton'\nmodel saved.\n"
    assert diagnose_run(text, 0, model_saved=True) is None
    # nor do they mask the real error of a failed run
    crash = text + "Traceback (most recent call last):\nRuntimeError: cuDNN error\n"
    assert diagnose_run(crash, 1).code == "trainer-error"
    assert diagnose_run(crash, 1).evidence == "RuntimeError: cuDNN error"


def test_missing_accelerate_module():
    text = (
        "/usr/bin/python3: Error while finding module specification for "
        "'accelerate.commands.launch' (ModuleNotFoundError: No module named 'accelerate')"
    )
    found = diagnose_run(text, 1)
    assert found.code == "missing-package" and "accelerate" in found.cause


def test_the_trainers_error_wins_over_accelerates_wrapper():
    text = (
        "Traceback (most recent call last):\n"
        "AttributeError: 'types.SimpleNamespace' object has no attribute 'x'\n"
        "Traceback (most recent call last):\n"
        "subprocess.CalledProcessError: Command '['python', 'train_network.py']' returned "
        "non-zero exit status 1.\n"
    )
    assert diagnose_run(text, 1).evidence == (
        "AttributeError: 'types.SimpleNamespace' object has no attribute 'x'"
    )
