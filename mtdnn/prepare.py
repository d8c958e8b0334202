"""Setting up a run's inputs: the tokenizer and encoder (from `encoder:` or `init_checkpoint:`),
and every task's data, read, checked and tokenized (`TaskData`).

Everything here runs before the training loop writes anything, so every mistake it finds (an
encoder that cannot be loaded, a `max_seq_length` the encoder cannot take, bad rows) is reported
while the output directory is still untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtdnn.data import available_splits, read_split
from mtdnn.errors import SpecError
from mtdnn.model import TaskInfo, load_encoder, resolve_encoder
from mtdnn.spec import Spec, TaskSpec
from mtdnn.tasks import task_type

# Encoders whose position ids start after the padding id (RoBERTa's family): max_position_embeddings
# counts pad_token_id + 1 positions that no token can use.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "bart", "mpnet")


@dataclass
class TaskData:
    """One task, ready to train and evaluate."""

    spec: TaskSpec
    info: TaskInfo
    train: Any = None  # tokenized datasets.Dataset
    dev: Any = None
    dev_rows: Any = None
    train_rows: Any = None  # the typed examples of its type (Rows for sentence-level types)


def head_activation(encoder_config: Any) -> str:
    """BERT's pooler and RoBERTa's head use tanh; ELECTRA's and DeBERTa's use GELU. Matching the
    architecture keeps the head exportable as that architecture's own classification head."""
    return "gelu" if encoder_config.model_type in ("electra", "deberta", "deberta-v2") else "tanh"


def task_info(task: TaskSpec, activation: str = "tanh", sharing: str = "hard") -> TaskInfo:
    """What the model keeps of a task. Under soft sharing a task without an encoder_group has an
    encoder copy of its own, named after it."""
    group = (task.encoder_group or task.name) if sharing == "soft" else None
    return TaskInfo(name=task.name, type=task.type, labels=list(task.labels),
                    text_columns=list(task.text),
                    metrics=list(task.metrics or task_type(task.type).default_metrics),
                    dropout=task.dropout, activation=activation, layer=task.layer,
                    encoder_group=group,
                    settings={s: getattr(task, s) for s in task_type(task.type).settings})


def _user_error(spec: Spec, key: str, name: str, e: Exception) -> SpecError:
    return SpecError(spec.source, [f"{key}: cannot load {name!r}: {' '.join(str(e).split())} "
                                   "(give a Hub model id or a local directory holding "
                                   "config.json)"])


def _local_problem(name: str, needs_config: bool) -> str | None:
    """What is wrong with a name that can only be a local path (absolute, ./ ../ ~, or more
    than one '/': a Hub id is `name` or `org/name`); None when it may be fine."""
    path = Path(name).expanduser()
    if path.is_dir():
        if needs_config and not (path / "config.json").is_file():
            return (f"{name} is a directory without config.json, not a transformers model (give "
                    "a Hub model id or a directory written by save_pretrained)")
        return None
    if path.exists():
        return f"{name} is a file; give a Hub model id or a model directory"
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        return (f"directory not found: {name} (give a Hub model id, e.g. bert-base-uncased, or "
                "the path of a local model directory)")
    return None


