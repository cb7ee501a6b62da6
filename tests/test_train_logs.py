"""kohya console output parsing: real samples, odd line sharing, and generated streams."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kohyagen.report.log_summary import parse_log
from kohyagen.report.logs import (
    CheckpointSaved,
    EpochStarted,
    LogParser,
    ModelSaved,
    StepProgress,
    TextLine,
    ValidationProgress,
    parse_events,
    parse_segment,
)

BAR = "steps:  50%|█████     | 8/16 [00:14<00:14,  1.83s/it, avr_loss=1.08]"


def sample(shared_dir, run, name="combined.log"):
    return (shared_dir / "kohya" / "samples" / run / name).read_bytes().decode("utf-8")


def tb_epoch(shared_dir, run, tag):
    data = json.loads(
        (shared_dir / "kohya" / "samples" / run / "tensorboard_scalars.json").read_text()
    )
    return {p["step"]: p["value"] for p in next(iter(data.values()))["scalars"].get(tag, [])}


@pytest.mark.parametrize(("run", "steps", "val"), [("run_A", 16, False), ("run_B", 12, True)])
def test_real_combined_logs(shared_dir, run, steps, val):
    s = parse_log(sample(shared_dir, run))
    assert (s.total_steps, s.step, s.total_epochs, s.epoch) == (steps, steps, 2, 2)
    assert s.epoch_end_step == {1: steps // 2, 2: steps}
    assert s.model_saved and s.nan_at_step is None
    assert [(p.rsplit("/", 1)[1], e, st_) for p, e, st_ in s.checkpoints] == [
        ("harness-000001.safetensors", 1, steps // 2),
        ("harness.safetensors", 2, steps),
    ]
    # avr_loss at an epoch's last step is that epoch's average loss (kohya prints 3 digits)
    for epoch, value in tb_epoch(shared_dir, run, "loss/epoch_average").items():
        assert s.epoch_losses()[epoch] == pytest.approx(value, abs=0.006)
    assert set(s.loss_by_step) == set(range(1, steps + 1))
    assert s.seconds_per_step == pytest.approx(1.81 if run == "run_A" else 1.97)
    if val:
        tb = tb_epoch(shared_dir, run, "loss/validation/epoch_average")
        assert s.val_loss_by_epoch.keys() == tb.keys()
        for epoch, value in tb.items():
            assert s.val_loss_by_epoch[epoch] == pytest.approx(value, abs=0.006)
    else:
        assert s.val_loss_by_epoch == {}


def test_separate_streams_parse_too(shared_dir):
    out = parse_log(sample(shared_dir, "run_A", "stdout.log"))
    assert out.total_steps == 16 and out.total_epochs == 2 and len(out.checkpoints) == 2
    err = parse_log(sample(shared_dir, "run_A", "stderr.log"))
    assert err.step == 16 and err.model_saved and err.epoch_losses() == {1: 1.05}


def test_bar_formats():
    (event,) = parse_segment(BAR)
    assert event == StepProgress(8, 16, 14.0, 14.0, 1.83, 1.08)
    (fast,) = parse_segment("steps:  3%|▎  | 1/36 [1:02:03<?, 4.50it/s, avr_loss=nan]")
    assert fast.elapsed_s == 3723 and fast.remaining_s is None
    assert fast.seconds_per_step == pytest.approx(1 / 4.5) and math.isnan(fast.loss)
    (start,) = parse_segment("steps:   0%|          | 0/12 [00:00<?, ?it/s]")
    assert start.step == 0 and start.seconds_per_step is None and start.loss is None
    (norms,) = parse_segment(
        "steps: 10%|█ | 1/10 [00:01<00:09, 1.00s/it, Average key norm=0.5, Keys Scaled=0, avr_loss=0.1]"
    )
    assert norms.loss == 0.1


def test_bar_and_rich_line_share_a_segment():
    events = parse_segment(
        "steps:   0%|          | 0/12 [00:00<?, ?it/s]                    INFO     epoch is incremented."
    )
    assert isinstance(events[0], StepProgress)
    assert events[1] == TextLine("INFO     epoch is incremented.")
    events = parse_segment(BAR + "epoch 2/3")
    assert events[1] == EpochStarted(2, 3)
    events = parse_segment(BAR + "saving checkpoint: /o/x-000001.safetensors")
    assert events[1] == CheckpointSaved("/o/x-000001.safetensors")


def test_validation_bars_with_cursor_moves():
    (event,) = parse_segment(
        "epoch validation steps: 100%|██████████| 4/4 [00:03<00:00,  1.15it/s, "
        "val_epoch_avg_loss=1.19, timestep=800]\x1b[A2026-11-29 11:07:15 INFO     x"
    )[:1]
    assert event == ValidationProgress("epoch", 4, 4, 1.19)
    (step_val,) = parse_segment(
        "validation steps: 100%|██████████| 4/4 [00:03<00:00,  1.15it/s, val_avg_loss=0.9, timestep=800]"
    )
    assert step_val == ValidationProgress("step", 4, 4, 0.9)


def test_model_saved_and_epoch_lines():
    assert parse_segment("2026-11-29 11:04:24 INFO     model saved.   train_network.py:1729") == [
        ModelSaved()
    ]
    assert parse_segment("epoch 3/10") == [EpochStarted(3, 10)]
    # kohya's log line about epochs is not an epoch header
    assert isinstance(parse_segment("current_epoch: 1, epoch: 2")[0], TextLine)


def test_partial_bar_is_reported_once_before_its_terminator():
    parser = LogParser()
    first = parser.feed("\r" + BAR)
    assert first == [StepProgress(8, 16, 14.0, 14.0, 1.83, 1.08)]
    assert parser.feed("\r") == []  # terminated: not reported twice
    assert parser.feed("steps:  56%|█████▋    | 9/16 [00:16<00:12,  1.81s/it, avr_loss=1.0") == []
    assert not any(isinstance(e, StepProgress) for e in parser.close())  # cut short: no bar


def test_partial_last_line_counts_at_close():
    parser = LogParser()
    assert parser.feed("saving checkpoint: /o/a.safetensors") == []
    assert parser.close() == [CheckpointSaved("/o/a.safetensors")]


def test_nan_is_recorded():
    s = parse_log("\r" + BAR.replace("avr_loss=1.08", "avr_loss=nan") + "\n")
    assert s.nan_at_step == 8


def _normal(events):
    """Events with consecutive duplicate bar draws collapsed (a stream split inside a
    segment may report a bar early, before the rest of its line arrives)."""
    out = []
    for event in events:
        if (
            out
            and repr(event) == repr(out[-1])
            and isinstance(event, (StepProgress, ValidationProgress))
        ):
            continue
        out.append(event)
    return out


STREAM_PIECES = [
    "\r" + BAR,
    "\rsteps:  50%|█████     | 8/16 [00:14<00:14,  1.83s/it, avr_loss=nan]",
    "\rsteps:   6%|▋         | 1/16 [00:02<00:38,  2.59s/it]",
    "\n",
    "\nepoch 1/2\n\n",
    "\nsaving checkpoint: /o/x-000001.safetensors\n",
    "                    INFO     epoch is incremented.             train_util.py:784\n",
    "\repoch validation steps:  25%|██▌       | 1/4 [00:00<00:02,  1.17it/s, val_epoch_avg_loss=1.21, timestep=200]\x1b[A\n",
    "2026-11-29 11:07:29 INFO     model saved.                  train_network.py:1729\n",
    "Traceback (most recent call last):\n",
    "\r",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(STREAM_PIECES), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_gives_the_same_events(pieces, cuts):
    text = "".join(pieces)
    whole = parse_events(text)
    positions = sorted({c % (len(text) + 1) for c in cuts})
    parser = LogParser()
    split = []
    last = 0
    for pos in [*positions, len(text)]:
        split += parser.feed(text[last:pos])
        last = pos
    split += parser.close()
    assert repr(_normal(split)) == repr(_normal(whole))
    # and the summaries agree exactly
    a, b = parse_log(text), _summary(split)
    assert (a.step, a.epoch, a.checkpoints, a.model_saved, a.val_loss_by_epoch) == (
        b.step,
        b.epoch,
        b.checkpoints,
        b.model_saved,
        b.val_loss_by_epoch,
    )
    assert (a.nan_at_step is None) == (b.nan_at_step is None)


def _summary(events):
    from kohyagen.report.log_summary import summarize_events

    return summarize_events(events)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=60000), max_size=20))
def test_real_log_split_anywhere(shared_dir_cached, cuts):
    text = shared_dir_cached
    parser = LogParser()
    events, last = [], 0
    for pos in [*sorted({c % (len(text) + 1) for c in cuts}), len(text)]:
        events += parser.feed(text[last:pos])
        last = pos
    events += parser.close()
    s = _summary(events)
    assert (s.step, s.epoch, s.epoch_losses(), s.val_loss_by_epoch) == (
        12,
        2,
        {1: 1.1, 2: 1.04},
        {1: 1.19, 2: 1.16},
    )
    assert len(s.checkpoints) == 2 and s.model_saved


@pytest.fixture(scope="module")
def shared_dir_cached():
    from conftest import KOHYA_FACTS

    return (KOHYA_FACTS / "samples" / "run_B" / "combined.log").read_bytes().decode("utf-8")


def test_log_message_strips_rich_columns():
    from kohyagen.report.logs import log_message

    assert (
        log_message("2026-11-29 11:04:24 INFO     model saved.        train_network.py:1729")
        == "model saved."
    )
    assert log_message(
        "                    WARNING  no regularization images   train_util.py:2167"
    ) == ("no regularization images")
    assert log_message("plain text") == "plain text"
