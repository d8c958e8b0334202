"""Tests of the task spec (mtdnn/spec/): YAML -> frozen dataclasses, all problems in one error."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SPECS, write_spec

from mtdnn import methods
from mtdnn.spec import (
    CHECKS,
    TASK_CHECKS,
    TRACKERS,
    SpecError,
    TaskSpec,
    TrainSpec,
    load_spec,
    save_spec,
    spec_from_dict,
)

SHIPPED = sorted(SPECS.glob("**/*.yaml"))

# Two tasks read from the Hub: no data file has to exist, so these specs test the loader alone.
BASE = """
encoder: tiny-encoder
tasks:
  rte:
    type: classification
    text: [sentence1, sentence2]
    labels: [entailment, not_entailment]
    hub: {path: nyu-mll/glue, name: rte}
  stsb:
    type: regression
    text: [sentence1, sentence2]
    hub: {path: nyu-mll/glue, name: stsb}
  cola:
    type: classification
    text: [sentence]
    labels: ["0", "1"]
    hub: {path: nyu-mll/glue, name: cola}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "base.yaml", BASE)


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return excinfo.value.problems


# --- every shipped spec --------------------------------------------------------------------------


def test_the_shipped_specs_are_found():
    # The glob recurses; this pins that it finds the specs at all (an empty list would pass below).
    assert {p.name for p in SHIPPED} >= {"demo.yaml", "tour.yaml", "glue.yaml", "wikiqa.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(SPECS)))
def test_shipped_spec_loads_for_the_hub(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MTDNN_GLUE_DIR", raising=False)
    monkeypatch.delenv("MTDNN_MORE_DIR", raising=False)
    spec = load_spec(path)
    assert spec.data_dir is None
    assert spec.tasks
    for task in spec.tasks:
        assert task.hub is not None and not spec.uses_files(task), task.name
        assert "train" in task.hub.splits


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(SPECS)))
def test_shipped_spec_loads_with_the_local_data(path: Path, glue: Path, more: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_GLUE_DIR", str(glue))
    monkeypatch.setenv("MTDNN_MORE_DIR", str(more))
    spec = load_spec(path)
    root = Path(spec.data_dir)  # GLUE's folder or the other data sets', as the spec says
    assert root in (glue.absolute(), more.absolute())
    for task in spec.tasks:
        assert spec.uses_files(task) and "train" in task.files, task.name
        for split, f in task.files.items():
            assert Path(f.path).is_file(), (task.name, split, f.path)
            assert Path(f.path).is_relative_to(root)


def test_tour_spec_selects_its_tasks_and_keeps_the_included_settings(monkeypatch):
    monkeypatch.delenv("MTDNN_GLUE_DIR", raising=False)
    spec = load_spec(SPECS / "tour.yaml")
    assert [t.name for t in spec.tasks] == ["rte", "mrpc", "stsb", "cola", "sst2", "wikiqa"]
    assert spec.encoder == "sentence-transformers/all-MiniLM-L6-v2"  # tour's, over glue.yaml's
    assert spec.train.learning_rate == 1e-4
    assert spec.task("sst2").max_train_examples == 4000  # merged into glue.yaml's sst2
    assert spec.task("sst2").labels == ("0", "1")  # kept from glue.yaml
    assert spec.task("wikiqa").type == "ranking"


def test_demo_spec_is_rte_with_the_mnli_helper_at_the_study_settings(monkeypatch):
    monkeypatch.delenv("MTDNN_GLUE_DIR", raising=False)
    spec = load_spec(SPECS / "demo.yaml")
    assert [t.name for t in spec.tasks] == ["rte", "mnli"]
    assert spec.encoder == "sentence-transformers/all-MiniLM-L6-v2"
    t = spec.train
    assert (t.learning_rate, t.batch_size, t.epochs, t.warmup_ratio, t.sampler) == \
        (1e-4, 32, 2, 0.1, "proportional")
    # from the Hub, MNLI is cut to the size of the local sample
    assert spec.task("mnli").max_train_examples == 10000
    assert spec.task("mnli").hub.splits["train"] == "train"


# --- overrides -----------------------------------------------------------------------------------


def test_override_scientific_notation_is_a_float(base: Path):
    # PyYAML reads `3e-5` (no dot) as a string.
    spec = load_spec(base, ["train.learning_rate=3e-5"])
    assert spec.train.learning_rate == 3e-5
    assert type(spec.train.learning_rate) is float


def test_scientific_notation_in_the_file_is_a_float(tmp_path: Path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", BASE + "train: {learning_rate: 2e-5}\n"))
    assert spec.train.learning_rate == 2e-5


def test_override_int_becomes_float(base: Path):
    spec = load_spec(base, ["tasks.rte.loss_weight=2"])
    assert spec.task("rte").loss_weight == 2.0
    assert type(spec.task("rte").loss_weight) is float
    assert spec.task("stsb").loss_weight == 1.0


def test_override_creates_new_nested_keys(base: Path):
    # The file has no `train:` mapping and rte's hub has no revision.
    spec = load_spec(base, ["train.max_steps=7", "tasks.rte.hub.revision=v1.0"])
    assert spec.train.max_steps == 7
    assert spec.train.batch_size == 32  # the other train settings keep their defaults
    assert spec.task("rte").hub.revision == "v1.0"
    assert spec.task("rte").hub.name == "rte"


def test_override_of_a_non_number_is_reported(base: Path):
    with pytest.raises(SpecError, match=re.escape(
            "train.learning_rate: expected a number, got 'fast'")):
        load_spec(base, ["train.learning_rate=fast"])


def test_override_errors(base: Path):
    with pytest.raises(SpecError, match=re.escape(
            "override 'train.batch_size' is not key=value, e.g. train.learning_rate=3e-5")):
        load_spec(base, ["train.batch_size"])
    with pytest.raises(SpecError, match="override 'encoder.name=x': 'encoder' is not a mapping"):
        load_spec(base, ["encoder.name=x"])


def test_tasks_subset_keeps_the_given_order(base: Path):
    spec = load_spec(base, tasks=["stsb", "rte"])
    assert [t.name for t in spec.tasks] == ["stsb", "rte"]


def test_tasks_subset_with_unknown_name(base: Path):
    with pytest.raises(SpecError, match=re.escape(
            "unknown task 'rtee'; did you mean 'rte'? (known: cola, rte, stsb)")):
        load_spec(base, tasks=["rtee"])


def test_use_tasks_selects_and_orders_and_the_argument_wins(tmp_path: Path):
    path = write_spec(tmp_path / "s.yaml", BASE + "use_tasks: [cola, rte]\n")
    assert [t.name for t in load_spec(path).tasks] == ["cola", "rte"]
    assert [t.name for t in load_spec(path, tasks=["stsb"]).tasks] == ["stsb"]
    bad = write_spec(tmp_path / "bad.yaml", BASE + "use_tasks: cola\n")
    with pytest.raises(SpecError, match="use_tasks: expected a list of task names, got 'cola'"):
        load_spec(bad)


def test_include_merges_mappings_key_by_key_and_replaces_lists(tmp_path: Path):
    write_spec(tmp_path / "base.yaml", BASE + """
output_dir: runs/base
train:
  batch_size: 16
  learning_rate: 1.0e-4
  report_to: [tensorboard, wandb]
""")
    (tmp_path / "sub").mkdir()
    top = write_spec(tmp_path / "sub" / "top.yaml", """
include: ../base.yaml   # relative to this file; a single name needs no list
output_dir: runs/top
train:
  batch_size: 8
  report_to: [none]
tasks:
  rte: {loss_weight: 3}
  cola: {labels: [bad, good]}
""")
    spec = load_spec(top)
    assert spec.output_dir == "runs/top"
    assert spec.train.batch_size == 8
    assert spec.train.learning_rate == 1e-4  # kept from the included file
    assert spec.train.report_to == ("none",)  # a list is replaced, not extended
    rte = spec.task("rte")
    assert (rte.loss_weight, rte.type, rte.labels) == (3.0, "classification",
                                                      ("entailment", "not_entailment"))
    assert spec.task("cola").labels == ("bad", "good")
    assert [t.name for t in spec.tasks] == ["rte", "stsb", "cola"]


def test_later_includes_win_over_earlier_ones(tmp_path: Path, base: Path):
    write_spec(tmp_path / "a.yaml", "seed: 1\nmax_seq_length: 64\n")
    write_spec(tmp_path / "b.yaml", "seed: 2\n")
    top = write_spec(tmp_path / "top.yaml", "include: [base.yaml, a.yaml, b.yaml]\n")
    spec = load_spec(top)
    assert (spec.seed, spec.max_seq_length) == (2, 64)


def test_include_loop_is_an_error(tmp_path: Path):
    write_spec(tmp_path / "a.yaml", "include: [b.yaml]\nencoder: x\n")
    write_spec(tmp_path / "b.yaml", "include: [a.yaml]\n")
    with pytest.raises(SpecError, match="a.yaml: 1 problem\\(s\\):\n  - include loop"):
        load_spec(tmp_path / "a.yaml")
    write_spec(tmp_path / "self.yaml", "include: self.yaml\n")
    with pytest.raises(SpecError, match=r"include loop: .*self.yaml -> .*self.yaml"):
        load_spec(tmp_path / "self.yaml")
    with pytest.raises(SpecError, match=r"include loop: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_spec(tmp_path / "a.yaml")


def test_missing_include_names_the_including_file(tmp_path: Path):
    top = write_spec(tmp_path / "top.yaml", "include: [nope.yaml]\n")
    with pytest.raises(SpecError, match=re.escape(f"spec file not found (included from "
                                                  f"{top.resolve()})")):
        load_spec(top)


def test_a_key_given_twice_is_an_error_not_a_silent_replacement(tmp_path: Path):
    path = write_spec(tmp_path / "s.yaml", BASE + "train:\n  epochs: 2\n"
                      "output_dir: out\ntrain:\n  learning_rate: 3.0e-5\n")
    first = BASE.count("\n") + 1
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.problems == [f"'train' appears twice in one mapping (lines {first} and "
                                f"{first + 3}): merge the two into one"]
    # The same key in different mappings is fine, and `<<:` merge keys may still be overridden.
    ok = write_spec(tmp_path / "ok.yaml", BASE + "defaults: &d {epochs: 2, batch_size: 8}\n"
                    "train:\n  <<: *d\n  epochs: 3\n")
    with pytest.raises(SpecError, match="defaults"):  # an unknown top-level field, not a twin
        load_spec(ok)
    write_spec(ok, BASE + "train:\n  <<: {epochs: 2, batch_size: 8}\n  epochs: 3\n")
    assert (load_spec(ok).train.epochs, load_spec(ok).train.batch_size) == (3, 8)


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_T_OUT", "/scratch/out")
    monkeypatch.setenv("MTDNN_T_EMPTY", "")
    monkeypatch.setenv("MTDNN_T_TOK", "my-tokenizer")
    monkeypatch.delenv("MTDNN_T_UNSET", raising=False)
    path = write_spec(tmp_path / "s.yaml", BASE + """
output_dir: ${MTDNN_T_OUT}/run-${MTDNN_T_UNSET:-1}
data_dir: ${MTDNN_T_UNSET:-}
revision: ${MTDNN_T_EMPTY}
tokenizer: ${MTDNN_T_TOK:-other}
train: {scheduler: "${MTDNN_T_EMPTY:-cosine}"}
""")
    spec = load_spec(path)
    assert spec.output_dir == "/scratch/out/run-1"
    assert spec.data_dir is None  # an empty expansion is None, not ""
    assert spec.revision is None
    assert spec.tokenizer == "my-tokenizer"  # a set variable wins over its default
    assert spec.train.scheduler == "cosine"  # as in a shell, `:-` also replaces an empty value


# --- one error lists every problem -------------------------------------------------------------


def test_one_error_lists_every_problem(tmp_path: Path):
    (tmp_path / "dev.tsv").write_text("s\tlabel\na\t1\n", encoding="utf-8")
    path = write_spec(tmp_path / "bad.yaml", """
encoder: x
trian: {epochs: 1}
train:
  batch_size: abc
  sampler: proportionl
tasks:
  one:
    type: classification
    text: [s]
    labels: ["yes"]
    hub: {path: a/b}
  rank:
    type: ranking
    text: [q]
    hub: {path: a/b}
  metric:
    type: classification
    text: [s]
    labels: ["0", "1"]
    metrics: [acuracy]
    hub: {path: a/b}
  typo:
    type: classification
    text: [s]
    lables: ["0", "1"]
    hub: {path: a/b}
  missing:
    type: regression
    text: [s]
    files: {train: nope.tsv}
  notrain:
    type: regression
    text: [s]
    files: {dev: dev.tsv}
""")
    with pytest.raises(SpecError, match=re.escape(f"{path}: 10 problem(s):\n  - ")) as e:
        load_spec(path)
    problems = problems_of(e)
    expected = [
        "tasks.one.labels: a classification task needs a list of at least 2 labels, "
        "e.g. labels: [entailment, not_entailment]",
        "tasks.rank.text: a ranking task needs two columns: [query, candidate]",
        "tasks.metric.metrics: unknown metric 'acuracy'; did you mean 'accuracy'? valid metrics: ",
        "tasks.typo.lables: unknown key 'lables'; did you mean 'labels'? (known: ",
        # ... and, as the label list was not given under its name, it is missing:
        "tasks.typo.labels: a classification task needs a list of at least 2 labels",
        "tasks.notrain: no train split: add files.train or hub.splits.train",
        "trian: unknown key 'trian'; did you mean 'train'? (known: ",
        "train.batch_size: expected an integer, got 'abc'",
        "train.sampler: 'proportionl' is not valid; did you mean 'proportional'? (choose one "
        "of: proportional, uniform, temperature, main_ratio, annealed)",
        f"tasks.missing.files.train: file not found: {tmp_path / 'nope.tsv'} (fix the path, or "
        "set data_dir to the folder it is relative to)",
    ]
    assert len(problems) == len(expected), problems
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    # The message shows them all, one line each.
    for p in problems:
        assert f"\n  - {p}" in str(e.value)


def test_wrong_types_name_key_value_and_expected_type(base: Path):
    with pytest.raises(SpecError) as e:
        load_spec(base, ["train.group_by_length=maybe", "tasks.rte.text={a: 1}",
                         "train.adam_betas=[0.9]", "seed=1.5"])
    assert sorted(problems_of(e)) == [
        "seed: expected an integer, got 1.5",
        "tasks.rte.text: expected a list, got {'a': 1}",
        "train.adam_betas: expected a list of 2 values, got [0.9]",
        "train.group_by_length: expected true or false, got 'maybe'",
    ]
    with pytest.raises(SpecError, match=re.escape("max_seq_length: must be >= 8, got 4")):
        load_spec(base, ["max_seq_length=4"])


@pytest.mark.parametrize("tasks,problems", [
    ({}, ["tasks: no tasks: add at least one under `tasks:`"]),
    (None, ["tasks: expected a mapping of task name -> task settings, e.g. "
            "tasks: {rte: {type: classification, ...}}"]),
    # A task that is wrong is reported as such, not as "no tasks".
    ({"a": {"type": "regression", "text": ["s"], "hub": {"path": "p"}, "dropout": "hi"}},
     ["tasks.a.dropout: expected a number, got 'hi'"]),
    ({"a b": {}}, ["tasks.a b: task names use letters, digits, '_' and '-' only"]),
])
def test_task_list_problems(tasks, problems: list[str]):
    with pytest.raises(SpecError) as e:
        spec_from_dict({"encoder": "x", "tasks": tasks}, source="inline")
    assert problems_of(e) == problems
    assert str(e.value).startswith(f"inline: {len(problems)} problem(s):")


def test_missing_data_dir_is_reported(base: Path, tmp_path: Path):
    with pytest.raises(SpecError, match=re.escape(
            f"data_dir: directory not found: {tmp_path / 'nowhere'} (set it")):
        load_spec(base, [f"data_dir={tmp_path / 'nowhere'}"])


def test_unknown_task_name_in_lookup():
    spec = spec_from_dict(yaml.safe_load(BASE))
    with pytest.raises(KeyError, match=re.escape("unknown task 'cloa'; did you mean 'cola'?")):
        spec.task("cloa")


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_glue", [False, True])
def test_to_dict_round_trip(with_glue: bool, request: pytest.FixtureRequest,
                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    if with_glue:
        monkeypatch.setenv("MTDNN_GLUE_DIR", str(request.getfixturevalue("glue")))
    else:
        monkeypatch.delenv("MTDNN_GLUE_DIR", raising=False)
    spec = load_spec(SPECS / "tour.yaml")
    data = spec.to_dict()
    assert list(data["tasks"]) == ["rte", "mrpc", "stsb", "cola", "sst2", "wikiqa"]
    assert "source" not in data
    assert spec_from_dict(data) == spec
    # Plain YAML-able data: the saved file loads back to the same spec.
    save_spec(spec, tmp_path / "saved.yaml")
    assert load_spec(tmp_path / "saved.yaml") == spec


# --- the `mtdnn validate` command -----------------------------------------------------------------


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtdnn.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_cli_validate_bad_spec_exits_2_without_traceback(tmp_path: Path):
    path = write_spec(tmp_path / "bad.yaml", BASE + "trian: {}\ntrain: {sampler: proportionl}\n")
    r = run_cli("validate", str(path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.startswith(f"error: {path}: 2 problem(s):\n")
    assert "  - trian: unknown key 'trian'; did you mean 'train'?" in r.stderr
    assert "  - train.sampler: 'proportionl' is not valid; did you mean 'proportional'?" in r.stderr


def wikiqa_rows_of_first_questions(path: Path, n: int) -> int:
    with open(path, encoding="utf-8", newline="") as f:
        questions: dict[str, int] = {}
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            questions[row[0]] = questions.get(row[0], 0) + 1
    return sum(list(questions.values())[:n])


def test_cli_validate_tour_prints_the_row_counts(glue: Path):
    r = run_cli("validate", "task_specs/tour.yaml", MTDNN_GLUE_DIR=str(glue))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    counts = {m[0]: m[1] for m in re.findall(r"^  (\w+) +\w+ +files: (.*) rows$", r.stdout, re.M)}
    limit = load_spec(SPECS / "tour.yaml").task("wikiqa").max_train_examples
    wikiqa_train = wikiqa_rows_of_first_questions(glue / "WikiQA" / "train.tsv", limit)
    assert counts == {  # the README's table; sst2 and wikiqa train are cut by the tour's limits
        "rte": "train 2490, dev 277, test 3000",
        "mrpc": "train 3668, dev 408, test 1725",
        "stsb": "train 5749, dev 1500, test 1379",
        "cola": "train 8551, dev 1043, test 1063",
        "sst2": "train 4000, dev 872, test 1821",
        "wikiqa": f"train {wikiqa_train}, dev 1126, test 2341",
    }
    assert r.stdout.rstrip().endswith("all rows read and checked")


def test_saved_spec_keeps_files_relative_so_a_new_data_dir_re_roots_them(tmp_path, glue):
    import shutil

    from mtdnn.spec import save_spec

    spec = load_spec(SPECS / "glue.yaml", [f"data_dir={glue}"], tasks=["rte"])
    save_spec(spec, tmp_path / "saved.yaml")
    copy = tmp_path / "copy"
    shutil.copytree(glue / "RTE", copy / "RTE")
    moved = load_spec(tmp_path / "saved.yaml", [f"data_dir={copy}"])
    assert moved.task("rte").files["train"].path == str(copy / "RTE" / "train.tsv")
    assert load_spec(tmp_path / "saved.yaml") == spec


def test_ranking_batches_count_groups_so_a_batch_holds_about_batch_size_sequences():
    spec = load_spec(SPECS / "tour.yaml", ["train.batch_size=32", "tasks.rte.batch_size=16"])
    assert spec.batch_size(spec.task("wikiqa")) == 32 // 8  # max_candidates 8
    assert spec.batch_size(spec.task("rte")) == 16
    assert spec.batch_size(spec.task("mrpc")) == 32
    with pytest.raises(SpecError, match=r"tasks.rte.batch_size: must be >= 1 or null, got 0"):
        load_spec(SPECS / "tour.yaml", ["tasks.rte.batch_size=0"])


def test_a_bad_list_item_is_reported_once(base: Path):
    # YAML reads yes/no as booleans: the message names the item, and no follow-up check sees
    # a half-converted list.
    with pytest.raises(SpecError) as err:
        load_spec(base, ["tasks.rte.labels=[yes, no]"])
    hint = " (YAML reads yes/no/on/off as true/false: quote it, e.g. 'yes')"
    assert err.value.problems == [f"tasks.rte.labels[0]: expected a string, got True{hint}",
                                  f"tasks.rte.labels[1]: expected a string, got False{hint}"]


def test_sampling_schedule_settings_are_checked(base: Path):
    with pytest.raises(SpecError) as err:
        load_spec(base, ["train.sampler=main_ratio"])
    assert problems_of(err) == ["train.main_task: sampler=main_ratio needs the main task: set "
                                "train.main_task to one of rte, stsb, cola"]
    with pytest.raises(SpecError) as err:
        load_spec(base, ["train.sampler=annealed", "train.step_mode=joint"])
    assert problems_of(err) == ["train.sampler: 'annealed' needs train.step_mode=alternating (it "
                                "picks one task per step; joint steps run every task each step): "
                                "set step_mode: alternating, or use proportional"]
    spec = load_spec(base, ["train.sampler=main_ratio", "train.main_task=rte",
                            "train.main_ratio=0.5"])
    assert (spec.train.main_task, spec.train.main_ratio) == ("rte", 0.5)


# --- the multi-task methods, checked from their table (mtdnn/methods.py) -------------------------


def test_the_spec_accepts_every_method_of_the_table_and_its_settings_are_fields():
    hints = typing.get_type_hints(TrainSpec)
    train_fields = {f.name: f for f in dataclasses.fields(TrainSpec)}
    task_fields = {f.name for f in dataclasses.fields(TaskSpec)}
    for kind in methods.KINDS:
        assert typing.get_args(hints[kind]) == methods.names(kind), kind
        assert train_fields[kind].default in methods.names(kind)
    for m in methods.METHODS:
        assert set(m.settings) <= set(train_fields), m.name
        assert set(m.task_settings) <= task_fields, m.name
        assert set(m.requires) <= set(methods.KINDS) - {m.kind}, m.name
        for other, allowed in m.requires.items():
            assert set(allowed) <= set(methods.names(other)), m.name
            assert m.why, f"{m.name} requires {other} but does not say why"
    # Every method name loads (with what it requires; main_ratio also needs its main task).
    for m in methods.METHODS:
        overrides = [f"train.{m.kind}={m.name}", "train.main_task=rte" if m.name == "main_ratio"
                     else "seed=1", *(f"train.{k}={v[0]}" for k, v in m.requires.items())]
        spec = spec_from_dict(_with(overrides))
        assert getattr(spec.train, m.kind) == m.name


def _with(overrides: list[str]) -> dict:
    from mtdnn.spec import set_override

    data = yaml.safe_load(BASE)
    for o in overrides:
        set_override(data, o)
    return data


def test_checks_are_flat_lists_of_functions():
    for check in (*CHECKS, *TASK_CHECKS):
        assert inspect.isfunction(check) and check.__name__.startswith("check_"), check
        assert len(inspect.signature(check).parameters) == 2, check.__name__
    assert len(set(CHECKS)) == len(CHECKS) and len(set(TASK_CHECKS)) == len(TASK_CHECKS)


def _unmet_requirements() -> list[tuple[methods.Method, str, str]]:
    """(method, other kind, a choice of it the method does not work with), for every requirement
    of the table."""
    return [(m, other, name) for m in methods.METHODS for other, allowed in m.requires.items()
            for name in methods.names(other) if name not in allowed]


@pytest.mark.parametrize("method,other,bad", _unmet_requirements(),
                         ids=lambda x: x.name if isinstance(x, methods.Method) else x)
def test_every_requirement_of_the_table_is_checked(method: methods.Method, other: str, bad: str):
    met = [f"train.{k}={v[0]}" for k, v in method.requires.items() if k != other]
    extra = ["train.main_task=rte"] if method.name == "main_ratio" else []
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with([f"train.{method.kind}={method.name}", f"train.{other}={bad}",
                              *met, *extra]))
    (problem,) = problems_of(e)
    if (other, bad) == ("sharing", "soft"):  # said in soft sharing's words (tests/test_sharing.py)
        assert problem == (f"train.{method.kind}: '{method.name}' works on the parameters every "
                           "task shares; with sharing=soft no parameter is shared: use one of them")
    else:
        assert problem.startswith(f"train.{method.kind}: '{method.name}' needs train.{other}="
                                  f"{' or '.join(method.requires[other])} ({method.why}): set "
                                  f"{other}: {method.requires[other][0]}")


def test_requirement_messages_name_the_fix_and_the_methods_that_fit():
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.loss_weighting=gradnorm", "train.gradient_surgery=pcgrad"]))
    why = methods.method("loss_weighting", "gradnorm").why
    assert problems_of(e) == [
        f"train.loss_weighting: 'gradnorm' needs train.step_mode=joint ({why}): set step_mode: "
        "joint, or use static, uncertainty or dwa",
        f"train.gradient_surgery: 'pcgrad' needs train.step_mode=joint "
        f"({methods.method('gradient_surgery', 'pcgrad').why}): set step_mode: joint, or "
        "gradient_surgery: none",
    ]
    # Two unmet requirements of one method are two problems.
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.gradient_surgery=cagrad", "train.sharing=soft"]))
    assert [p.split(":")[0] for p in problems_of(e)] == ["train.gradient_surgery"] * 2
    assert "needs train.step_mode=joint" in problems_of(e)[0]
    assert "with sharing=soft no parameter is shared" in problems_of(e)[1]


def test_max_tasks_comes_from_the_table(tmp_path: Path):
    limited = [m for m in methods.METHODS if m.max_tasks is not None]
    assert [m.name for m in limited] == ["cagrad"]
    n = limited[0].max_tasks + 1
    tasks = "\n".join(f"  t{i}: {{type: regression, text: [a], hub: {{path: x}}}}"
                      for i in range(n))
    path = write_spec(tmp_path / "s.yaml", f"encoder: e\ntasks:\n{tasks}\n")
    with pytest.raises(SpecError) as e:
        load_spec(path, ["train.gradient_surgery=cagrad", "train.step_mode=joint"])
    assert problems_of(e) == [f"train.gradient_surgery: 'cagrad' works with at most {n - 1} "
                              f"tasks (this spec has {n}): use pcgrad, or gradient_surgery: none"]
    load_spec(path, ["train.gradient_surgery=cagrad", "train.step_mode=joint"], tasks=["t0", "t1"])


# A valid value other than the default for every setting the table names.
SETTING_VALUES = {
    "temperature": 3.0, "examples_cap": 1000, "main_task": "rte", "main_ratio": 0.5,
    "anneal_end": 0.5, "weighting_lr": 0.01, "dwa_temperature": 3.0, "dwa_period": 5,
    "gradnorm_alpha": 1.0, "cagrad_c": 0.3, "soft_sharing_weight": 0.01,
}
TASK_SETTING_VALUES = {"loss_weight": 2.0, "encoder_group": "pairs"}


def test_the_setting_values_cover_the_table():
    assert set(SETTING_VALUES) == {s for m in methods.METHODS for s in m.settings}
    assert set(TASK_SETTING_VALUES) == {s for m in methods.METHODS for s in m.task_settings}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSpec)}
    assert all(defaults[k] != v for k, v in SETTING_VALUES.items())


def _choose(m: methods.Method) -> list[str]:
    """Overrides that choose a method with what it requires."""
    return [f"train.{m.kind}={m.name}", *(f"train.{k}={v[0]}" for k, v in m.requires.items()),
            *(["train.main_task=rte"] if m.name == "main_ratio" else [])]


@pytest.mark.parametrize("setting", sorted(SETTING_VALUES))
def test_a_train_setting_of_a_method_that_is_off_is_an_error(setting: str):
    users = [m for m in methods.METHODS if setting in m.settings]
    value = SETTING_VALUES[setting]
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with([f"train.{setting}={value}"]))
    (problem,) = problems_of(e)
    shown = repr(value) if isinstance(value, str) else value
    assert problem.startswith(f"train.{setting}: {shown} is used by {users[0].kind}=")
    assert problem.endswith(f"remove it, or set {users[0].kind}: {users[0].name}")
    for m in users:  # any method reading it takes it
        spec = spec_from_dict(_with([*_choose(m), f"train.{setting}={value}"]))
        assert getattr(spec.train, setting) == value


def test_unused_setting_messages():
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.temperature=3", "train.weighting_lr=0.01",
                              "train.loss_weighting=dwa", "train.main_task=rte"]))
    assert problems_of(e) == [
        "train.temperature: 3.0 is used by sampler=temperature only (the sampler is "
        "'proportional'): remove it, or set sampler: temperature",
        "train.main_task: 'rte' is used by sampler=main_ratio only (the sampler is "
        "'proportional'): remove it, or set sampler: main_ratio",
        "train.weighting_lr: 0.01 is used by loss_weighting=uncertainty or gradnorm only (the "
        "loss weighting is 'dwa'): remove it, or set loss_weighting: uncertainty",
    ]
    # Task settings (their wording is pinned in tests/test_weighting.py and tests/test_sharing.py).
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["tasks.rte.loss_weight=2", "tasks.cola.encoder_group=a",
                              "train.loss_weighting=uncertainty"]))
    assert problems_of(e) == [
        "tasks.rte.loss_weight: 2.0 is used by train.loss_weighting=static only ('uncertainty' "
        "sets the weights itself): remove it, or set loss_weighting: static",
        "tasks.cola.encoder_group: is used by train.sharing=soft only: remove it, or set "
        "train.sharing: soft",
    ]


