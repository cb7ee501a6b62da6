"""Optimizers and learning-rate schedules by kohya's names."""

from __future__ import annotations

import ast
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from kohyagen.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    import torch


def parse_optimizer_args(values: list[str] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = str(item).partition("=")
        if not sep:
            raise ConfigError(
                f"optimizer_args entry {item!r} is not key=value",
                hint='write optimizer_args = ["weight_decay=0.01"]',
            )
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        kwargs[key.strip()] = value
    return kwargs


def _optional(module: str, package: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"optimizer_type needs the Python package '{package}', which is not installed",
            hint=f"pip install {package}",
        ) from exc


def make_optimizer(
    args: SimpleNamespace, groups: list[dict[str, Any]]
) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer for these parameter groups, and its kohya-style name for ss_optimizer."""
    import torch

    kind = (args.optimizer_type or "AdamW").lower()
    kwargs = parse_optimizer_args(args.optimizer_args)
    lr = args.learning_rate
    # desc only names the group for TensorBoard's lr/<desc>; optimizers reject unknown keys
    torch_groups = [{k: v for k, v in g.items() if k != "desc"} for g in groups]
    if kind == "adamw":
        # Any: torch's and the optional packages' classes each take their own keywords
        cls: Any = torch.optim.AdamW
    elif kind == "adamw8bit":
        cls = _optional("bitsandbytes", "bitsandbytes").optim.AdamW8bit
    elif kind == "lion":
        cls = _optional("lion_pytorch", "lion-pytorch").Lion
    elif kind == "prodigy":
        cls = _optional("prodigyopt", "prodigyopt").Prodigy
    elif kind == "sgdnesterov":
        cls = torch.optim.SGD
        # kohya's SGDNesterov: momentum 0.9 unless optimizer_args says otherwise
        kwargs.setdefault("momentum", 0.9)
        kwargs["nesterov"] = True
    else:  # config.ALLOWED_VALUES refuses anything else earlier
        raise ConfigError(f"unsupported optimizer_type {args.optimizer_type!r}")
    optimizer = cls(torch_groups, lr=lr, **kwargs)
    # ss_optimizer as kohya writes it: the class path, then the optimizer_args in parentheses
    name = f"{cls.__module__}.{cls.__name__}"
    if kwargs:
        name += "(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
    return optimizer, name


def warmup_steps(value: Any, max_train_steps: int) -> int:
    """lr_warmup_steps may be a step count, a ratio below 1, or "N%"."""
    if isinstance(value, str) and value.endswith("%"):
        return int(float(value[:-1]) / 100 * max_train_steps)
    # kohya's int_or_float: below 1 is a fraction of the total steps
    if isinstance(value, float) and value < 1:
        return int(value * max_train_steps)
    return int(value or 0)


def _custom_scheduler(
    args: SimpleNamespace, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any], warmup: int
) -> Any:
    """lr_scheduler_type: any scheduler class, `Name` in torch.optim.lr_scheduler or
    `package.module.Name`, built with lr_scheduler_args (kohya)."""
    import importlib

    import torch

    if warmup:
        raise ConfigError(  # kohya's ValueError
            f"{args.lr_scheduler_type} does not require `num_warmup_steps`. Set None or 0.",
            hint="remove lr_warmup_steps when lr_scheduler_type is set",
        )
    # a bare name is looked up in torch.optim.lr_scheduler, as kohya's get_scheduler_fix does
    module_name, _, cls_name = args.lr_scheduler_type.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else torch.optim.lr_scheduler
        cls = getattr(module, cls_name)
        return cls(optimizer, **kwargs)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"lr_scheduler_type {args.lr_scheduler_type!r} with {kwargs} failed: {exc}",
            hint='name a scheduler class and its arguments: lr_scheduler_args = ["T_max=100"]',
        ) from exc


def _transformers_schedule(
    name: str,
    args: SimpleNamespace,
    optimizer: torch.optim.Optimizer,
    *,
    warmup: int,
    steps: int,
    kwargs: dict[str, Any],
) -> Any:
    """The schedules kohya takes from transformers: cosine_with_min_lr, warmup_stable_decay
    (lr_decay_steps, lr_scheduler_min_lr_ratio) and inverse_sqrt (lr_scheduler_timescale)."""
    from transformers import optimization as tro

    cycles = float(args.lr_scheduler_num_cycles or 1)
    min_ratio = args.lr_scheduler_min_lr_ratio
    if name == "inverse_sqrt":
        return tro.get_inverse_sqrt_schedule(
            optimizer, num_warmup_steps=warmup, timescale=args.lr_scheduler_timescale, **kwargs
        )
    if name == "cosine_with_min_lr":
        if min_ratio is None:
            raise ConfigError(
                "cosine_with_min_lr needs lr_scheduler_min_lr_ratio",
                hint="set lr_scheduler_min_lr_ratio = 0.1 (the floor as a fraction of the lr)",
            )
        return tro.get_cosine_with_min_lr_schedule_with_warmup(
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=steps,
            num_cycles=cycles / 2,
            min_lr_rate=min_ratio,
            **kwargs,
        )
    decay = warmup_steps(args.lr_decay_steps, steps)  # steps, a fraction or "N%", as warmup
    return tro.get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup,
        num_stable_steps=steps - warmup - decay,
        num_decay_steps=decay,
        num_cycles=cycles / 2,
        min_lr_ratio=min_ratio if min_ratio is not None else 0.0,
        **kwargs,
    )


def make_scheduler(
    args: SimpleNamespace,
    optimizer: torch.optim.Optimizer,
    *,
    max_train_steps: int,
    num_processes: int,
) -> Any:
    """diffusers' schedules; steps are scaled by the process count as accelerate steps them.

    lr_scheduler_args are passed to the schedule (kohya), lr_scheduler_type picks any
    scheduler class instead.
    """
    from diffusers.optimization import get_scheduler

    warmup = warmup_steps(args.lr_warmup_steps, max_train_steps)
    name = args.lr_scheduler or "constant"
    kwargs: dict[str, Any] = parse_optimizer_args(args.lr_scheduler_args)
    if args.lr_scheduler_type:
        # kohya multiplies by the process count: accelerate steps the scheduler once per process
        return _custom_scheduler(args, optimizer, kwargs, warmup * num_processes)
    if name == "piecewise_constant":
        return get_scheduler(name, optimizer, **kwargs)  # step_rules comes in the args
    if name in ("inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"):
        return _transformers_schedule(
            name,
            args,
            optimizer,
            warmup=warmup * num_processes,
            steps=max_train_steps * num_processes,
            kwargs=kwargs,
        )
    if name == "cosine_with_restarts":
        # diffusers' restarts take a whole number of cycles
        kwargs["num_cycles"] = int(args.lr_scheduler_num_cycles or 1)
    elif name == "polynomial":
        kwargs["power"] = float(args.lr_scheduler_power or 1.0)
    steps = max_train_steps * num_processes
    if name == "constant":
        return get_scheduler(name, optimizer, **kwargs)
    if name == "constant_with_warmup":
        return get_scheduler(name, optimizer, num_warmup_steps=warmup * num_processes, **kwargs)
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup * num_processes,
        num_training_steps=steps,
        **kwargs,
    )
