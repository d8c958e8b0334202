"""Model checkpoints: writing, checking, loading (also into a model built for other tasks), and
reading the spec and run record a checkpoint keeps."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtdnn.checkpoint.layout import (
    EXAMPLE,
    FORMAT_VERSION,
    GROUP_ENCODERS_DIR,
    HEADS_FILE,
    METRICS_FILE,
    REGISTRY_FILE,
    SPEC_FILE,
)
from mtdnn.errors import CheckpointError, UserError

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel
    from mtdnn.spec import Spec

# --------------------------------------------------------------------------------------------------
# Model checkpoints


def save_model(model: MultiTaskModel, directory: str | Path, tokenizer: Any = None,
               extra: dict[str, Any] | None = None) -> None:
    """Writes the model part of a checkpoint (encoders, tokenizer, heads, registry) into
    `directory`. Not atomic by itself: `write_checkpoint` writes into a temporary directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(directory, safe_serialization=True)
    for group, encoder in model.group_encoders.items():
        encoder.save_pretrained(directory / GROUP_ENCODERS_DIR / group, safe_serialization=True)
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    tensors = {f"heads.{k}": v.detach().contiguous().cpu() for k, v in
               model.heads.state_dict().items()}
    if model.task_embedding is not None:
        tensors["task_embedding.weight"] = model.task_embedding.weight.detach().contiguous().cpu()
    save_file(tensors, str(directory / HEADS_FILE), metadata={"format": "pt"})
    registry = {"format_version": FORMAT_VERSION,
                "task_embedding": model.task_embedding is not None,
                "max_seq_length": getattr(model, "max_seq_length", None),
                "tasks": [asdict(t) for t in model.tasks.values()], **(extra or {})}
    (directory / REGISTRY_FILE).write_text(json.dumps(registry, indent=2), encoding="utf-8")


def write_checkpoint(model: MultiTaskModel, tokenizer: Any, spec: Spec, target: Path,
                     metrics: dict[str, Any]) -> None:
    """Writes a complete model checkpoint (model, spec.yaml, metrics.json) atomically."""
    from mtdnn.spec import save_spec

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, tmp, tokenizer)
    save_spec(spec, tmp / SPEC_FILE)
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    replace_dir(tmp, target)


