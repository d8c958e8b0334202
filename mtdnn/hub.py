"""Pushing a checkpoint, or one exported task of it, to the Hugging Face Hub with a model card.

    staged folder = export(task) or a copy of the whole checkpoint  +  README.md (the model card)
    -> HfApi.create_repo -> create_branch (with a revision) -> upload_folder

The model card's YAML front matter follows the Hub's schema (library_name, tags, datasets,
base_model, model-index with the dev results of the run), so the Hub shows the results on the model
page. Dev results are read from the checkpoint's own metrics.json (written with it).

The token comes from the argument, else from huggingface_hub's usual sources (HF_TOKEN, the token
saved by `hf auth login`); it is never printed or written anywhere.

Example:
    >>> push_to_hub("runs/glue/best", "me/bert-glue-rte", task="rte", dry_run=True)
    PosixPath('/tmp/mtdnn-push-.../')
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mtdnn.errors import UserError
from mtdnn.tasks import task_type

if TYPE_CHECKING:
    from mtdnn.model import TaskInfo
    from mtdnn.spec import Spec

METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews Correlation",
                "pearson": "Pearson", "spearmanr": "Spearman", "map": "MAP", "mrr": "MRR",
                "p@1": "P@1"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def push_to_hub(checkpoint: str | Path, repo_id: str, task: str | None = None,
                private: bool = False, revision: str | None = None, dry_run: bool = False,
                token: str | None = None, staging_dir: str | Path | None = None,
                trust_remote_code: bool = False) -> Path | str:
    """Stages a checkpoint (or one task's export) with a model card and uploads it.

    Args:
        checkpoint: an mtdnn checkpoint directory (e.g. runs/glue/best).
        repo_id: the Hub model repository, "user/name" or "org/name" (created if missing).
        task: push this task as a plain transformers model (see `mtdnn.export`); None pushes the
            whole multi-task checkpoint.
        private: create the repository private; otherwise the Hub's default applies (public,
            unless the organisation defaults to private). An existing repository keeps its
            visibility.
        revision: a branch to push to, created from the default branch when missing.
        dry_run: only stage the folder and return its path; nothing is sent.
        token: a Hub token; None uses HF_TOKEN or the token saved by `hf auth login`.
        staging_dir: stage here (a new or empty directory, kept afterwards); default: a temporary
            directory, removed after an upload.
        trust_remote_code: run code shipped with the checkpoint's encoder (exporting a task loads
            the model); only for checkpoints you trust.

    Returns:
        The staged folder (dry run), else the URL of the commit.

    Raises:
        UserError: unknown task, a bad repo id, a non-empty staging_dir, offline mode, no token,
            or a token the Hub refuses. CheckpointError: not a checkpoint.
    """
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as e:  # HFValidationError, naming the rule broken
        raise UserError("--repo-id", str(e)) from None
    staged = stage(checkpoint, task=task, repo_id=repo_id, staging_dir=staging_dir,
                   trust_remote_code=trust_remote_code)
    if dry_run:
        return staged
    try:
        return _upload(staged, repo_id, task, private, revision, token, _commit_message(
            checkpoint, task))
    finally:
        if staging_dir is None:
            shutil.rmtree(staged, ignore_errors=True)


def _upload(staged: Path, repo_id: str, task: str | None, private: bool, revision: str | None,
            token: str | None, message: str) -> str:
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise UserError("push", "HF_HUB_OFFLINE is set: unset it to push, or stage only with "
                                 "--dry-run")
    # Read at call time (not at huggingface_hub's import): a mirror or test Hub set late counts.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)
    if token is None and get_token() is None:
        raise UserError(repo_id, "no Hugging Face token: log in with `hf auth login` or set "
                                 "HF_TOKEN (not on the command line, where it would stay in the "
                                 "shell history)")
    try:
        # Not private: no visibility is sent, so an organisation that makes new repositories
        # private by default keeps doing so.
        api.create_repo(repo_id, private=True if private else None, exist_ok=True,
                        repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=staged, repo_id=repo_id, repo_type="model",
                                 revision=revision, commit_message=message)
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise UserError(api.endpoint, f"the token may not write to {repo_id} (HTTP "
                                          f"{status}); use a token with write access to that "
                                          "namespace (`hf auth login`, or HF_TOKEN)") from None
        raise
    return str(info.commit_url)


def _commit_message(checkpoint: str | Path, task: str | None) -> str:
    from mtdnn.checkpoint import read_metrics

    step = read_metrics(checkpoint).get("step")
    what = f"task {task!r} (exported)" if task else "multi-task checkpoint"
    return f"Upload mtdnn {what}" + (f", step {step}" if step is not None else "")


def stage(checkpoint: str | Path, task: str | None = None, repo_id: str | None = None,
          staging_dir: str | Path | None = None, trust_remote_code: bool = False) -> Path:
    """Builds the folder to upload: the task's export (or a copy of the checkpoint) + README.md.

    Raises:
        UserError: staging_dir is not empty; the checkpoint holds pickle files.
    """
    from mtdnn.checkpoint import read_registry
    from mtdnn.export import export

    checkpoint = Path(checkpoint)
    read_registry(checkpoint)  # fails early, naming the directory
    card = model_card(checkpoint, task=task, repo_id=repo_id)  # before writing anything
    if staging_dir is None:
        target = Path(tempfile.mkdtemp(prefix="mtdnn-push-"))
    else:
        target = Path(staging_dir)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(target, "the staging directory must be new or empty")
    try:
        if task is not None:
            export(checkpoint, task, target, trust_remote_code=trust_remote_code)
        else:
            _copy_checkpoint(checkpoint, target)
        (target / "README.md").write_text(card, encoding="utf-8")
    except BaseException:
        if staging_dir is None:  # ours: leave no half-staged temporary folder behind
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _copy_checkpoint(checkpoint: Path, target: Path) -> None:
    files = sorted(p for p in checkpoint.iterdir() if p.is_file() and not p.name.startswith("."))
    pickled = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise UserError(checkpoint, f"holds pickle files {pickled}; mtdnn pushes safetensors "
                                    "only: remove them from the checkpoint")
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.name == "spec.yaml":
            (target / path.name).write_text(public_spec(path), encoding="utf-8")
        else:
            shutil.copy2(path, target / path.name)


def _local_name(value: str | None) -> str | None:
    """A path of the machine that trained -> its last component; a Hub id stays as it is."""
    if value is None or _is_hub_id(value):
        return value
    return Path(value).name


def public_spec(path: str | Path) -> str:
    """A checkpoint's spec.yaml as it is uploaded: without what only means something on the machine
    that trained, so that an upload does not publish its directory layout. The data directory and
    the checkpoint the run started from are left out, the output directory keeps its last
    component, and local paths of the encoder, the tokenizer and data files keep their names.
    Loading the model needs none of them (the encoder and tokenizer are in the checkpoint);
    `mtdnn evaluate` on a download reads the tasks' Hub sources, or the files under a data_dir
    given again (`data_dir=...`)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    data.update(data_dir=None, init_checkpoint=None, fresh_heads=[],
                encoder=_local_name(data.get("encoder")),
                tokenizer=_local_name(data.get("tokenizer")))
    if data.get("output_dir"):
        data["output_dir"] = str(Path("runs") / Path(data["output_dir"]).name)
    for task in (data.get("tasks") or {}).values():
        for source in (task.get("files") or {}).values():
            if isinstance(source, dict) and Path(str(source.get("path") or "")).is_absolute():
                source["path"] = Path(source["path"]).name
    return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------------------------------
