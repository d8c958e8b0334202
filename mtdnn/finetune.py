"""Further fine-tuning (MT-DNN's second stage): one task, starting from a multi-task checkpoint.

The checkpoint's shared encoder is the starting encoder, and the task's trained head is kept
(or started fresh on request). No head stripping, no size mismatch: heads are matched by task
name and label set. A task the checkpoint does not hold is defined by another spec and gets a
fresh head.

Example:
    >>> spec = finetune_spec("runs/tour/best", "rte", ["train.epochs=3"])
    >>> train(spec)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtdnn.checkpoint import GROUP_ENCODERS_DIR, SPEC_FILE, read_registry, task_infos
from mtdnn.spec import (
    Spec,
    SpecError,
    load_spec,
    set_override,
    spec_from_dict,
    unknown_name_message,
)


def finetune_spec(checkpoint: str | Path, task: str, overrides: Sequence[str] = (),
                  spec_path: str | Path | None = None, fresh_head: bool = False,
                  output_dir: str | None = None) -> Spec:
    """The spec of a single-task run that starts from `checkpoint`.

    Args:
        checkpoint: an mtdnn checkpoint directory (e.g. runs/tour/best).
        task: the task to fine-tune.
        overrides: `key=value` settings of the new run (its own schedule: learning rate, epochs).
        spec_path: where the task is defined when the checkpoint's own spec lacks it.
        fresh_head: start the task's head anew even if the checkpoint has one.
        output_dir: default `<run dir>/finetune-<task>` beside the checkpoint.
    Raises:
        SpecError: unknown task, or a bad setting.
    """
    checkpoint = Path(checkpoint)
    read_registry(checkpoint)  # a CheckpointError naming what is wrong with the directory
    source = Path(spec_path) if spec_path else checkpoint / SPEC_FILE
    base = load_spec(source)
    names = [t.name for t in base.tasks]
    if task not in names:
        hint = "" if spec_path else " (to fine-tune a new task, give the spec defining it: --spec)"
        raise SpecError(str(source), [unknown_name_message("task", task, names) + hint])
    data = base.to_dict()
    data["tasks"] = {task: data["tasks"][task]}
    data.pop("distill", None)  # its own schedule: no teachers unless the overrides name them
    for key in ("distill_alpha", "distill_temperature"):
        data["tasks"][task].pop(key, None)
    # Soft sharing: the task goes on alone (hard sharing of one task) with the encoder copy it
    # used: init_checkpoint loads that copy (mtdnn.checkpoint.init_from_checkpoint picks it by
    # the task), and `encoder:` names it.
    data["tasks"][task].pop("encoder_group", None)
    group = {t.name: t.encoder_group for t in task_infos(checkpoint)}.get(task)
    encoder = checkpoint / GROUP_ENCODERS_DIR / group if group is not None and \
        (checkpoint / GROUP_ENCODERS_DIR / group).is_dir() else checkpoint
    data.update(encoder=str(encoder), tokenizer=str(checkpoint), revision=None,
                init_checkpoint=str(checkpoint), fresh_heads=[task] if fresh_head else [],
                output_dir=output_dir or str(checkpoint.parent / f"finetune-{task}"))
    # The new run's own schedule: training settings start from the defaults, not the multi-task
    # run's (a second stage usually wants a smaller budget), then the overrides apply.
    data["train"] = {k: v for k, v in data["train"].items() if k in ("batch_size",
                                                                      "eval_batch_size")}
    for assignment in overrides:
        set_override(data, assignment)
    return spec_from_dict(data, source=f"{source} (finetune {task})", base_dir=source.parent)