def read_registry(directory: str | Path) -> dict[str, Any]:
    """The registry of a model checkpoint, after checking the directory is a complete one.

    Raises:
        CheckpointError: missing, not a directory, another tool's directory, half written, or a
            registry that cannot be read.
    """
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(directory, f"directory not found ({EXAMPLE})")
    if not directory.is_dir():
        raise CheckpointError(directory, f"is a file, not a checkpoint directory ({EXAMPLE})")
    path = directory / REGISTRY_FILE
    if not path.is_file():
        other = " (it looks like a plain transformers model: train it with mtdnn, or give it as " \
                "`encoder:` in a spec)" if (directory / "config.json").is_file() else ""
        raise CheckpointError(directory, f"not an mtdnn checkpoint (no {REGISTRY_FILE}){other}; "
                                         "give a directory written by `mtdnn train`, e.g. "
                                         "runs/tour/best")
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"not valid JSON ({e}); the checkpoint is damaged: use "
                                    "another one (e.g. a newer run's best/)") from None
    if not isinstance(registry, dict) or not isinstance(registry.get("tasks"), list):
        raise CheckpointError(path, "not an mtdnn registry (no `tasks` list); the checkpoint is "
                                    "damaged or from another tool")
    bad = [t for t in registry["tasks"] if not isinstance(t, dict) or
           not all(isinstance(t.get(k), str) for k in ("name", "type"))]
    if bad:
        raise CheckpointError(path, f"damaged registry: task entries without a name and type "
                                    f"({json.dumps(bad)[:80]}); use another checkpoint (e.g. a "
                                    "newer run's best/)")
    missing = [name for name in (HEADS_FILE, "config.json") if not (directory / name).is_file()]
    if not any(directory.glob("model*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(directory, f"incomplete checkpoint: {', '.join(missing)} missing "
                                         "(half written, or files removed); use a complete one")
    return registry


def task_infos(directory: str | Path) -> list[Any]:
    """The `TaskInfo` of every task a checkpoint holds, in its order."""
    from mtdnn.model import TaskInfo

    known = {f.name for f in dataclasses.fields(TaskInfo)}
    return [TaskInfo(**{k: v for k, v in t.items() if k in known})
            for t in read_registry(directory)["tasks"]]


def load_model(directory: str | Path, device: Any = "cpu",
               trust_remote_code: bool = False) -> MultiTaskModel:
    """A checkpoint as a `MultiTaskModel` in eval mode (weights through safetensors only).

    Args:
        directory: a model checkpoint.
        device: where to put it.
        trust_remote_code: run code shipped with the checkpoint's encoder (only for checkpoints
            you trust; off by default).
    Raises:
        CheckpointError: not a complete checkpoint, or one whose encoder needs remote code.
    """
    from mtdnn.model import MultiTaskModel, load_encoder

    registry = read_registry(directory)
    encoder = _load(load_encoder, directory, str(directory), trust_remote_code=trust_remote_code)
    model = MultiTaskModel(encoder, task_infos(directory), bool(registry.get("task_embedding")))
    init_from_checkpoint(model, directory, trust_remote_code=trust_remote_code, encoders=False)
    for group, copy_ in model.group_encoders.items():
        copy_.load_state_dict(_group_state(directory, group, trust_remote_code))
    model.tokenizer = _load(_tokenizer, directory, directory, trust_remote_code)
    model.max_seq_length = registry.get("max_seq_length") or 512
    return model.to(device).eval()


def init_from_checkpoint(model: MultiTaskModel, directory: str | Path,
                         fresh_heads: Sequence[str] = (), trust_remote_code: bool = False,
                         encoders: bool = True) -> dict[str, Any]:
    """Loads what a checkpoint holds into a model built for a (possibly different) task set: the
    weights of every encoder copy, and the head (and task vector) of each task the checkpoint has
    with the same type and labels. The same code serves `from_pretrained`, `init_checkpoint:`,
    `mtdnn finetune` and stages.

    An encoder copy of the model takes the checkpoint's copy that its tasks used there (soft
    sharing: `encoders/<group>/`), else the checkpoint's main encoder.

    Returns:
        {"heads": [tasks whose head was loaded], "encoders": {copy: source directory}}.
    Raises:
        CheckpointError: not a checkpoint; an encoder of another architecture; a task's head of
            another type or label set (start it fresh: `fresh_heads` / --fresh-head).
    """
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    registry = read_registry(directory)
    saved = {t["name"]: t for t in registry["tasks"]}
    loaded_encoders: dict[str, str] = {}
    if encoders:
        for copy_name, encoder, tasks in model.encoder_copies():
            groups = {saved[t].get("encoder_group") for t in tasks if t in saved}
            group = groups.pop() if len(groups) == 1 else None
            source = directory / GROUP_ENCODERS_DIR / group if group is not None and \
                (directory / GROUP_ENCODERS_DIR / group).is_dir() else directory
            state = _group_state(directory, group, trust_remote_code) if source != directory \
                else _encoder_state(directory, trust_remote_code)
            try:
                encoder.load_state_dict(state)
            except RuntimeError as e:
                raise CheckpointError(directory, f"its encoder does not fit the model's ({e}); "
                                      "the spec's encoder must be the checkpoint's architecture "
                                      "and size") from None
            loaded_encoders[copy_name] = str(source)
    tensors = _load(load_file, directory / HEADS_FILE, str(directory / HEADS_FILE))
    loaded, problems = [], []
    for name, info in model.tasks.items():
        if name not in saved or name in fresh_heads:
            continue
        if (saved[name]["type"], saved[name]["labels"]) != (info.type, info.labels):
            problems.append(f"task {name!r}: the checkpoint's head is a {saved[name]['type']} head "
                            f"with labels {saved[name]['labels']}, the spec asks for {info.type} "
                            f"with {info.labels} (start it fresh: fresh_heads=[{name}] or "
                            "--fresh-head)")
            continue
        prefix = f"heads.{name}."
        model.heads[name].load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                           if k.startswith(prefix)})
        if model.task_embedding is not None and registry.get("task_embedding"):
            old_id = [t["name"] for t in registry["tasks"]].index(name)
            with torch.no_grad():
                model.task_embedding.weight[model.task_ids[name]] = \
                    tensors["task_embedding.weight"][old_id]
        loaded.append(name)
    if problems:
        from mtdnn.errors import SpecError

        raise SpecError(str(directory), problems)
    return {"heads": loaded, "encoders": loaded_encoders}