# The model card


def dev_results(checkpoint: str | Path) -> tuple[dict[str, dict[str, float]], int | None]:
    """The dev metrics of a checkpoint, from its metrics.json: ({task: {metric: value}}, step);
    ({}, None) when it has none."""
    from mtdnn.checkpoint import read_metrics

    metrics = read_metrics(checkpoint)
    return ({t: dict(s.get("dev", {})) for t, s in metrics.get("tasks", {}).items()},
            metrics.get("step"))


def _card_spec(checkpoint: Path) -> Spec:
    from mtdnn.checkpoint import read_spec
    from mtdnn.spec import SpecError

    try:
        return read_spec(checkpoint)
    except SpecError:
        # The training data need not be on the machine that pushes: tasks with a Hub source
        # then describe their data without it.
        return read_spec(checkpoint, ["data_dir=null"])


def _dataset(spec: Spec, task: str) -> dict[str, Any]:
    """The model-index `dataset` of a task's dev split: the Hub dataset when the spec names one."""
    source = spec.task(task).hub
    if source is None:
        limit = spec.task(task).max_eval_examples
        return {"name": task, "type": task, "split": "dev" + (f"[:{limit}]" if limit else "")}
    out: dict[str, Any] = {"name": source.path + (f" ({source.name})" if source.name else ""),
                           "type": source.path}
    if source.name:
        out["config"] = source.name
    out["split"] = source.splits.get("dev", "validation")
    limit = spec.task(task).max_eval_examples
    if limit is not None:  # scored on a subset: say so, in the datasets library's slice syntax
        out["split"] += f"[:{limit}]"
    return out


