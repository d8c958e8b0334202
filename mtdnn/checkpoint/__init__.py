"""The checkpoint format: the one package that writes and reads checkpoint directories
(`models.py`: model checkpoints; `resume.py`: resumable ones; `layout.py`: the names).

A model checkpoint (`best/`, what `mtdnn train` keeps) is a Hugging Face style directory:

    config.json, model.safetensors   the shared encoder: `AutoModel.from_pretrained(dir)` loads it
    encoders/<group>/                soft sharing: each further encoder copy, the same layout
    tokenizer files                  the tokenizer
    heads.safetensors                every task head (and the task embedding, when switched on)
    mtdnn.json                       the model registry: tasks, types, label maps, head settings
    spec.yaml                        the spec it was trained with
    metrics.json                     the run's record of it: step, selection score, dev metrics,
                                     learned loss weights

A resumable checkpoint (`checkpoints/step-NNNNNNN/`) holds Accelerate's state (weights, optimizer,
scheduler, every random generator) in `accelerate/` and the loop's progress in
`trainer_state.json` (a `TrainerState`). Both kinds are written into a temporary sibling and
renamed into place, so a crash mid-save leaves the previous one whole; `trainer_state.json` is
written last, so a directory without it is never taken for a checkpoint.

Example:
    >>> model = load_model("runs/tour/best")
    >>> read_metrics("runs/tour/best")["step"]
"""

from mtdnn.checkpoint.layout import (
    CHECKPOINTS_DIR,
    FORMAT_VERSION,
    GROUP_ENCODERS_DIR,
    HEADS_FILE,
    METRICS_FILE,
    REGISTRY_FILE,
    SPEC_FILE,
    STATE_FILE,
)
from mtdnn.checkpoint.models import (
    init_from_checkpoint,
    load_model,
    read_metrics,
    read_registry,
    read_spec,
    replace_dir,
    save_model,
    task_infos,
    write_checkpoint,
)
from mtdnn.checkpoint.resume import (
    TrainerState,
    latest_checkpoint,
    load_training_state,
    resume_point,
    save_training_state,
)

__all__ = ["CHECKPOINTS_DIR", "FORMAT_VERSION", "GROUP_ENCODERS_DIR", "HEADS_FILE", "METRICS_FILE",
           "REGISTRY_FILE", "SPEC_FILE", "STATE_FILE", "TrainerState", "init_from_checkpoint",
           "latest_checkpoint", "load_model", "load_training_state", "read_metrics",
           "read_registry", "read_spec", "replace_dir", "resume_point", "save_model",
           "save_training_state", "task_infos", "write_checkpoint"]
