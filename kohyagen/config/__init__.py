"""The config part: kohya's option contract, the presets, rendering and lint.

Owns kohya's arguments as JSON Schema (schema), option names and did-you-mean (keys),
model and GPU presets (presets), the memory model's choice of settings (training_plan),
`--set` overrides (overrides), rendering the two TOML files (render, render_inputs,
render_values, sample_prompts), and lint with its rules (lint, lint_dataset, lint_disk,
lint_rules). Entry points:

- `render.render_configs(...) -> RenderedConfigs`, `render.write_configs(...)`
- `lint.lint_files(paths) -> list[Finding]`
- `presets.get_model / get_gpu`, `training_plan.plan_training / training_settings`

Torch-free; reads templates/ and schemas/ through kohyagen.resources.
"""
