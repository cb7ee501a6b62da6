"""The report part: what a run did, which checkpoint to keep, and how its LoRAs look.

Owns kohya's console log parser (logs) and what a log adds up to (log_summary), a
TensorBoard event reader (tensorboard) and writer (event_writer) over TFRecord framing
(tfrecord) that need no tensorboard package, the values a report is made of (run_data:
Checkpoint, RunData), a run folder read into RunData (run_folder), checkpoint listing and
ranking (checkpoints), the pick with its -best link (pick), summary.json (summary) and
summary.md (markdown), loss.png (plot), the static report.html (html, html_chart,
html_data) and the preview grids (preview, preview_prompts, preview_grid).
Entry points: `run_folder.load_run`, `summary.write_report`, `pick.pick(run_dir) -> Choice`,
`preview.render_preview(run_dir, PreviewOptions) -> PreviewResult`.

Torch-free; matplotlib is imported only inside plot, and preview draws through
kohyagen.trainer.preview, imported only when an image has to be drawn.
"""
