"""`kohyagen train` reports the builtin trainer's one-line refusals as the cause."""

from __future__ import annotations

from kohyagen.launch.diagnose import diagnose_run

LOG = """error: /data/5_x/a.png: image is 128x96, larger than the resolution 64x64, and bucketing \
is off (set enable_bucket = true or resize the image)
Traceback (most recent call last):
  File "/x/accelerate/commands/launch.py", line 999, in simple_launcher
    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
subprocess.CalledProcessError: Command '['python', '-m', 'kohyagen.trainer']' returned \
non-zero exit status 1.
"""


def test_builtin_trainer_refusal_is_the_cause_and_its_hint_the_fix():
    found = diagnose_run(LOG, 1)
    assert found is not None
    assert "image is 128x96, larger than the resolution" in found.cause
    assert "/data/5_x/a.png" in found.cause
    assert found.fix == "set enable_bucket = true or resize the image"
    assert "CalledProcessError" not in (found.evidence or "")


def test_refusal_without_a_hint_keeps_a_generic_fix():
    found = diagnose_run("error: output_dir is not set\n", 1)
    assert found is not None and found.cause == "output_dir is not set"
    assert found.fix
