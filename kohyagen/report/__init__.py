"""The report part: what a run did, and which checkpoint to keep.

Owns kohya's console log parser (logs), a TensorBoard event reader and writer that needs no
tensorboard package (tensorboard), the values a report is made of (run_data: Checkpoint,
RunData), checkpoint listing and ranking (checkpoints), the pick with its -best link
(pick), summary.json/summary.md (summary) and loss.png (plot).
Entry points: `summary.load_run / write_report`, `pick.pick(run_dir) -> Choice`.

Torch-free; matplotlib is imported only inside plot.
"""