def test_a_setting_at_its_default_or_out_of_range_is_not_called_unused():
    # Spelled out at its default value, a setting is harmless (task_specs/strategies/sampling.yaml
    # keeps main_ratio: 1.0 when its comment switches to the annealed sampler).
    spec = spec_from_dict(_with(["train.main_ratio=1.0", "train.temperature=2.0",
                                 "tasks.rte.loss_weight=1", "train.weighting_lr=null"]))
    assert spec.train.sampler == "proportional"
    # A bad value is one problem: its range.
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.cagrad_c=1.5", "tasks.rte.loss_weight=-1",
                              "train.loss_weighting=dwa"]))
    assert problems_of(e) == ["tasks.rte.loss_weight: must be >= 0, got -1.0",
                              "train.cagrad_c: must be in [0, 1), got 1.5"]


@pytest.mark.parametrize("setting", ["max_train_examples", "max_eval_examples"])
def test_example_limits_are_at_least_one_or_null(setting: str):
    for bad in (0, -5):
        with pytest.raises(SpecError) as e:
            spec_from_dict(_with([f"tasks.rte.{setting}={bad}"]))
        assert problems_of(e) == [f"tasks.rte.{setting}: must be >= 1 or null, got {bad}"]
    assert getattr(spec_from_dict(_with([f"tasks.rte.{setting}=1"])).task("rte"), setting) == 1
    assert getattr(spec_from_dict(_with([f"tasks.rte.{setting}=null"])).task("rte"),
                   setting) is None