def _is_hub_id(name: str) -> bool:
    return not Path(name).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None


def model_card(checkpoint: str | Path, task: str | None = None, repo_id: str | None = None) -> str:
    """The README.md of a pushed checkpoint (or of one task's export).

    Args:
        checkpoint: an mtdnn checkpoint directory holding spec.yaml and mtdnn.json.
        task: the exported task; None describes the whole multi-task checkpoint.
        repo_id: the target repository, used in the usage snippet and as the model-index name.

    Returns:
        Markdown with YAML front matter (library_name, tags, datasets, base_model, model-index).

    Raises:
        UserError: unknown task. CheckpointError: not a checkpoint.
    """
    from mtdnn.checkpoint import read_registry, task_infos
    from mtdnn.spec import unknown_name_message

    checkpoint = Path(checkpoint)
    registry = read_registry(checkpoint)
    infos = {t.name: t for t in task_infos(checkpoint)}
    if task is not None and task not in infos:
        raise UserError(checkpoint, unknown_name_message("task", task, infos))
    shown = [infos[task]] if task else list(infos.values())
    spec = _card_spec(checkpoint)
    results, step = dev_results(checkpoint)
    name = (repo_id or checkpoint.resolve().name).split("/")[-1]

    meta: dict[str, Any] = {"library_name": "transformers" if task else "mtdnn"}
    hub_tasks = sorted({task_type(i.type).pipeline_tag for i in shown})
    meta["tags"] = ["mtdnn", "multi-task", *hub_tasks]
    if task:
        meta["pipeline_tag"] = task_type(infos[task].type).pipeline_tag
    datasets = sorted({spec.task(i.name).hub.path for i in shown if spec.task(i.name).hub})
    if datasets:
        meta["datasets"] = datasets
    if _is_hub_id(spec.encoder):  # a local path is no Hub model to link to
        meta["base_model"] = spec.encoder
    entries = [{"task": {"type": task_type(i.type).pipeline_tag,
                         "name": task_type(i.type).pipeline_name},
                "dataset": _dataset(spec, i.name),
                "metrics": [{"type": m, "value": v, "name": METRIC_NAMES.get(m, m)}
                            for m, v in results[i.name].items()]}
               for i in shown if results.get(i.name)]
    if entries:
        meta["model-index"] = [{"name": name, "results": entries}]

    parts = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", ""]
    encoder = _local_name(spec.encoder)  # a local path names only its folder
    what = (f"The `{task}` head of a multi-task model, exported as a plain transformers model: "
            f"its shared encoder (`{encoder}`) was" if task else
            f"A multi-task model: one shared encoder (`{encoder}`) with one head per task,")
    parts += [f"{what} fine-tuned on {len(infos)} task(s) at once ({', '.join(infos)}) with "
              "`mtdnn`, multi-task fine-tuning in the style of "
              "[MT-DNN](https://arxiv.org/abs/1901.11504).", ""]
    parts += _task_section(shown) + _results_section(spec, shown, results, step)
    parts += _usage_section(shown, task, repo_id or f"<user>/{name}")
    parts += _settings_section(spec, registry, step, exported=task is not None)
    return "\n".join(parts).rstrip() + "\n"


