"""The run part: the one-shot pipeline and everything that keeps it resumable.

Owns `kohyagen run`'s stages and their order (pipeline, stages, stages_config,
stages_training), what every stage is given (context: RunOptions, RunContext), opening,
continuing or restarting a run folder (folder), the RunResult a run hands back (result),
the run manifest kohyagen.json (manifest) with the dataset hashes (dataset_hash) and
versions (versions) it records, moving a run folder between machines (relocate), the
training queue (queue) and what its worker does with one item (queue_item), the offline
demo (demo) and the tiny random SD models it trains (tiny). Entry points:
`pipeline.run_pipeline(RunOptions) -> RunResult`, `queue.run_queue(...)`,
`demo.run_demo(...)`.

Orchestration only: each stage calls the dataset, tagging, config, estimate, launch and
report parts. Torch is imported only inside tiny's functions.
"""
