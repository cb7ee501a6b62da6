"""A stand-in for accelerate inside the fake sd-scripts venv (tests only)."""
