"""`python -m kohyagen.trainer --config_file X --dataset_config Y [--resume DIR]`.

Also runs under `accelerate launch -m kohyagen.trainer ...`. Known problems end with one
line on stderr and exit status 1; a crash during training exits 3.
"""

from __future__ import annotations

import argparse
import sys

from kohyagen.errors import EXIT_TRAINING_FAILED, KohyagenError, require


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kohyagen.trainer",
        description="kohyagen's builtin kohya-compatible LoRA trainer",
        allow_abbrev=False,
    )
    parser.add_argument("--config_file", required=True, help="training_config.toml")
    parser.add_argument("--dataset_config", default=None, help="dataset_config.toml")
    parser.add_argument("--resume", default=None, help="a state folder written by save_state")
    parser.epilog = "Any other kohya option (--name value, --flag) overrides the config file."
    ns, extra = parser.parse_known_args(argv)
    ns.extra = extra  # kohya-style --option value overrides, checked in main()
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    try:
        for module in ("torch", "diffusers", "transformers", "accelerate", "safetensors"):
            require(module)
        from kohyagen.trainer.config import load_config, parse_cli_overrides

        overrides = parse_cli_overrides(ns.extra)
        cfg = load_config(ns.config_file, ns.dataset_config, overrides=overrides)
        from kohyagen.trainer.train import run

        run(cfg, resume=ns.resume)
    except KohyagenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:  # a crash mid-training: traceback for the log, exit status for launch
        import traceback

        traceback.print_exc()
        return EXIT_TRAINING_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
