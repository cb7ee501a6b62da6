"""The live watcher: progress events, cost, and when it asks to stop the trainer."""

from __future__ import annotations

import time

from kohyagen.launch.watch import _Watcher

BAR = "\rsteps:  50%|█████     | 8/16 [00:14<00:14,  1.83s/it, avr_loss={}]"


def watch(price=None):
    seen = []
    return _Watcher(1, time.time() - 3600, price, seen.append), seen


def test_progress_carries_step_loss_speed_eta_and_cost():
    watcher, seen = watch(price=2.0)
    assert watcher("\nepoch 1/2\n" + BAR.format("1.08")) is None
    last = seen[-1]
    assert (last.step, last.total_steps, last.epoch, last.total_epochs) == (8, 16, 1, 2)
    assert (last.loss, last.seconds_per_step, last.eta_s) == (1.08, 1.83, 14.0)
    assert 1.99 < last.cost < 2.1  # an hour at $2/h
    assert any(p.message == "epoch 1/2" for p in seen)


def test_nan_asks_to_stop():
    watcher, seen = watch()
    assert watcher(BAR.format("1.08")) is None
    assert watcher(BAR.format("nan")) == "nan-loss"
    assert watcher.fatal.code == "nan-loss" and "step 8" in watcher.fatal.cause
    assert "NaN" in seen[-1].message


def test_out_of_memory_asks_to_stop_once_even_when_split():
    watcher, _ = watch()
    assert watcher("Traceback...\ntorch.OutOfMem") is None
    assert watcher("oryError: CUDA out of memory. Tried to allocate 2.00 GiB\n") == "out-of-memory"
    assert watcher("more output\n") is None


def test_notable_kohya_warnings_are_shown():
    watcher, seen = watch()
    watcher(
        "2026-11-29 11:06:47 WARNING  ignore directory without repeats / 繰り返し回数のないディレク"
        "トリを無視します: sks    config_util.py:613\n"
    )
    assert seen[-1].message == (
        "kohya: ignore directory without repeats / 繰り返し回数のないディレクトリを無視します: sks"
    )
