"""Hostile and malformed input, one table row per case, through the `mtdnn` command (mtdnn/cli.py).

The rule every case checks: bad input gets one clear message naming the file, the row or key, the
value and the fix, on stderr as `error: ...`, with exit status 2 and no traceback; and `train`
writes nothing to its output directory before the input is known to be good.

Each case writes its bad file(s), spec or checkpoint under its own tmp_path and returns the argv of
one command; `main(argv)` runs in-process (the CLI's code path, minus an interpreter start). The
checkpoint cases copy one tiny checkpoint trained once for the module and damage the copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtdnn.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

# A small labelled pair task: words of the tiny tokenizer's vocabulary, both labels present.
TRAIN_TSV = "s1\ts2\tlabel\n" + "".join(
    f"{a}\t{b}\t{label}\n" for a, b, label in [
        ("the cat sat", "a cat sat", "a"), ("the dog ran", "a man ran", "b"),
        ("she has two", "he has two", "a"), ("the sun is up", "it is night", "b"),
        ("we go home", "they go home", "a"), ("my old house", "a new car", "b")])
DEV_TSV = "s1\ts2\tlabel\nthe cat ran\ta cat ran\ta\nthe sea is big\tit is small\tb\n"


@dataclass
class Ctx:
    """Where a case writes: `data` (the spec's data_dir, holding good train.tsv and dev.tsv),
    `out` (the spec's output_dir, which must not exist after a refused `train`)."""

    tmp: Path
    tiny_bert: str
    trained: Path  # a finished run: best/, checkpoints/step-0000001/ (do not modify: copy it)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def out(self) -> Path:
        return self.tmp / "run"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def raw_spec(self, text: str, name: str = "spec.yaml") -> str:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def spec(self, task: dict | None = None, *, train: dict | None = None, **top: Any) -> str:
        """The tiny-run spec: task `pair` over data/train.tsv and dev.tsv. `task` entries replace
        the task's (None removes one), `train` entries the run's, `top` the top-level keys."""
        pair: dict[str, Any] = {"type": "classification", "text": ["s1", "s2"],
                                "labels": ["a", "b"],
                                "files": {"train": "train.tsv", "dev": "dev.tsv"}}
        pair.update(task or {})
        settings = {"max_steps": 2, "batch_size": 4, "report_to": ["none"], **(train or {})}
        data = {"encoder": self.tiny_bert, "output_dir": str(self.out), "data_dir": str(self.data),
                "max_seq_length": 32, "train": settings,
                "tasks": {"pair": {k: v for k, v in pair.items() if v is not None}}, **top}
        return self.raw_spec(yaml.safe_dump(data, sort_keys=False))

    def checkpoint(self) -> Path:
        """A copy of the trained run's best/ checkpoint, safe to damage."""
        path = self.tmp / "ckpt"
        shutil.copytree(self.trained / "best", path)
        return path

    def resumable(self) -> Path:
        path = self.tmp / "step"
        shutil.copytree(next((self.trained / "checkpoints").glob("step-*")), path)
        return path


@dataclass
class Case:
    name: str
    setup: Callable[[Ctx], list[str]]  # writes the input, returns the argv
    expect: list[str]  # fragments of stderr; <tmp>, <data> stand for the case's folders
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into <data> first
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards


def _predict(c: Ctx, name: str, content: str | None, task: str = "pair") -> list[str]:
    path = c.file(name, content) if content is not None else c.data / name
    return ["predict", str(c.checkpoint()), "--task", task, "--input", str(path), "--output",
            str(c.tmp / "predictions.jsonl")]


def _loop(c: Ctx) -> list[str]:
    c.raw_spec("include: [b.yaml]\nseed: 1\n", "a.yaml")
    c.raw_spec("include: [a.yaml]\nseed: 2\n", "b.yaml")
    return ["validate", str(c.tmp / "a.yaml")]


def _regression(c: Ctx, label: str) -> list[str]:
    c.file("scores.tsv", f"s1\ts2\tscore\nthe cat\ta cat\t3.5\nthe dog\ta man\t{label}\n")
    return ["train", c.spec({"type": "regression", "labels": None, "label": "score",
                             "files": {"train": "scores.tsv"}})]


def _jsonl_label(c: Ctx, value: Any) -> list[str]:
    rows = [{"s1": "the cat", "s2": "a cat", "label": "a"},
            {"s1": "the dog", "s2": "a man", "label": value}]
    c.file("train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return ["train", c.spec({"files": {"train": "train.jsonl"}})]


def _damaged(c: Ctx, damage: Callable[[Path], None]) -> list[str]:
    ckpt = c.checkpoint()
    damage(ckpt)
    return ["evaluate", str(ckpt)]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _state(c: Ctx, text: str | None = None, truncate: str | None = None) -> list[str]:
    """`train --resume` from a copy of the resumable checkpoint: with this trainer_state.json,
    with this file of accelerate/ truncated, or (neither given) without accelerate/."""
    step = c.resumable()
    if text is not None:
        (step / "trainer_state.json").write_text(text, encoding="utf-8")
    elif truncate is not None:
        _truncate(step / "accelerate" / truncate)
    else:
        shutil.rmtree(step / "accelerate")
    return ["train", c.spec(), "--resume", str(step)]


def _ranking(c: Ctx) -> list[str]:
    c.file("qa.tsv", "q\tanswer\tlabel\nwho ran\tthe dog ran\tno\nwho ran\tthe man sat\tno\n"
                     "who sat\tthe cat sat\tyes\nwho sat\tthe sun is up\tno\n")
    return ["train", c.spec({"type": "ranking", "text": ["q", "answer"], "labels": None,
                             "files": {"train": "qa.tsv"}})]


def _output_dir_file(c: Ctx) -> list[str]:
    c.tmp.joinpath("taken").write_text("a file, not a folder\n", encoding="utf-8")
    return ["train", c.spec(output_dir=str(c.tmp / "taken"))]


CASES = [
    # ---- the spec file -------------------------------------------------------------------------
    Case("yaml that does not parse",
         lambda c: ["validate", c.raw_spec("encoder: [unclosed\ntasks: {}\n")],
         ["<tmp>/spec.yaml", "not valid YAML at line 2, column 6: expected ',' or ']', but got ':'",
          "quote a value"]),
    Case("a top-level list",
         lambda c: ["validate", c.raw_spec("- encoder: x\n- tasks: {}\n")],
         ["<tmp>/spec.yaml", "expected a mapping at the top level (keys such as encoder:, tasks:), "
          "got a list"]),
    Case("an empty spec",
         lambda c: ["validate", c.raw_spec("")],
         ["<tmp>/spec.yaml", "expected a mapping at the top level", "the file is empty"]),
    Case("a spec that is not UTF-8",
         lambda c: ["validate", str(c.data / "latin1.yaml")],
         ["<data>/latin1.yaml", "line 2: byte 0xe9 is not UTF-8", "save it as UTF-8"],
         files={"latin1.yaml": "seed: 1\n# caf\xe9\n".encode("latin-1")}),
    Case("a spec path that is a directory",
         lambda c: ["validate", str(c.data)],
         ["<data>: ", "is a directory, not a spec file", "e.g. task_specs/demo.yaml"]),
    Case("unknown key, did you mean",
         lambda c: ["validate", c.spec(train={"max_step": 2})],
         ["train.max_step: unknown key 'max_step'; did you mean 'max_steps'?"]),
    Case("wrong type",
         lambda c: ["validate", c.spec(train={"batch_size": "many"})],
         ["train.batch_size: expected an integer, got 'many'"]),
    Case("a key twice",
         lambda c: ["train", c.raw_spec(Path(c.spec()).read_text() + "train: {max_steps: 5}\n")],
         ["'train' appears twice in one mapping (lines", "merge the two into one"]),
    Case("yes where a string label is meant",
         lambda c: ["validate", c.raw_spec(
             Path(c.spec()).read_text().replace("- a\n    - b\n", "- yes\n    - no\n"))],
         ["tasks.pair.labels[0]: expected a string, got True", "quote it"]),
    Case("an override that is not key=value",
         lambda c: ["train", c.spec(), "train.max_steps"],
         ["override 'train.max_steps' is not key=value", "train.learning_rate=3e-5"]),
    Case("an override into a non-mapping",
         lambda c: ["train", c.spec(), "train.max_steps.value=3"],
         ["override 'train.max_steps.value=3': 'train.max_steps' is not a mapping (it is 2)",
          "set it whole with train.max_steps=VALUE"]),
    Case("include of a missing file",
         lambda c: ["validate", c.raw_spec("include: [nope.yaml]\nseed: 1\n")],
         ["<tmp>/nope.yaml", "spec file not found (included from <tmp>/spec.yaml)"]),
    Case("include of something that is not a file name",
         lambda c: ["validate", c.raw_spec("include: {glue: 1}\nseed: 1\n")],
         ["<tmp>/spec.yaml", "include: expected a spec file or a list of them, got {'glue': 1}",
          "e.g. include: [glue.yaml, wikiqa.yaml]"]),
    Case("an include loop", _loop,
         ["include loop: <tmp>/a.yaml -> <tmp>/b.yaml -> <tmp>/a.yaml (remove one of these "
          "includes)"]),
    Case("data_dir that is a file",
         lambda c: ["train", c.spec(data_dir=str(c.file("train.tsv", TRAIN_TSV)))],
         ["data_dir: <data>/train.tsv is a file, not a directory (set it to the folder that "
          "holds"]),
    Case("a task file path that is a directory",
         lambda c: ["train", c.spec({"files": {"train": "RTE"}})],
         ["tasks.pair.files.train: <data>/RTE is a directory, not a data file",
          "e.g. RTE/train.tsv"],
         files={"RTE/train.tsv": TRAIN_TSV}),
    Case("--tasks naming an unknown task",
         lambda c: ["train", c.spec(), "--tasks", "pairs"],
         ["--tasks: unknown task 'pairs'; did you mean 'pair'? (known: pair)"]),
    Case("max_train_examples: 0",
         lambda c: ["train", c.spec({"max_train_examples": 0})],
         ["tasks.pair.max_train_examples: must be >= 1 or null, got 0"]),
    Case("max_train_examples: -1",
         lambda c: ["train", c.spec({"max_train_examples": -1})],
         ["tasks.pair.max_train_examples: must be >= 1 or null, got -1"]),
    Case("report_to: [tensorbord]",
         lambda c: ["train", c.spec(train={"report_to": ["tensorbord"]})],
         ["train.report_to[0]: 'tensorbord' is not valid; did you mean 'tensorboard'?"]),
    Case("an unknown metric",
         lambda c: ["train", c.spec({"metrics": ["acuracy"]})],
         ["tasks.pair.metrics", "acuracy", "accuracy"]),
    Case("output_dir that is an existing file", _output_dir_file,
         ["output_dir: <tmp>/taken is a file, not a folder", "e.g. runs/my-run"]),
    Case("output_dir under a file",
         lambda c: ["train", c.spec(output_dir=str(c.file("train.tsv", TRAIN_TSV) / "run"))],
         ["output_dir: <data>/train.tsv is a file (in <data>/train.tsv/run), not a folder"]),
    Case("no tasks",
         lambda c: ["train", c.raw_spec(f"encoder: {c.tiny_bert}\ntasks: {{}}\n")],
         ["tasks: no tasks: add at least one under `tasks:`"]),
    Case("three text columns",
         lambda c: ["train", c.spec({"text": ["s1", "s2", "label"]})],
         ["tasks.pair.text: expected 1 or 2 text columns, got 3"]),
    Case("an override out of range",
         lambda c: ["train", c.spec(), "train.batch_size=0"],
         ["train.batch_size: must be > 0, got 0"]),
    Case("a NUL byte in the spec",
         lambda c: ["validate", c.raw_spec("seed: 1\nx: \x00\n")],
         ["<tmp>/spec.yaml", "line 2: character '\\x00' is not allowed in YAML"]),
    # ---- the encoder ---------------------------------------------------------------------------
    Case("max_seq_length longer than the position table",
         lambda c: ["train", c.spec(max_seq_length=512)],
         ["max_seq_length: 512 is longer than the encoder takes (128 positions, bert)",
          "set max_seq_length <= 128"]),
    Case("an encoder path that does not exist",
         lambda c: ["train", c.spec(encoder=str(c.tmp / "no-such-model"))],
         ["encoder: directory not found: <tmp>/no-such-model (give a Hub model id"]),
    Case("a tokenizer path that does not exist",
         lambda c: ["train", c.spec(tokenizer=str(c.tmp / "nope"))],
         ["tokenizer: directory not found: <tmp>/nope", "give a Hub model id"]),
    Case("an encoder directory without config.json",
         lambda c: ["train", c.spec(encoder=str(c.data))],
         ["encoder: <data> is a directory without config.json, not a transformers model"]),
    Case("init_checkpoint that is not a checkpoint",
         lambda c: ["train", c.spec(init_checkpoint=str(c.data))],
         ["init_checkpoint: <data>: not an mtdnn checkpoint (no mtdnn.json)"]),
    # ---- data files ----------------------------------------------------------------------------
    Case("a file that is not UTF-8",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "line 8: byte 0xe9 is not UTF-8", "save the file as UTF-8"],
         files={"train.tsv": TRAIN_TSV.encode() + "caf\xe9\tx\ta\n".encode("latin-1")}),
    Case("a UTF-16 file",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "UTF-16", "save it as UTF-8"],
         files={"train.tsv": TRAIN_TSV.encode("utf-16")}),
    Case("an empty file",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "the file is empty (it needs a header row"],
         files={"train.tsv": ""}),
    Case("a header-only file",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "the file has a header and no rows", "fill the file, or remove "
          "tasks.pair.files.train"],
         files={"train.tsv": "s1\ts2\tlabel\n"}),
    Case("a row with a wrong field count",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "line 8: 2 fields, the header has 3", "stray tab"],
         files={"train.tsv": TRAIN_TSV + "only two\tfields\n"}),
    Case("an empty label",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "line 8: empty label (every train row needs one): fill it in or "
          "drop the row"],
         files={"train.tsv": TRAIN_TSV + "the cat\ta cat\t\n"}),
    Case("a label not in the list",
         lambda c: ["train", c.spec()],
         ["<data>/dev.tsv", "line 4: label 'c' is not in tasks.pair.labels ['a', 'b'] (add it "
          "to the list or fix the row)"],
         files={"dev.tsv": DEV_TSV + "the cat\ta cat\tc\n"}),
    Case("a regression label nan", lambda c: _regression(c, "nan"),
         ["<data>/scores.tsv", "line 3: label 'nan' is not a finite number", "fix the row"]),
    Case("a regression label inf", lambda c: _regression(c, "inf"),
         ["<data>/scores.tsv", "line 3: label 'inf' is not a finite number", "fix the row"]),
    Case("a regression label that is not a number", lambda c: _regression(c, "high"),
         ["<data>/scores.tsv", "line 3: label 'high' is not a number"]),
    Case("a JSON-lines label that is a list", lambda c: _jsonl_label(c, ["a"]),
         ["<data>/train.jsonl", 'line 2: label ["a"] (a JSON array) is not one value',
          "give each row a single label"]),
    Case("a JSON-lines label that is a boolean", lambda c: _jsonl_label(c, True),
         ["<data>/train.jsonl", "line 2: label true (a JSON boolean) reads as 'True'",
          "not in tasks.pair.labels", 'in a JSON string: "a"']),
    Case("a JSON-lines text that is null",
         lambda c: ["train", c.spec({"files": {"train": "t.jsonl"}})],
         ["<data>/t.jsonl", "line 1: text column 's2' is null, not text"],
         files={"t.jsonl": '{"s1": "the cat", "s2": null, "label": "a"}\n'}),
    Case("a bad JSON line",
         lambda c: ["train", c.spec({"files": {"train": "t.jsonl"}})],
         ["<data>/t.jsonl", "line 2: not valid JSON"],
         files={"t.jsonl": '{"s1": "the cat", "s2": "a cat", "label": "a"}\n{"s1": "the dog",\n'}),
    Case("a JSON line that is not an object",
         lambda c: ["train", c.spec({"files": {"train": "t.jsonl"}})],
         ["<data>/t.jsonl", "line 1: expected a JSON object", "got list"],
         files={"t.jsonl": '["the cat", "a cat", "a"]\n'}),
    Case("a NUL byte",
         lambda c: ["train", c.spec()],
         ["<data>/train.tsv", "line 8: a NUL byte", "save it as UTF-8 text"],
         files={"train.tsv": TRAIN_TSV + "the\x00cat\tx\ta\n"}),
    Case("an unterminated CSV quote",
         lambda c: ["train", c.spec({"files": {"train": "t.csv"}})],
         ["<data>/t.csv", "line 3: a quoted field opens here and is not closed", "close the "
          "quote"],
         files={"t.csv": 's1,s2,label\nthe cat,a cat,a\n"the dog,a man,b\nthe sun,it,a\n'}),
    Case("text after a closing CSV quote",
         lambda c: ["train", c.spec({"files": {"train": "t.csv"}})],
         ["<data>/t.csv", "line 2: text after the closing quote", "double the quotes"],
         files={"t.csv": 's1,s2,label\n"the" cat,a cat,a\n'}),
    Case("a JSON-lines label that is a huge number", lambda c: _jsonl_label(c, 10**400),
         ["<data>/train.jsonl", "line 2: label 100000", "... (a JSON number) reads as",
          "not in tasks.pair.labels"]),
    Case("a regression label that is a JSON boolean",
         lambda c: ["train", c.spec({"type": "regression", "labels": None,
                                     "files": {"train": "t.jsonl"}})],
         ["<data>/t.jsonl", "line 1: label true (a JSON boolean) is not a number (write the "
          "score as a number"],
         files={"t.jsonl": '{"s1": "a", "s2": "b", "label": true}\n'}),
    Case("named columns in a file read without a header",
         lambda c: ["train", c.spec({"files": {"train": {"path": "train.tsv", "header": False}}})],
         ["<data>/train.tsv", "tasks.pair.files.train.text: column 's1' given by name, but the "
          "file is read without a header", "give its 0-based position"]),
    Case("a column name the header lacks",
         lambda c: ["train", c.spec({"text": ["s1", "sentence2"]})],
         ["<data>/train.tsv", "tasks.pair.files.train.text: no column 'sentence2' in the header "
          "['s1', 's2', 'label']"]),
    Case("a ranking task whose labels never equal positive_label", _ranking,
         ["<data>/qa.tsv", "tasks.pair.positive_label is '1', but no training label equals it",
          "'no': 3", "set positive_label"]),
    # ---- checkpoints ---------------------------------------------------------------------------
    Case("evaluate on a directory that is not a checkpoint",
         lambda c: ["evaluate", str(c.data)],
         ["<data>: not an mtdnn checkpoint (no mtdnn.json)", "runs/tour/best"]),
    Case("evaluate on a plain transformers model",
         lambda c: ["evaluate", c.tiny_bert],
         ["not an mtdnn checkpoint", "looks like a plain transformers model", "`encoder:`"]),
    Case("evaluate on a half-written checkpoint",
         lambda c: _damaged(c, lambda p: (p / "heads.safetensors").unlink()),
         ["<tmp>/ckpt: incomplete checkpoint: heads.safetensors missing", "use a complete one"]),
    Case("evaluate on a checkpoint whose mtdnn.json is not JSON",
         lambda c: _damaged(c, lambda p: (p / "mtdnn.json").write_text("{tasks: [", "utf-8")),
         ["<tmp>/ckpt/mtdnn.json: not valid JSON", "damaged"]),
    Case("evaluate on a checkpoint whose registry lists a task without a type",
         lambda c: _damaged(c, lambda p: (p / "mtdnn.json").write_text(
             '{"tasks": [{"name": "pair"}], "task_embedding": false}', "utf-8")),
         ['<tmp>/ckpt/mtdnn.json: damaged registry: task entries without a name and type '
          '([{"name": "pair"}])', "use another checkpoint"]),
    Case("evaluate on a checkpoint whose config.json is not JSON",
         lambda c: _damaged(c, lambda p: (p / "config.json").write_text("{oops", "utf-8")),
         ["<tmp>/ckpt: cannot be loaded", "config.json' is not a valid JSON file",
          "use another one"]),
    Case("evaluate on a checkpoint whose encoder weights are truncated",
         lambda c: _damaged(c, lambda p: _truncate(p / "model.safetensors")),
         ["<tmp>/ckpt: cannot be loaded (a weights file (.safetensors) is damaged",
          "use another one"]),
    Case("evaluate on a checkpoint whose heads are truncated",
         lambda c: _damaged(c, lambda p: _truncate(p / "heads.safetensors")),
         ["<tmp>/ckpt/heads.safetensors: cannot be loaded (a weights file", "use another one"]),
    Case("evaluate on a checkpoint without spec.yaml",
         lambda c: _damaged(c, lambda p: (p / "spec.yaml").unlink()),
         ["<tmp>/ckpt: no spec.yaml", "runs/tour/best"]),
    Case("evaluate on a checkpoint whose spec.yaml is not YAML",
         lambda c: _damaged(c, lambda p: (p / "spec.yaml").write_text("a: [", "utf-8")),
         ["<tmp>/ckpt/spec.yaml", "not valid YAML at line 1"]),
    Case("evaluate a task the checkpoint lacks",
         lambda c: ["evaluate", str(c.checkpoint()), "--tasks", "pairs"],
         ["unknown task 'pairs'; did you mean 'pair'?"]),
    Case("evaluate a split the task does not have",
         lambda c: ["evaluate", str(c.checkpoint()), "--split", "test"],
         ["<tmp>/ckpt/spec.yaml", "tasks.pair: no 'test' split (it has ['train', 'dev']): use "
          "one of those, or add tasks.pair.files.test"]),
    Case("evaluate with a --data-dir that does not exist",
         lambda c: ["evaluate", str(c.checkpoint()), "--data-dir", str(c.tmp / "nope")],
         ["<tmp>/nope: data_dir (--data-dir): directory not found", "folder that holds"]),
    Case("train --resume on a directory that is not resumable",
         lambda c: ["train", c.spec(), "--resume", str(c.data)],
         ["<data>: not a resumable checkpoint (no trainer_state.json)"]),
    Case("train --resume with a corrupt trainer_state.json",
         lambda c: _state(c, '{"step": 1, "step_mo'),
         ["<tmp>/step/trainer_state.json: cannot be read", "resume from another checkpoint"]),
    Case("train --resume with a trainer state of the wrong types",
         lambda c: _state(c, '{"step": "x", "step_mode": "alternating", "step_state": {}}'),
         ["<tmp>/step/trainer_state.json: damaged trainer state (step: 'x')",
          "resume from another checkpoint"]),
    Case("train --resume with a state of another step mode",
         lambda c: _state(c, '{"step": 1, "step_mode": "joint", "step_state": {}}'),
         ["<tmp>/step: saved with train.step_mode=joint: resume it with that step mode"]),
    Case("train --resume with truncated model weights",
         lambda c: _state(c, truncate="model.safetensors"),
         ["<tmp>/step/accelerate: cannot be restored (Error while deserializing header",
          "resume from another checkpoint"]),
    Case("train --resume with a truncated optimizer state",
         lambda c: _state(c, truncate="optimizer.bin"),
         ["<tmp>/step/accelerate: cannot be restored (PytorchStreamReader failed",
          "the checkpoint is damaged"]),
    Case("train --resume without the accelerate/ state",
         lambda c: _state(c),
         ["<tmp>/step: incomplete resumable checkpoint: accelerate/", "missing",
          "resume from another checkpoint"]),
    Case("finetune a directory that is not a checkpoint",
         lambda c: ["finetune", str(c.data), "--task", "pair", "--output-dir", str(c.out)],
         ["<data>: not an mtdnn checkpoint"]),
    Case("finetune an unknown task",
         lambda c: ["finetune", str(c.checkpoint()), "--task", "pairs", "--output-dir",
                    str(c.out)],
         ["unknown task 'pairs'; did you mean 'pair'?", "--spec"]),
    Case("finetune with a bad override",
         lambda c: ["finetune", str(c.checkpoint()), "--task", "pair", "--output-dir", str(c.out),
                    "train.epochs=many"],
         ["<tmp>/ckpt/spec.yaml (finetune pair)", "train.epochs: expected a number, got 'many'"]),
    Case("finetune with a --spec that does not exist",
         lambda c: ["finetune", str(c.checkpoint()), "--task", "pair", "--output-dir", str(c.out),
                    "--spec", str(c.tmp / "nope.yaml")],
         ["<tmp>/nope.yaml", "spec file not found"]),
    Case("export an unknown task",
         lambda c: ["export", str(c.checkpoint()), "--task", "pairs", "--output",
                    str(c.tmp / "exported")],
         ["unknown task 'pairs'", "pair"], absent=["<tmp>/exported"]),
    Case("export into a directory that is not empty",
         lambda c: ["export", str(c.checkpoint()), "--task", "pair", "--output", str(c.data)],
         ["<data>: exists and is not an empty directory; give a new directory"]),
    # ---- predict inputs ------------------------------------------------------------------------
    Case("predict with an input row that is too short",
         lambda c: _predict(c, "in.tsv", "s1\ts2\nthe cat\ta cat\nthe dog\n"),
         ["<data>/in.tsv", "line 3: 1 fields, the header has 2"],
         absent=["<tmp>/predictions.jsonl"]),
    Case("predict with a bad JSON line",
         lambda c: _predict(c, "in.jsonl", '{"s1": "the cat", "s2": "a cat"}\n{"s1": \n'),
         ["<data>/in.jsonl", "line 2: not valid JSON"], absent=["<tmp>/predictions.jsonl"]),
    Case("predict with an input path that is a directory",
         lambda c: _predict(c, "", None),
         ["<data>", "is a directory, not a data file"], absent=["<tmp>/predictions.jsonl"]),
    Case("predict with an unknown task",
         lambda c: _predict(c, "in.tsv", "s1\ts2\nthe cat\ta cat\n", task="pairs"),
         ["unknown task 'pairs'; did you mean 'pair'?"], absent=["<tmp>/predictions.jsonl"]),
    Case("predict with an empty input file",
         lambda c: _predict(c, "in.tsv", ""),
         ["<data>/in.tsv", "the file is empty"], absent=["<tmp>/predictions.jsonl"]),
    Case("predict with the wrong number of --text-columns",
         lambda c: _predict(c, "in.tsv", "s1\ts2\nthe cat\ta cat\n") + ["--text-columns", "s1"],
         ["--text-columns", "reads 2 text column(s), got ['s1']"],
         absent=["<tmp>/predictions.jsonl"]),
]


