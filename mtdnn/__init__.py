"""mtdnn: multi-task fine-tuning of Transformer encoders in the style of MT-DNN.

    from mtdnn import load_spec, train, MultiTaskModel
    result = train(load_spec("task_specs/demo.yaml"))
    model = MultiTaskModel.from_pretrained(result.best_dir)
    model.predict("rte", [("A man is playing.", "Someone plays.")])

Names are imported on first use, so `import mtdnn` (and the CLI's start) stays fast. Export
lives in its module: `from mtdnn.export import export`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_spec": "mtdnn.spec", "Spec": "mtdnn.spec", "TaskSpec": "mtdnn.spec",
    "UserError": "mtdnn.errors", "SpecError": "mtdnn.errors", "DataError": "mtdnn.errors",
    "CheckpointError": "mtdnn.errors", "check_data": "mtdnn.data",
    "Instrument": "mtdnn.instrument", "load_model": "mtdnn.checkpoint",
    "train": "mtdnn.trainer", "TrainResult": "mtdnn.trainer",
    "evaluate": "mtdnn.evaluation", "predict_file": "mtdnn.evaluation",
    "MultiTaskModel": "mtdnn.model", "MultiTaskBatchSampler": "mtdnn.sampler",
    "compute_metrics": "mtdnn.metrics", "load_metric": "mtdnn.metrics",
    "finetune_spec": "mtdnn.finetune", "train_stages": "mtdnn.continual",
    "StagesResult": "mtdnn.continual", "push_to_hub": "mtdnn.hub",
    "write_glue_submission": "mtdnn.submission", "compare": "mtdnn.compare",
    "CompareResult": "mtdnn.compare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtdnn' has no attribute {name!r}")
