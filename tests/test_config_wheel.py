"""The built wheel carries templates/ and schemas/ inside the package, and renders from there."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_installed_wheel_finds_resources_and_renders(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(wheels), str(REPO_ROOT)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("kohyagen-*.whl")
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    data = tmp_path / "data" / "5_sks"
    data.mkdir(parents=True)
    from tests.conftest import make_image

    for i in range(3):
        make_image(data / f"{i}.png")
        (data / f"{i}.txt").write_text("sks, smile\n")
    script = textwrap.dedent(
        f"""
        import kohyagen, kohyagen.resources as r
        from pathlib import Path
        site = Path({str(target)!r}).resolve()
        pkg = Path(kohyagen.__file__).resolve().parent
        assert pkg.parent == site, pkg
        assert r.templates_dir() == pkg / "templates", r.templates_dir()
        assert r.schemas_dir() == pkg / "schemas", r.schemas_dir()
        assert (r.templates_dir() / "presets" / "gpus.toml").is_file()
        from kohyagen.config.render import render_configs, write_configs
        out = Path({str(tmp_path / "out")!r})
        rendered = render_configs({str(data.parent)!r}, model="sdxl", gpu="rtx4090", out_dir=out)
        write_configs(rendered)
        from kohyagen.config.lint import lint_files
        errors = [f for f in lint_files([out / "training_config.toml"]) if f.severity.value == "error"]
        assert not errors, errors
        print("ok", rendered.training["train_batch_size"])
        """
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
    assert not (Path(target) / "templates").exists()  # inside the package, not beside it