@pytest.fixture(scope="module")
def trained(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with a best/ checkpoint and one resumable checkpoint."""
    c = Ctx(tmp_path_factory.mktemp("trained"), tiny_bert, Path())
    c.file("train.tsv", TRAIN_TSV)
    c.file("dev.tsv", DEV_TSV)
    assert main(["train", c.spec(train={"save_every": 1}), "--no-progress"]) == 0
    assert (c.out / "best" / "mtdnn.json").is_file()
    assert list((c.out / "checkpoints").glob("step-*/trainer_state.json"))
    return c.out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path_factory: pytest.TempPathFactory, tiny_bert: str,
                   trained: Path, capsys: pytest.CaptureFixture):
    # Not tmp_path: its name holds the case's name, which a fragment could match by accident.
    tmp_path = tmp_path_factory.mktemp("case")
    c = Ctx(tmp_path, tiny_bert, trained)
    for name, content in {"train.tsv": TRAIN_TSV, "dev.tsv": DEV_TSV, **case.files}.items():
        c.file(name, content)
    argv = case.setup(c)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err

    def paths(text: str) -> str:
        return text.replace("<data>", str(c.data)).replace("<tmp>", str(tmp_path))

    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for fragment in case.expect:
        assert paths(fragment) in err, f"{paths(fragment)!r} not in:\n{err}"
    if argv[0] in ("train", "finetune"):
        assert not c.out.exists(), f"{c.out} written before the input was known good"
    for path in case.absent:
        assert not Path(paths(path)).exists(), paths(path)


def test_the_table_has_distinct_cases():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def test_a_huge_field_is_not_an_error(tmp_path: Path, tiny_bert: str, capsys):
    """A field far over csv's default limit (131,072 characters) is text, not an error: it is
    truncated to max_seq_length by the tokenizer like any long text."""
    c = Ctx(tmp_path, tiny_bert, Path())
    huge = " ".join(["the cat sat"] * 60_000)  # ~720,000 characters
    c.file("train.tsv", TRAIN_TSV + f"{huge}\ta cat\ta\n")
    c.file("dev.tsv", DEV_TSV)
    spec = c.spec()
    assert main(["validate", spec]) == 0, capsys.readouterr().err
    assert "train 7, dev 2 rows" in capsys.readouterr().out
    assert main(["train", spec, "--no-progress"]) == 0, capsys.readouterr().err
    assert (c.out / "best" / "mtdnn.json").is_file()
