"""The fake FLUX.1 / Chroma script: the same fake trainer, told which script it is (tests only)."""

import os
import runpy
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    runpy.run_path(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_network.py"),
        run_name="__main__",
        # run_path points sys.argv[0] at train_network.py, so the name is passed in
        init_globals={"FAKE_SCRIPT": "flux_train_network"},
    )
