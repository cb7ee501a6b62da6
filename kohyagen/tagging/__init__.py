"""The tagging part: WD14 captions through onnxruntime, never clobbering a person's text.

Owns where a tagger comes from and its tag list (models), the onnxruntime session and its
provider choice (runtime), the taggers' own preprocessing (images), which images a run
takes (selection), the batched loop with its loader threads (loop), and the caption
policy: order, thresholds, merge modes and atomic writes (captions). The entry point is
`directory.tag_directory(...) -> TagResult`.

Torch-free: onnxruntime and numpy are imported inside the functions that need them.
"""