# --- report_to, checkpoints, optimizer -----------------------------------------------------------


def test_trackers_are_accelerate_s():
    from accelerate.utils import LoggerType

    assert TRACKERS == tuple(t.value for t in LoggerType)


def test_report_to_is_checked():
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.report_to=[tensorbord]"]))
    (problem,) = problems_of(e)
    assert problem.startswith("train.report_to[0]: 'tensorbord' is not valid; did you mean "
                              "'tensorboard'? (choose one of: auto, none, all, aim, tensorboard")
    for alone in ("auto", "none", "all"):
        with pytest.raises(SpecError) as e:
            spec_from_dict(_with([f"train.report_to=[{alone}, wandb]"]))
        assert problems_of(e) == [f"train.report_to: '{alone}' stands alone, got ['{alone}', "
                                  f"'wandb']: give [{alone}], or tracker names only, e.g. "
                                  "[tensorboard, wandb]"]
    spec = spec_from_dict(_with(["train.report_to=[tensorboard, wandb]"]))
    assert spec.train.report_to == ("tensorboard", "wandb")
    assert spec_from_dict(_with(["train.report_to=none"])).train.report_to == ("none",)


def test_checkpoint_cadence_and_optimizer_settings():
    t = spec_from_dict(_with([])).train
    assert (t.save_every, t.save_every_minutes, t.optimizer) == (500, 10.0, "adamw_torch_fused")
    t = spec_from_dict(_with(["train.save_every=null", "train.save_every_minutes=0.5",
                              "train.optimizer=adamw_torch"])).train
    assert (t.save_every, t.save_every_minutes, t.optimizer) == (None, 0.5, "adamw_torch")
    assert spec_from_dict(_with(["train.save_every_minutes=null"])).train.save_every_minutes \
        is None
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.save_every=0", "train.save_every_minutes=-1",
                              "train.optimizer=adamw_fused"]))
    assert problems_of(e) == [
        "train.optimizer: 'adamw_fused' is not valid; did you mean 'adamw_torch_fused'? (choose "
        "one of: adamw_torch_fused, adamw_torch)",
    ]
    with pytest.raises(SpecError) as e:
        spec_from_dict(_with(["train.save_every=0", "train.save_every_minutes=-1"]))
    assert problems_of(e) == ["train.save_every: must be > 0 or null, got 0",
                              "train.save_every_minutes: must be > 0 or null, got -1.0"]


