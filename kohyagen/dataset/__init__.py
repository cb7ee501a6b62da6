"""The dataset part: what kohya will see in a folder of images, and a clean copy of it.

Owns listing folders the way kohya globs them (scan), cheap per-image probes and their
process pool (images, probe_pool) with the container walks (containers) and the
perceptual hash (perceptual), the check's rules (rules, layout_rules, image_rules,
caption_rules), the `N_name` DreamBooth layout (layout), caption files (captions),
kohya's aspect-ratio buckets (buckets), the check's bucket options and their findings
(bucket_findings), its counting (tally) and its report values (check_report), and the two
entry points:

- `check.check_dataset(...) -> DatasetReport` (findings, counts, buckets, step counts)
- `prepare.prepare_dataset(...) -> PrepareResult` (copies into OUT/N_concept/; the source
  is only read, by sources; images kohya would mishandle are re-encoded by conversion)

Torch-free; imports only the core below it.
"""