def _tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _load(loader: Any, directory: str | Path, *args: Any, **kwargs: Any) -> Any:
    """Calls a loader of checkpoint files (transformers, safetensors); a refusal to run remote
    code, and a file that is missing or damaged, become user errors."""
    from safetensors import SafetensorError

    try:
        return loader(*args, **kwargs)
    except (OSError, SafetensorError, json.JSONDecodeError) as e:
        # transformers raises OSError for a missing or unparsable config/tokenizer file
        what = "a weights file (.safetensors) is damaged: " if isinstance(e, SafetensorError) \
            else ""
        raise CheckpointError(directory, f"cannot be loaded ({what}{' '.join(str(e).split())}); "
                                         "the checkpoint is damaged or incomplete: use another "
                                         "one, e.g. a newer run's best/") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise CheckpointError(directory, "its encoder needs code shipped with the checkpoint: "
                                         "pass trust_remote_code=True (CLI: --trust-remote-code) "
                                         "if you trust its source") from None


def _encoder_state(directory: Path, trust_remote_code: bool) -> dict[str, Any]:
    from mtdnn.model import load_encoder

    return _load(load_encoder, directory, str(directory),
                 trust_remote_code=trust_remote_code).state_dict()


def _group_state(directory: Path, group: str | None, trust_remote_code: bool) -> dict[str, Any]:
    path = directory / GROUP_ENCODERS_DIR / str(group)
    if not path.is_dir():
        raise CheckpointError(directory, f"incomplete checkpoint: the encoder copy of group "
                                         f"'{group}' ({path}) is missing")
    return _encoder_state(path, trust_remote_code)


def read_spec(directory: str | Path, overrides: Sequence[str] = (),
              data_dir: str | Path | None = None) -> Spec:
    """The spec a checkpoint was trained with, with `overrides`; `data_dir` re-roots its local
    files (saved relative to the data_dir of training) under another folder.

    Raises:
        CheckpointError: no spec.yaml.
        SpecError: the spec with the overrides is not valid here (e.g. its files are missing).
    """
    from mtdnn.spec import load_spec

    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise CheckpointError(directory, f"no {SPEC_FILE}: the spec of training is needed to find "
                                         f"the task data; {EXAMPLE}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(str(data_dir), "data_dir (--data-dir): directory not found; give the "
                                       "folder that holds the task files (e.g. the GLUE folder)")
    extra = [] if data_dir is None else [f"data_dir={json.dumps(str(data_dir))}"]
    return load_spec(path, [*overrides, *extra])


def read_metrics(directory: str | Path) -> dict[str, Any]:
    """A model checkpoint's metrics.json: {"step", "score", "tasks": {task: {metric: value}},
    "loss_weights"?}; {} when it has none."""
    path = Path(directory) / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def replace_dir(tmp: Path, target: Path) -> None:
    """Renames a fully written directory into place. The previous one is moved aside first and
    deleted last, so at every instant one complete copy exists on disk."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


