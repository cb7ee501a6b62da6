"""The launch part: one training run, from argv to a finished (or diagnosed) process.

Owns the checks before launch: the two configs, the backend and the lint (preflight);
finding sd-scripts and its Python (checkout); the `accelerate launch` argv (command); the
run folder and the checkpoints an earlier run left (run_folder); the run's own config
copies and the smaller ones of the out-of-memory ladder (attempts); the attempts loop
(session), what a run returns (outcome) and train.json as it is written (state); the
live watching of the trainer's output (watch); the failure messages kohya and torch
print (signatures) and the diagnosis read from them (diagnose); and the child process
with its process group and clean stop (process).
The entry point is `train.train(config, ...) -> TrainResult`.

Torch-free: the builtin trainer runs as a child process (`python -m kohyagen.trainer`).
"""
