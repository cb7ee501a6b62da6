"""The child-process runner: tee, stop requests, escalation, and no orphans."""

from __future__ import annotations

import os
import sys

import pytest

from kohyagen.launch.process import child_env, run_streaming

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
{term}
print("ready", flush=True)
sys.stderr.write("\\rbar")
sys.stderr.flush()
time.sleep(60)
"""


def _run(tmp_path, code, on_text, **kwargs):
    return run_streaming(
        [sys.executable, "-c", code], cwd=tmp_path, env=child_env(), log_path=tmp_path / "train.log",
        on_text=on_text, **kwargs,
    )  # fmt: skip


def test_tees_raw_bytes_and_reports_exit_code(tmp_path):
    seen = []
    code = (
        "import sys; sys.stdout.write('a\\r\\u2588b\\n'); sys.stderr.write('err\\r'); sys.exit(4)"
    )
    outcome = _run(tmp_path, code, lambda t: seen.append(t))
    assert outcome.exit_code == 4 and outcome.stop_reason is None
    raw = (tmp_path / "train.log").read_bytes()
    assert b"a\r\xe2\x96\x88b\n" in raw and b"err\r" in raw
    assert "".join(seen).replace("err\r", "") == "a\r█b\n"
    assert (outcome.log_start, outcome.log_end) == (0, len(raw))
    again = _run(tmp_path, "print('x')", lambda t: None)
    assert again.log_start == len(raw)  # appended, offsets recorded


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_stop_escalates_to_sigterm_then_sigkill(tmp_path):
    code = STUBBORN.format(term="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    outcome = _run(
        tmp_path, code, lambda t: "nan-loss" if "ready" in t else None,
        interrupt_grace=0.3, terminate_grace=0.3,
    )  # fmt: skip
    assert outcome.stop_reason == "nan-loss"
    assert outcome.exit_code == -9


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_sigint_stops_a_cooperative_child(tmp_path):
    code = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    outcome = _run(tmp_path, code, lambda t: "stop" if "ready" in t else None)
    assert outcome.stop_reason == "stop"
    assert outcome.exit_code not in (0, None)


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_a_failing_callback_kills_the_child(tmp_path):
    code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n"
    pids = []

    def boom(text):
        pids.append(int(text.split()[0]))
        raise ValueError("ui bug")

    with pytest.raises(ValueError):
        _run(tmp_path, code, boom)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_child_env_is_unbuffered_and_wide():
    env = child_env({"EXTRA": "1"})
    assert env["PYTHONUNBUFFERED"] == "1" and env["COLUMNS"] == "200" and env["EXTRA"] == "1"
