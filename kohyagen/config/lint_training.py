"""A training config's options one by one, and what its dataset_config changes about them."""

from __future__ import annotations

from kohyagen.config.keys import TRAINING_ALIASES
from kohyagen.config.lint_keys import unknown_key_finding, value_finding
from kohyagen.config.lint_rules import (
    RENAMED_IN_DATASET,
    dataset_contexts,
    finding,
    parse_resolution,
)
from kohyagen.config.schema import TomlDocument
from kohyagen.findings import Finding, Severity

# train_network.py:521-527 drops these, with a warning, once --dataset_config is given
IGNORED_WITH_DATASET_CONFIG = ("train_data_dir", "reg_data_dir", "in_json")


def flat_sources(data: dict) -> list[tuple[str, dict]]:
    """(section label, its scalar options) in file order, as kohya flattens them."""
    # read_config_from_file (train_util.py:4748-4758) keeps top-level scalars as they are and
    # merges every table into them, ignoring the table names
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    out = [("the top level", top)] if top else []
    out += [(f"[{k}]", v) for k, v in data.items() if isinstance(v, dict)]
    return out


def key_findings(
    file: str, flat: dict, origin: dict, props: dict[str, dict], doc_data: dict
) -> list[Finding]:
    out: list[Finding] = []
    for key, value in flat.items():
        where = f" (in [{origin[key]}])" if origin.get(key) else ""
        # kohya accepts unknown keys silently (argparse keeps any attribute of the namespace it
        # re-parses into), so a misspelled option is a no-op that only lint can point at
        if key not in props:
            out.append(unknown_key_finding(file, key, value, where, props, flat))
            continue
        # TOML values skip argparse's type= and choices= checks: kohya takes them as written
        bad = value_finding(file, key, value, props[key], flat)
        if bad is not None:
            out.append(bad)
    sections: dict[str, list[str]] = {}
    for table, content in flat_sources(doc_data):
        for key in content:
            sections.setdefault(key, []).append(table)
    # the later table wins the flattening, silently: the earlier value looks set but is not
    for key, tables in sections.items():
        if len(tables) > 1:
            out.append(finding(Severity.WARNING, "duplicate-key",
                               f"{key} is set in {', '.join(tables)}; kohya flattens the "
                               f"sections and keeps the last one ({tables[-1]})", file, key,
                               "keep one of them"))  # fmt: skip
    # prepare_dataset_args calls resolution.split(","): anything but "W" or "W,H" crashes there
    res = flat.get("resolution")
    if isinstance(res, str) and parse_resolution(res) is None:
        out.append(finding(Severity.ERROR, "bad-resolution",
                           f"resolution {res!r} is not \"W\" or \"W,H\" (kohya crashes parsing it)",
                           file, "resolution", 'resolution = "512" or "512,768"'))  # fmt: skip
    # networks/lora.py scales each update by alpha / dim
    dim, alpha = flat.get("network_dim"), flat.get("network_alpha")
    if isinstance(dim, int) and isinstance(alpha, (int, float)) and 0 < dim < alpha:
        out.append(finding(Severity.INFO, "alpha-above-dim",
                           f"network_alpha {alpha} > network_dim {dim} scales LoRA updates up "
                           f"by {alpha / dim:g}; alpha <= dim is usual", file, "network_alpha",
                           f"network_alpha = {dim / 2:g}"))  # fmt: skip
    # max_train_steps defaults to 1600 (train_network.py); an alias still counts as meant
    meant = {TRAINING_ALIASES.get(k.lower()) for k in flat}
    if not {"max_train_epochs", "max_train_steps"} & (set(flat) | meant):
        out.append(finding(Severity.INFO, "default-steps",
                           "neither max_train_epochs nor max_train_steps: kohya trains 1600 "
                           "steps whatever the dataset size", file, "max_train_epochs",
                           "max_train_epochs = 10"))  # fmt: skip
    # the one misspelling kohya keeps as an alias (train_util.py:5404-5406), and it wins
    if "caption_extention" in flat:
        out.append(finding(Severity.WARNING, "misspelled-alias",
                            "caption_extention is kohya's old misspelling; it still overrides "
                            "caption_extension", file, "caption_extention",
                            "rename it to caption_extension"))  # fmt: skip
    return out


def dataset_overlap_findings(file: str, flat: dict, dataset: TomlDocument) -> list[Finding]:
    from kohyagen.config.keys import dataset_level_keys

    out = []
    ds_name = dataset.path.name
    for key in IGNORED_WITH_DATASET_CONFIG:
        if key in flat:
            out.append(finding(
                Severity.WARNING, "ignored-with-dataset-config",
                f"{key} is ignored because dataset_config is set (kohya logs a warning)",
                file, key, f"remove it; the folders are listed in {ds_name}"))  # fmt: skip
    # CLI options are only defaults for a dataset config: kohya's fallback order is subset,
    # dataset, general, then the command line (config_util.py:401-471)
    levels = dataset_level_keys()
    known = levels["general"] | levels["datasets"] | levels["subsets"]
    contexts = [ctx for ctx, _ in dataset_contexts({}, dataset)]
    subsets = [
        s
        for ds in dataset.data.get("datasets", []) or []
        if isinstance(ds, dict)
        for s in ds.get("subsets", []) or []
        if isinstance(s, dict)
    ]
    for key, value in flat.items():
        # train_batch_size and dataset_repeats go by batch_size and num_repeats in the dataset file
        ds_key = RENAMED_IN_DATASET.get(key, key)
        if ds_key not in known or key in IGNORED_WITH_DATASET_CONFIG:
            continue
        theirs = [ctx[ds_key] for ctx in contexts if ds_key in ctx]
        theirs += [s[ds_key] for s in subsets if ds_key in s]
        # the training file's "512" and the dataset file's 512 or [512, 512] are one size
        if key == "resolution":
            differing = [v for v in theirs if parse_resolution(v) != parse_resolution(value)]
        else:
            differing = [v for v in theirs if v != value]
        if differing:
            out.append(finding(
                Severity.WARNING, "overridden-by-dataset-config",
                f"{key} = {value!r} is overridden: {ds_name} sets {ds_key} = {differing[0]!r}, "
                "and kohya uses the dataset file's value", file, key,
                f"set it in one place (change or remove {ds_key} in {ds_name})"))  # fmt: skip
    return out