def test_loading_a_spec_does_not_import_torch():
    code = ("import sys, mtdnn.spec as s; s.load_spec('task_specs/tour.yaml'); "
            "s.load_spec('task_specs/strategies/joint_pcgrad.yaml'); "
            "bad = [m for m in ('torch', 'accelerate', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr


def test_a_file_format_of_another_task_type_is_refused(tmp_path: Path):
    (tmp_path / "a.json").write_text("{}")
    data = {"encoder": "x", "tasks": {"rte": {"type": "classification", "text": ["a"],
                                               "labels": ["0", "1"],
                                               "files": {"train": {"path": "a.json",
                                                                   "format": "squad"}}}}}
    with pytest.raises(SpecError) as e:
        spec_from_dict(data, base_dir=tmp_path)
    assert e.value.problems == [
        "tasks.rte.files.train.format: 'squad' files are read by task types extractive_qa only "
        "(this task is a classification task): use tsv, csv or jsonl"]


def test_a_bad_file_entry_is_a_spec_error_and_null_removes_a_split(tmp_path: Path):
    glue = SPECS / "glue.yaml"
    # a bad value inside the files mapping: one clear problem, not a crash of the later checks
    with pytest.raises(SpecError, match=re.escape("tasks.rte.files.dev: expected a mapping, "
                                                  "got 5")):
        load_spec(glue, ["tasks.rte.files.dev=5", f"data_dir={tmp_path}"], tasks=["rte"])
    (tmp_path / "RTE").mkdir()
    for name in ("train.tsv", "test.tsv"):  # dev.tsv is missing, and not asked for
        (tmp_path / "RTE" / name).write_text("index\tsentence1\tsentence2\tlabel\n")
    spec = load_spec(glue, ["tasks.rte.files.dev=null", f"data_dir={tmp_path}"], tasks=["rte"])
    assert set(spec.task("rte").files) == {"train", "test"}