def load_model_parts(spec: Spec) -> tuple[Any, Any]:
    """The run's tokenizer and encoder. With `init_checkpoint:` both come from the checkpoint
    (its weights are loaded into the model afterwards, copy by copy); `tokenizer:` still wins when
    given.

    Raises:
        SpecError: a model that cannot be loaded, a max_seq_length it cannot take, or a head
            that starts from a pooler the model does not have (head_init: pooler).
    """
    from transformers import AutoTokenizer

    source = spec.init_checkpoint or spec.encoder
    key = "init_checkpoint" if spec.init_checkpoint else "encoder"
    kept: set[str] = set()  # the tasks whose head an init_checkpoint holds
    if spec.init_checkpoint:
        from mtdnn.checkpoint import read_registry
        from mtdnn.errors import CheckpointError

        try:
            kept = {t["name"] for t in read_registry(spec.init_checkpoint)["tasks"]}
        except CheckpointError as e:
            raise SpecError(spec.source, [f"init_checkpoint: {e}"]) from None
    revision = None if spec.init_checkpoint else spec.revision  # a local checkpoint has none
    name = spec.tokenizer or source
    problems = [f"{k}: {p}" for k, n, needs_config in (("tokenizer", spec.tokenizer, False),
                                                        (key, str(source), True))
                if n and (p := _local_problem(resolve_encoder(n), needs_config))]
    if problems:
        raise SpecError(spec.source, problems)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_encoder(name), revision=spec.revision if spec.tokenizer else revision,
            trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise _user_error(spec, "tokenizer" if spec.tokenizer else key, name, e) from None
    # heads that start fresh from the pooler (an init_checkpoint's heads are loaded over them)
    from_pooler = [t.name for t in spec.tasks if t.head_init == "pooler"
                   and (t.name not in kept or t.name in spec.fresh_heads)]
    try:
        encoder = load_encoder(str(source), revision, spec.trust_remote_code, bool(from_pooler))
    except (OSError, ValueError) as e:
        raise _user_error(spec, key, str(source), e) from None
    check_sequence_length(spec, encoder.config)
    if from_pooler and getattr(encoder, "pooler", None) is None:
        raise SpecError(spec.source, [
            f"tasks.{name}.head_init: 'pooler' starts the head from the encoder's pretrained "
            f"pooler, and {key} {source} ({encoder.config.model_type}) holds none: set "
            "head_init: random" for name in from_pooler])
    return tokenizer, encoder


def detach_pooler(encoder: Any, spec: Spec) -> Any:
    """Takes the pretrained pooler (loaded when a task's head starts from it) off the encoder,
    which runs without one as always; returns its dense layer, or None. Without such a task the
    encoder is left as loaded (an architecture that always has a pooler keeps it)."""
    pooler = getattr(encoder, "pooler", None)
    if pooler is None or not any(t.head_init == "pooler" for t in spec.tasks):
        return None
    encoder.pooler = None
    return pooler.dense


def start_heads_from_pooler(model: Any, spec: Spec, pooler_dense: Any) -> None:
    """head_init: pooler: those heads' dense layers start as copies of the pretrained pooler's
    (before an init_checkpoint's heads are loaded over them)."""
    if pooler_dense is None:  # no head starts fresh from it (load_model_parts checked)
        return
    for task in spec.tasks:
        if task.head_init == "pooler":
            model.heads[task.name].start_from(pooler_dense)


def check_sequence_length(spec: Spec, config: Any) -> None:
    """A max_seq_length longer than the encoder's position table would index past it."""
    if getattr(config, "position_biased_input", True) is False:
        return  # relative positions only (DeBERTa-v2/v3): any length runs
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return
    if config.model_type in _OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    if spec.max_seq_length > positions:
        raise SpecError(spec.source, [
            f"max_seq_length: {spec.max_seq_length} is longer than the encoder takes "
            f"({positions} positions, {config.model_type}): set max_seq_length <= {positions}"])


def prepare_tasks(spec: Spec, tokenizer: Any, encoder_config: Any, splits=("train", "dev")
                  ) -> dict[str, TaskData]:
    """Reads, checks and tokenizes the train and dev splits of every task."""
    activation = head_activation(encoder_config)
    tasks: dict[str, TaskData] = {}
    for task in spec.tasks:
        data = TaskData(spec=task, info=task_info(task, activation, spec.train.sharing))
        kind = task_type(task.type)
        have = available_splits(spec, task)
        if "train" in splits and "train" in have:
            data.train_rows = read_split(spec, task, "train")
            data.train = kind.features(data.train_rows, tokenizer, spec.max_seq_length,
                                       for_training=True, task=task)
        if "dev" in splits and "dev" in have:
            data.dev_rows = read_split(spec, task, "dev")
            data.dev = kind.features(data.dev_rows, tokenizer, spec.max_seq_length,
                                     for_training=False, task=task)
        tasks[task.name] = data
    return tasks
