"""Stand-in for `python -m accelerate.commands.launch` in the fake sd-scripts venv.

It accepts the options kohyagen passes (and rejects anything else, like the real one
would on a typo), records its argv when FAKE_ACCELERATE_RECORD names a file, then runs
the training script in this process, as accelerate's simple launcher would in a child.
"""

import argparse
import json
import os
import runpy
import sys


def main() -> None:
    parser = argparse.ArgumentParser(prog="accelerate launch")
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--num_machines", type=int, required=True)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16", "fp8"], required=True)
    parser.add_argument("--dynamo_backend", required=True)
    parser.add_argument("--multi_gpu", action="store_true")
    parser.add_argument("-m", "--module", action="store_true")
    parser.add_argument("training_script")
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    record = os.environ.get("FAKE_ACCELERATE_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(sys.argv[1:]) + "\n")
    sys.argv = [args.training_script, *args.training_script_args]
    if args.module:
        runpy.run_module(args.training_script, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(args.training_script)))
        runpy.run_path(args.training_script, run_name="__main__")


if __name__ == "__main__":
    main()
