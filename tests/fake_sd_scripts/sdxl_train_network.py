"""The fake SDXL script: the same fake trainer (tests only)."""

import os
import runpy
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    runpy.run_path(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_network.py"),
        run_name="__main__",
    )