def _task_section(shown: list[TaskInfo]) -> list[str]:
    lines = ["## Tasks", "", "| task | type | inputs | labels |", "|---|---|---|---|"]
    for i in shown:
        labels = task_type(i.type).card_outputs(i)
        inputs = task_type(i.type).card_inputs(i)
        lines.append(f"| {i.name} | {i.type} | {inputs} | {labels} |")
    return lines + [""]


def _results_section(spec: Spec, shown: list[TaskInfo], results: dict[str, dict[str, float]],
                     step: int | None) -> list[str]:
    rows = [f"| {i.name} | {m} | {100 * v:.2f} |" for i in shown
            for m, v in results.get(i.name, {}).items()]
    if not rows:
        return ["## Results", "", "No dev results were found for this checkpoint (the run's "
                "metrics.json is missing or describes another step).", ""]
    at = f" at step {step}" if step is not None else ""
    cut = [f"{i.name} ({spec.task(i.name).max_eval_examples})" for i in shown
           if spec.task(i.name).max_eval_examples is not None and i.name in results]
    subset = f"; only the first dev rows (queries for ranking) of {', '.join(cut)}" if cut else ""
    return ["## Results", "", f"Dev set{at} (the checkpoint kept by the run){subset}; values "
            "x100:", "", "| task | metric | dev |", "|---|---|---:|", *rows, ""]


def _usage_section(shown: list[TaskInfo], task: str | None, repo_id: str) -> list[str]:
    first = shown[0]
    if task is None:
        example = '[("A man is playing.", "Someone plays.")]' if first.is_pair \
            else '["A fine film."]'
        code = ["from huggingface_hub import snapshot_download",
                "from mtdnn import MultiTaskModel", "",
                f'model = MultiTaskModel.from_pretrained(snapshot_download("{repo_id}"))',
                f'model.predict("{first.name}", {example})']
        note = "Needs `pip install mtdnn`; `model.tasks` lists the heads."
    else:  # the export: plain transformers, as the task's type serves it
        code, note = task_type(first.type).card_usage(first, repo_id)
    return ["## Usage", "", "```python", *code, "```", "", note, ""]


def _settings_section(spec: Spec, registry: dict[str, Any], step: int | None,
                      exported: bool) -> list[str]:
    t = spec.train
    length = f"{t.max_steps} optimizer steps" if t.max_steps else f"{t.epochs:g} epochs"
    sampler = t.sampler + (f" (temperature {t.temperature:g})" if t.sampler == "temperature"
                           else "")
    rows = [("encoder", f"`{_local_name(spec.encoder)}`"),
            ("max sequence length", spec.max_seq_length),
            ("learning rate", f"{t.learning_rate:g} ({t.scheduler}, warmup ratio "
                              f"{t.warmup_ratio:g})"),
            ("batch size", f"{t.batch_size} x {t.gradient_accumulation_steps} accumulation"),
            ("training length", length), ("task sampler", sampler),
            ("task embedding", ("yes (this export has its vector folded into the word "
                                "embeddings)" if exported else "yes")
             if registry.get("task_embedding") else "no"),
            ("loss weights", ", ".join(f"{x.name} {x.loss_weight:g}" for x in spec.tasks)),
            ("seed", spec.seed)]
    # Ranking limits count queries (a query is never cut in half), other tasks count rows.
    subsets = [f"{x.name}: " + ", ".join(
        f"first {n} {split} {'queries' if x.type == 'ranking' else 'rows'}" for split, n in
        (("train", x.max_train_examples), ("dev/test", x.max_eval_examples)) if n is not None)
        for x in spec.tasks if x.max_train_examples or x.max_eval_examples]
    if subsets:
        rows.append(("data subsets", "; ".join(subsets)))
    if step is not None:
        rows.append(("checkpoint step", step))
    return ["## Training settings", "", "| setting | value |", "|---|---|",
            *[f"| {k} | {v} |" for k, v in rows], ""]
