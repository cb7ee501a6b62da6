"""The estimate part: steps, time, memory fit and cost before anything is rented.

Owns the throughput and memory figures with their sources (throughput, data in
templates/throughput.toml), provider prices and the user's own (prices), GPU detection
(hardware), speeds measured on the user's own runs (measurements), training minutes
(train_time), a dataset folder's counts (dataset_counts), and the plan itself:
`plan.estimate(...) -> Estimate`.

Torch-free; reads the config part's presets for the memory model.
"""
