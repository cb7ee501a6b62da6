"""The cloud part: a LoRA trained on a rented GPU through SkyPilot, the `[cloud]` extra.

Owns the choice of GPU alternatives and their cost (gpus, plan; the prices in SkyPilot's
own catalog where this machine has it cached, read without SkyPilot: catalog), the
SkyPilot task (task), the one seam to SkyPilot's Python API (sky_api: every call to `sky`
goes through it, so tests replace it with a recorded fake), the launch that always tears the
cluster down and copies the results back (launch), the record of clusters in each run's
manifest with status and down (records), managed jobs for many LoRAs (jobs) and their
results brought back from the bucket with the bucket's own tool (fetch).

Entry points: `plan.make_plan`, `task.build_task`, `launch.launch_run`,
`records.cloud_status` / `records.take_down`, `jobs.submit_jobs`, `fetch.fetch_results`. SkyPilot is imported
only inside sky_api's functions, so kohyagen without the extra never loads it.
"""
