"""GLUE leaderboard files from a checkpoint: each GLUE head predicts its task's test split.

The leaderboard (gluebenchmark.com) takes a zip of TSV files named after the tasks, each with a
header `index<TAB>prediction` and one row per test example, ids from the test file's `index` column:

| task | file            | prediction                                        |
|------|-----------------|---------------------------------------------------|
| cola, sst2, mrpc, qqp, wnli | CoLA.tsv, SST-2.tsv, MRPC.tsv, QQP.tsv, WNLI.tsv | 0 / 1 |
| mnli | MNLI-m.tsv (+ AX.tsv, the diagnostic set) | entailment / neutral / contradiction |
| qnli, rte | QNLI.tsv, RTE.tsv | entailment / not_entailment                    |
| stsb | STS-B.tsv       | a similarity in [0, 5] (predictions are clipped)  |

The label strings of task_specs/glue.yaml are already the leaderboard's, so a class id is written as
its label. Tasks are matched by name; a task whose spec has no test split (the sampled QQP/MNLI
copies) is skipped and listed, not an error. The leaderboard expects a file for every task in the
zip: `GlueSubmission.missing` lists the files still to be made (MNLI-mm needs MNLI's mismatched test
set, which glue.yaml does not read).

Example:
    >>> result = write_glue_submission("runs/glue/best", "submission", data_dir="data/glue")
    >>> [p.name for p in result.files], result.skipped
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mtdnn.errors import UserError

if TYPE_CHECKING:
    from mtdnn.data import Rows
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec

# task name -> (leaderboard file stem, the labels the leaderboard accepts; () for a score)
GLUE_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cola": ("CoLA", ("0", "1")),
    "sst2": ("SST-2", ("0", "1")),
    "mrpc": ("MRPC", ("0", "1")),
    "stsb": ("STS-B", ()),
    "qqp": ("QQP", ("0", "1")),
    "mnli": ("MNLI-m", ("entailment", "neutral", "contradiction")),
    "qnli": ("QNLI", ("entailment", "not_entailment")),
    "rte": ("RTE", ("entailment", "not_entailment")),
    "wnli": ("WNLI", ("0", "1")),
}
LEADERBOARD_FILES = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm", "QNLI", "RTE",
                     "WNLI", "AX")
DIAGNOSTIC_FILE = Path("diagnostic") / "diagnostic.tsv"  # under data_dir, as GLUE ships it
STSB_RANGE = (0.0, 5.0)


@dataclass
class GlueSubmission:
    """What `write_glue_submission` wrote.

    Attributes:
        files: the leaderboard files written.
        rows: rows per file name (without the header).
        skipped: checkpoint tasks not written, with the reason.
    """

    files: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """Leaderboard files not written (the leaderboard expects all of them in the zip)."""
        written = {p.stem for p in self.files}
        return [f"{name}.tsv" for name in LEADERBOARD_FILES if name not in written]


def write_glue_submission(checkpoint: str | Path, output_dir: str | Path,
                          data_dir: str | Path | None = None, batch_size: int = 128,
                          trust_remote_code: bool = False) -> GlueSubmission:
    """Predicts the GLUE test splits with a checkpoint's heads and writes the leaderboard files.

    Args:
        checkpoint: an mtdnn checkpoint directory (its spec.yaml says where the test data is).
        output_dir: where the .tsv files go (created; files of the same name are replaced).
        data_dir: read local GLUE files from here instead of the spec's data_dir.
        batch_size: test rows per forward pass.
        trust_remote_code: run code shipped with the checkpoint's encoder (trusted ones only).

    Returns:
        A `GlueSubmission`: files written, rows per file, skipped tasks and why.

    Raises:
        UserError: a GLUE task whose labels are not the leaderboard's (e.g. renamed labels).
        DataError / SpecError: unreadable test data (file, line and fix named).
        CheckpointError: not a checkpoint.
    """
    from mtdnn.checkpoint import load_model
    from mtdnn.data import available_splits, read_split

    model = load_model(checkpoint, trust_remote_code=trust_remote_code)
    result = GlueSubmission()
    glue = [t for t in model.tasks if t in GLUE_TASKS]
    for name in model.tasks:
        if name not in GLUE_TASKS:
            result.skipped[name] = "not a GLUE task (names: " + ", ".join(GLUE_TASKS) + ")"
    for name in glue:
        _check_task(model.tasks[name])
    spec = _test_spec(Path(checkpoint), glue, data_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def write(task: str, stem: str, rows_spec: Spec) -> None:
        rows = read_split(rows_spec, rows_spec.task(task), "test")
        lines = _predict_lines(model, task, rows, batch_size)
        path = output_dir / f"{stem}.tsv"
        path.write_text("index\tprediction\n" + "".join(f"{x}\n" for x in lines),
                        encoding="utf-8")
        result.files.append(path)
        result.rows[path.name] = len(lines)

    for name in glue:
        if "test" not in available_splits(spec, spec.task(name)):
            where = "files" if spec.uses_files(spec.task(name)) else "hub.splits"
            result.skipped[name] = f"no test split (tasks.{name}.{where} has none)"
            continue
        write(name, GLUE_TASKS[name][0], spec)
    if "mnli" in glue:
        diagnostic = Path(spec.data_dir) / DIAGNOSTIC_FILE if spec.data_dir else None
        if diagnostic is not None and diagnostic.is_file():
            write("mnli", "AX", _diagnostic_spec(spec, diagnostic))
        else:
            result.skipped["mnli (AX)"] = f"no diagnostic file: put GLUE's diagnostic.tsv at " \
                                          f"<data_dir>/{DIAGNOSTIC_FILE}"
    return result


def _check_task(info: TaskInfo) -> None:
    expected = GLUE_TASKS[info.name][1]
    wanted_type = "classification" if expected else "regression"
    if info.type != wanted_type:
        raise UserError(f"task {info.name!r}", f"a {info.type} task; the leaderboard's "
                        f"{GLUE_TASKS[info.name][0]} takes {wanted_type} predictions (train it "
                        "as in task_specs/glue.yaml)")
    if expected and sorted(info.labels) != sorted(expected):
        raise UserError(f"task {info.name!r}", f"its labels {info.labels} are not the "
                        f"leaderboard's {list(expected)}; train it with the labels of "
                        "task_specs/glue.yaml")


def _test_spec(checkpoint: Path, tasks: list[str], data_dir: str | Path | None) -> Spec:
    """The checkpoint's spec with complete test splits, its files under `data_dir` if given (a
    saved spec keeps its files relative to the data_dir of training)."""
    from mtdnn.checkpoint import read_spec

    # The leaderboard needs every test row: a max_eval_examples used for quick dev runs is lifted.
    return read_spec(checkpoint, [f"tasks.{t}.max_eval_examples=null" for t in tasks], data_dir)


def _diagnostic_spec(spec: Spec, diagnostic: Path) -> Spec:
    """A one-task spec reading GLUE's diagnostic set (index, sentence1, sentence2) as MNLI's test
    split: the leaderboard's AX.tsv is MNLI's head applied to it."""
    from mtdnn.spec import FileSource

    task = dataclasses.replace(spec.task("mnli"), hub=None, max_eval_examples=None, files={
        "test": FileSource(path=str(diagnostic), text=("sentence1", "sentence2"), id="index")})
    return dataclasses.replace(spec, tasks=(task,))


def _predict_lines(model: MultiTaskModel, task: str, rows: Rows, batch_size: int) -> list[str]:
    """`id<TAB>prediction` per test row, in file order."""
    from mtdnn.evaluation import logits_of, predictions
    from mtdnn.features import tokenize

    info = model.tasks[task]
    dataset = tokenize(rows, model.tokenizer, model.max_seq_length, for_training=False)
    values = predictions(info.type, logits_of(model, task, dataset, batch_size))
    if info.type == "classification":
        predictions = [info.labels[int(v)] for v in values]
    else:  # STS-B: the leaderboard's scale is [0, 5]; a regression head can overshoot it
        low, high = STSB_RANGE
        predictions = [f"{min(max(float(v), low), high):.3f}" for v in values]
    assert len(predictions) == len(rows.ids), "a test row was lost"
    return [f"{i}\t{p}" for i, p in zip(rows.ids, predictions, strict=True)]
