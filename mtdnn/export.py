"""Export one task of a multi-task checkpoint as a plain transformers model.

The export is a directory that `AutoModelForSequenceClassification.from_pretrained(dir)` and
`pipeline("text-classification", model=dir)` open where mtdnn is not installed: config.json with
the task's label maps, model.safetensors, the tokenizer. Our task heads have the shape of the
architectures' own classification heads (`dropout -> dense -> activation -> dropout -> linear` on
the first token), so the head weights map onto them one to one and the logits are the same:

| model_type               | our head.dense      | our head.out_proj    | activation         |
|--------------------------|---------------------|----------------------|--------------------|
| bert                     | bert.pooler.dense   | classifier           | tanh (BertPooler)  |
| roberta, xlm-roberta     | classifier.dense    | classifier.out_proj  | tanh               |
| electra                  | classifier.dense    | classifier.out_proj  | gelu (exact, erf)  |
| deberta, deberta-v2      | pooler.dense        | classifier           | config.pooler_hidden_act |

A task embedding (ERNIE 2.0 style, added to every input token embedding) is folded into the word
embedding table: `embed(ids) + v` equals `(table + v)[ids]` for every token, so the export needs no
extra input. Every export is checked against the multi-task model on a probe batch before it is
written.

Example:
    >>> export("runs/glue/best", "rte", "exports/rte")
    >>> from transformers import pipeline
    >>> pipeline("text-classification", model="exports/rte")({"text": "A", "text_pair": "B"})
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mtdnn.errors import UserError

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo

PARITY_TOLERANCE = 1e-4  # max |logit difference| on the probe batch; a mapping bug is far larger


@dataclass(frozen=True)
class HeadLayout:
    """Where one architecture's `XForSequenceClassification` keeps the two layers of our head.

    Attributes:
        dense: module path of the hidden -> hidden layer (followed by the activation).
        out_proj: module path of the hidden -> outputs layer.
        activations: our head activations the architecture applies exactly.
        dropout_keys: config keys that take the head's dropout (training-time only).
        activation_key: config key that selects the activation, when the architecture has one.
    """

    dense: str
    out_proj: str
    activations: tuple[str, ...]
    dropout_keys: tuple[str, ...] = ("classifier_dropout",)
    activation_key: str | None = None


_ROBERTA = HeadLayout("classifier.dense", "classifier.out_proj", ("tanh",))
_DEBERTA = HeadLayout("pooler.dense", "classifier", ("tanh", "gelu", "relu"),
                      dropout_keys=("pooler_dropout", "cls_dropout"),
                      activation_key="pooler_hidden_act")
# Checked against transformers 5 source: BertPooler (dense + nn.Tanh on [CLS]) -> dropout ->
# classifier; RobertaClassificationHead / XLMRobertaClassificationHead use torch.tanh;
# ElectraClassificationHead uses get_activation("gelu") = GELUActivation = F.gelu (erf), the same
# function as our nn.GELU(); DeBERTa's ContextPooler applies ACT2FN[config.pooler_hidden_act].
LAYOUTS: dict[str, HeadLayout] = {
    "bert": HeadLayout("bert.pooler.dense", "classifier", ("tanh",)),
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "electra": HeadLayout("classifier.dense", "classifier.out_proj", ("gelu",)),
    "deberta": _DEBERTA,
    "deberta-v2": _DEBERTA,
}


def export(checkpoint: str | Path, task: str | None, output_dir: str | Path,
           encoder_only: bool = False, trust_remote_code: bool = False) -> Path:
    """Writes one task of a checkpoint as a plain transformers model, or the shared encoder alone.

    Args:
        checkpoint: an mtdnn checkpoint directory (e.g. runs/glue/best).
        task: the task whose head is exported. With `encoder_only`, optional: when given, its task
            embedding vector (if the model has one) is folded into the encoder's word embeddings.
        output_dir: a new or empty directory.
        encoder_only: write the shared encoder (`AutoModel`) and tokenizer, without any head.
        trust_remote_code: run code shipped with the checkpoint's encoder (trusted ones only).

    Returns:
        The output directory: config.json (id2label, label2id, problem_type), model.safetensors
        and the tokenizer (its model_max_length set to the checkpoint's max_seq_length).

    Raises:
        UserError: the task is not in the checkpoint (with a "did you mean"); no task given for a
            head export; an architecture without an exact head
            mapping (use `encoder_only`); a head activation the architecture cannot reproduce;
            a non-empty output directory.
        FileNotFoundError: `checkpoint` is not an mtdnn checkpoint.
    """
    from mtdnn.checkpoint import load_model, read_registry
    from mtdnn.spec import unknown_name_message

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    registry = read_registry(checkpoint)  # fails early on a non-checkpoint
    known = [t["name"] for t in registry["tasks"]]
    if task is not None and task not in known:
        raise UserError(checkpoint, unknown_name_message("task", task, known))
    if task is None and not encoder_only:
        raise UserError(checkpoint, f"name the task to export (one of {', '.join(known)}), or "
                         "export the shared encoder alone with encoder_only=True (--encoder-only)")
    model_type = _read_model_type(checkpoint)
    if not encoder_only:
        from mtdnn.tasks import task_type

        kind = task_type(next(t["type"] for t in registry["tasks"] if t["name"] == task))
        problem = kind.export_problem(model_type)
        if problem:
            raise UserError(checkpoint, problem)
    _check_output_dir(output_dir, checkpoint)

    model = load_model(checkpoint, trust_remote_code=trust_remote_code)
    if encoder_only:  # soft sharing: the task's own encoder copy
        out_model = model.encoder_for(task) if task is not None else model.encoder
    else:
        assert task is not None
        out_model = model.task_types[task].export(model, task)
    if task is not None and model.task_embedding is not None:
        fold_task_vector(out_model, model, task)
    out_model.eval()
    if not encoder_only:
        assert task is not None
        check_parity(model, out_model, task)

    output_dir.mkdir(parents=True, exist_ok=True)
    out_model.save_pretrained(output_dir)
    tokenizer = copy.deepcopy(model.tokenizer)
    # The pipeline and users truncating with `truncation=True` then cut where training did.
    tokenizer.model_max_length = getattr(model, "max_seq_length", tokenizer.model_max_length)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def _read_model_type(checkpoint: Path) -> str:
    config = checkpoint / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: missing; the checkpoint's encoder config is needed")
    return str(json.loads(config.read_text(encoding="utf-8")).get("model_type"))


def _check_output_dir(output_dir: Path, checkpoint: Path) -> None:
    if output_dir.resolve() == checkpoint.resolve():
        raise UserError(output_dir, "the export would overwrite the checkpoint; give another "
                         "output directory")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(output_dir, "is a file, not a directory; give a new directory for the "
                                    "export")
    if output_dir.exists() and any(output_dir.iterdir()):
        # Writing over an old export could leave stale files (another tokenizer, old weights).
        raise UserError(output_dir, "exists and is not an empty directory; give a new "
                         "directory or empty this one")


def task_config(encoder_config: Any, info: TaskInfo, labels: list[str],
                problem_type: str | None) -> Any:
    """The encoder's config plus what a sequence classifier of this task needs.

    Returns:
        A copy of `encoder_config` with num_labels, id2label, label2id and problem_type set (the
        task type's: classification -> its labels, "single_label_classification"; regression
        and ranking -> one output named "score", "regression": ranking is exported as a 1-logit
        scorer, higher means more relevant, what the pipeline returns with no function applied).
    """
    config = copy.deepcopy(encoder_config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = problem_type
    config.architectures = None  # set again by save_pretrained from the class written
    layout = LAYOUTS[config.model_type]
    for key in layout.dropout_keys:
        setattr(config, key, info.dropout)
    if layout.activation_key is not None:
        setattr(config, layout.activation_key, info.activation)
    if config.model_type in ("deberta", "deberta-v2"):
        # ContextPooler's dense is pooler_hidden_size wide; ours is hidden_size.
        config.pooler_hidden_size = config.hidden_size
    return config


_LAYER_KEY = re.compile(r"\.layer\.(\d+)\.")  # encoder.layer.<i>. in every architecture of LAYOUTS


def build_classifier(model: MultiTaskModel, task: str, labels: list[str],
                     problem_type: str | None) -> torch.nn.Module:
    """The architecture's `XForSequenceClassification` holding the shared encoder and one head.

    Raises:
        UserError: the head's activation is not the one the architecture applies.
    """
    from transformers import AutoModelForSequenceClassification

    info = model.tasks[task]
    encoder = model.encoder_for(task)
    model_type = encoder.config.model_type
    layout = LAYOUTS[model_type]
    if info.activation not in layout.activations:
        raise UserError(f"task {task!r}", f"its head uses {info.activation!r}, but {model_type}'s "
                         f"classification head applies {' or '.join(layout.activations)}; the "
                         "export would not give the same outputs (export with --encoder-only)")
    config = task_config(encoder.config, info, labels, problem_type)
    # A head on a lower layer (hierarchical heads): the layers above it are left out, so the
    # exported encoder's last layer is the one the head reads.
    config.num_hidden_layers = model.layer_index[task]
    classifier = AutoModelForSequenceClassification.from_config(config)
    base = classifier.base_model
    kept = {k: v for k, v in encoder.state_dict().items()
            if not (m := _LAYER_KEY.search(k)) or int(m.group(1)) < config.num_hidden_layers}
    missing, unexpected = base.load_state_dict(kept, strict=False)
    # BERT's pooler is the only part of the base model our encoder lacks (it was loaded without
    # one, as nothing trained it): it receives our head's dense layer below.
    prefix = f"{classifier.base_model_prefix}."
    head_in_base = {f"{layout.dense[len(prefix):]}.{p}" for p in ("weight", "bias")} \
        if layout.dense.startswith(prefix) else set()
    missing_encoder = sorted(set(missing) - head_in_base)
    if unexpected or missing_encoder:
        raise RuntimeError(f"encoder weights do not fit {type(classifier).__name__}: missing "
                           f"{missing_encoder}, unexpected {sorted(unexpected)}")
    head = model.heads[task]
    with torch.no_grad():
        for ours, theirs in ((head.dense, layout.dense), (head.out_proj, layout.out_proj)):
            target = classifier.get_submodule(theirs)
            target.weight.copy_(ours.weight)
            target.bias.copy_(ours.bias)
    return classifier


def probe_batch(config: Any, rows: int = 3, length: int = 16) -> dict[str, torch.Tensor]:
    """Random token ids (a local generator: no global RNG touched) with one right-padded row:
    positions and masking must agree too."""
    generator = torch.Generator().manual_seed(0)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = torch.randint(0, config.vocab_size, (rows, length), generator=generator)
    ids[ids == pad] = (pad + 1) % config.vocab_size
    mask = torch.ones_like(ids)
    ids[1, 10:], mask[1, 10:] = pad, 0
    return {"input_ids": ids, "attention_mask": mask}


def build_with_head(model: MultiTaskModel, task: str, auto_class: str, config: Any,
                    layers: dict[str, torch.nn.Linear]) -> torch.nn.Module:
    """A plain transformers model (`auto_class`, e.g. "AutoModelForTokenClassification", built
    from `config`) holding the task's encoder, cut to the layer its head reads, and our head's
    linear layers copied into its modules: `layers` maps a module path of the export (e.g.
    "classifier", "qa_outputs", "bert.pooler.dense") to our nn.Linear.

    Raises:
        RuntimeError: the encoder's weights do not fit the export's base model (a bug).
    """
    import transformers

    encoder = model.encoder_for(task)
    config.num_hidden_layers = model.layer_index[task]
    exported = getattr(transformers, auto_class).from_config(config)
    base = exported.base_model
    kept = {k: v for k, v in encoder.state_dict().items()
            if not (m := _LAYER_KEY.search(k)) or int(m.group(1)) < config.num_hidden_layers}
    missing, unexpected = base.load_state_dict(kept, strict=False)
    prefix = f"{exported.base_model_prefix}."
    ours_in_base = {f"{path[len(prefix):]}.{p}" for path in layers if path.startswith(prefix)
                    for p in ("weight", "bias")}
    missing_encoder = sorted(set(missing) - ours_in_base)
    if unexpected or missing_encoder:
        raise RuntimeError(f"encoder weights do not fit {type(exported).__name__}: missing "
                           f"{missing_encoder}, unexpected {sorted(unexpected)}")
    with torch.no_grad():
        for path, ours in layers.items():
            target = exported.get_submodule(path)
            target.weight.copy_(ours.weight)
            target.bias.copy_(ours.bias)
    return exported


def fold_task_vector(target: torch.nn.Module, model: MultiTaskModel, task: str) -> None:
    """Adds the task's embedding vector to every row of `target`'s word embedding table."""
    assert model.task_embedding is not None
    vector = model.task_embedding.weight[model.task_ids[task]].detach()
    table = target.get_input_embeddings().weight
    if table.shape[-1] != vector.shape[-1]:
        raise ValueError(f"task {task!r}: the task vector has {vector.shape[-1]} values, the word "
                         f"embeddings {table.shape[-1]}; it cannot be folded into them")
    with torch.no_grad():
        table.add_(vector.to(table.dtype))


@torch.inference_mode()
def check_parity(model: MultiTaskModel, exported: torch.nn.Module, task: str) -> float:
    """Runs the multi-task model and the export on a probe batch (random token ids, one row with
    right padding) and returns the largest absolute logit difference.

    Raises:
        RuntimeError: the difference exceeds PARITY_TOLERANCE (a bug in the weight mapping).
    """
    kind = model.task_types[task]
    batch = kind.export_inputs(model, task)
    model.eval()
    ours = model(task, **batch)["logits"]
    theirs = kind.exported_logits(exported, batch)
    diff = (ours - theirs).abs().max().item()
    if not diff <= PARITY_TOLERANCE:
        raise RuntimeError(f"export of task {task!r} does not reproduce the checkpoint: max logit "
                           f"difference {diff:.3g} > {PARITY_TOLERANCE} (a bug in mtdnn.export)")
    return diff
