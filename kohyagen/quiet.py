"""Silence third-party chatter in kohyagen's own process.

Importing diffusers pulls in bitsandbytes, which warns about optional CPU kernels, and
transformers warns about torchvision and draws progress bars while saving. None of it
helps a user of `kohyagen demo` or of the tiny test pipelines, and it buries our own
messages. The trainer's child process is left alone: its raw output is the record.
"""

from __future__ import annotations

import logging


def quiet_third_party() -> None:
    # bitsandbytes warns at import about CPU kernels it lacks
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        return
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
