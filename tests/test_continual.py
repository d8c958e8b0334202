"""Continual multi-task training (mtdnn/continual.py): stages, the carried-forward model, the
forgetting table, resume, the CLI. Tiny runs of the tiny BERT on two small tasks written here."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_spec
from safetensors.torch import load_file

from mtdnn.cli import main
from mtdnn.continual import stage_specs, stages_table, train_stages
from mtdnn.evaluation import evaluate
from mtdnn.spec import SpecError, StageSpec, load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "the a cat dog sat ran on under mat tree red blue big small fast slow".split()


def write_task_files(folder: Path) -> None:
    """sent: one sentence, neg/pos; pair: two sentences, same/different. 32 train, 16 dev rows."""
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))

    for split, n in (("train", 32), ("dev", 16)):
        rows = ["sentence\tlabel"] + [f"{sentence()}\t{rng.choice(['neg', 'pos'])}"
                                      for _ in range(n)]
        (folder / f"sent_{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        rows = ["sentence1\tsentence2\tlabel"]
        for _ in range(n):
            a = sentence()
            same = rng.random() < 0.5
            rows.append(f"{a}\t{a if same else sentence()}\t{'same' if same else 'different'}")
        (folder / f"pair_{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> Path:
    """Two stages: `sent` (4 steps at lr 1e-3), then `pair` added (1 step at lr 1e-12: the model
    stays what stage 2 started from)."""
    folder = tmp_path_factory.mktemp("continual")
    write_task_files(folder)
    return write_spec(folder / "spec.yaml", f"""
encoder: {tiny_bert}
output_dir: {folder / 'run'}
max_seq_length: 32
train:
  learning_rate: 1.0e-3
  batch_size: 8
  eval_batch_size: 16
  max_steps: 4
  log_every: 2
  report_to: [none]
tasks:
  sent:
    type: classification
    text: [sentence]
    labels: [neg, pos]
    files: {{train: sent_train.tsv, dev: sent_dev.tsv}}
  pair:
    type: classification
    text: [sentence1, sentence2]
    labels: [same, different]
    files: {{train: pair_train.tsv, dev: pair_dev.tsv}}
stages:
  - tasks: [sent]
  - tasks: [pair]
    max_steps: 1
    learning_rate: 1.0e-12
""")


@pytest.fixture(scope="module")
def staged(spec_path: Path, one_thread):
    spec = load_spec(spec_path)
    return spec, train_stages(spec, progress=False)


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file()}


# --- stage specs (no training) -------------------------------------------------------------------


def test_stage_specs_chain_the_stages_and_apply_their_overrides(spec_path: Path):
    base = load_spec(spec_path)
    sent3 = dataclasses.replace(base.task("sent"), name="sent3")
    spec = dataclasses.replace(
        base, tasks=(*base.tasks, sent3), init_checkpoint="ckpt/best", fresh_heads=("sent",),
        stages=(StageSpec(("pair",), learning_rate=2e-5), StageSpec(("sent",), epochs=2.5),
                StageSpec(("sent3",), max_steps=7)))
    out = Path(spec.output_dir)
    specs = stage_specs(spec)
    assert [[t.name for t in s.tasks] for s in specs] == [
        ["pair"], ["sent", "pair"], ["sent", "pair", "sent3"]]  # the spec's task order
    assert [s.output_dir for s in specs] == [str(out / f"stage-{k}") for k in (1, 2, 3)]
    assert all(s.stages == () for s in specs)
    # stage 1 starts where the spec says; later stages from the previous stage's best checkpoint
    assert (specs[0].encoder, specs[0].tokenizer, specs[0].init_checkpoint,
            specs[0].fresh_heads) == (spec.encoder, None, "ckpt/best", ("sent",))
    for k in (2, 3):
        previous = str(out / f"stage-{k - 1}" / "best")
        s = specs[k - 1]
        assert (s.encoder, s.tokenizer, s.init_checkpoint, s.fresh_heads, s.revision) == (
            previous, previous, previous, (), None)
    # (learning_rate, epochs, max_steps): the stage's epochs clear the run-wide max_steps=4
    assert [(s.train.learning_rate, s.train.epochs, s.train.max_steps) for s in specs] == [
        (2e-5, 3.0, 4), (1e-3, 2.5, None), (1e-3, 3.0, 7)]
    for s in specs:  # everything else is the spec's
        assert dataclasses.replace(s.train, learning_rate=1e-3, epochs=3.0, max_steps=4) == \
            spec.train
        assert dataclasses.replace(
            s, tasks=spec.tasks, stages=spec.stages, output_dir=spec.output_dir, train=spec.train,
            encoder=spec.encoder, tokenizer=None, revision=None, init_checkpoint="ckpt/best",
            fresh_heads=("sent",)) == spec


def test_stage_specs_reject_a_spec_without_stages_and_a_late_main_task(spec_path: Path):
    spec = load_spec(spec_path)
    with pytest.raises(SpecError, match=r"stages: the spec has none"):
        stage_specs(dataclasses.replace(spec, stages=()))
    late = dataclasses.replace(spec, train=dataclasses.replace(
        spec.train, sampler="main_ratio", main_task="pair"))
    with pytest.raises(SpecError, match=r"train.main_task: 'pair' is not trained by stage 1 "
                                        r"\(sent\): add it to the first stage"):
        stage_specs(late)


def test_stage_lists_are_checked_against_the_tasks(spec_path: Path):
    text = spec_path.read_text()
    stages = text[text.index("stages:"):]

    def problems(new_stages: str, **kw) -> list[str]:
        bad = spec_path.with_name("bad.yaml")
        write_spec(bad, text.replace(stages, new_stages))
        with pytest.raises(SpecError) as e:
            load_spec(bad, **kw)
        return e.value.problems

    assert problems("stages:\n  - tasks: [sent, pair]\n  - tasks: [pair]\n") == [
        "stages[1].tasks: task 'pair' is already added by stage 1 (later stages keep training it)"]
    assert problems("stages:\n  - tasks: [sent]\n") == [
        "stages: tasks ['pair'] are in no stage: add them to a stage, or leave them out with "
        "use_tasks"]
    assert problems("stages:\n  - tasks: [sent, pairs]\n")[0].startswith(
        "stages[0].tasks: unknown task 'pairs'")
    # A task left out by use_tasks (or --tasks) but named by a stage: said as such, not "unknown".
    assert problems(stages, tasks=["sent"]) == [
        "stages[1].tasks: task 'pair' is left out by use_tasks/--tasks (['sent']): select it too, "
        "or remove it from the stage"]
    assert load_spec(spec_path, tasks=["pair", "sent"]).stages == load_spec(spec_path).stages


def test_stages_table_shows_each_stage_and_the_change():
    table = stages_table({
        "stage-1": {"a": {"accuracy": 0.5}},
        "stage-2": {"a": {"accuracy": 0.25}, "b": {"f1": 0.8, "accuracy": 0.6}},
        "stage-3": {"a": {"accuracy": 0.5}, "b": {"f1": 0.9, "accuracy": 0.6}, "c": {"mcc": 0.1}},
    })
    assert table.splitlines()[:7] == [
        "| task | metric | stage 1 | stage 2 | stage 3 | change |",
        "|---|---|---:|---:|---:|---:|",
        "| a | accuracy | 50.00 | 25.00 | 50.00 | +0.00 |",
        "| b | f1 | - | 80.00 | 90.00 | +10.00 |",
        "| b | accuracy | - | 60.00 | 60.00 | +0.00 |",
        "| c | mcc | - | - | 10.00 | - |",
        "",
    ]


# --- a two-stage run ----------------------------------------------------------------------------


def test_two_stages_record_every_task_trained_so_far(staged):
    spec, result = staged
    out = Path(spec.output_dir)
    assert result.output_dir == out
    assert [r.best_dir for r in result.stages] == [out / "stage-1" / "best",
                                                  out / "stage-2" / "best"]
    saved = json.loads((out / "stages.json").read_text())
    assert saved == result.metrics
    assert {k: {t: list(ms) for t, ms in v.items()} for k, v in saved.items()} == {
        "stage-1": {"sent": ["accuracy"]}, "stage-2": {"sent": ["accuracy"], "pair": ["accuracy"]}}
    for k, stage in enumerate(result.stages, 1):  # each stage's best checkpoint, as it reported
        metrics = json.loads((out / f"stage-{k}" / "metrics.json").read_text())["tasks"]
        assert saved[f"stage-{k}"] == {t: s["dev"] for t, s in metrics.items()}
        assert stage.metrics == metrics
    fresh = evaluate(out / "stage-2" / "best")
    assert fresh.keys() == {"sent", "pair"}
    for task, ms in saved["stage-2"].items():
        assert ms == pytest.approx(fresh[task]["dev"], abs=1e-12), task
    table = (out / "stages.md").read_text()
    assert table == result.table + "\n"
    assert "| task | metric | stage 1 | stage 2 | change |" in table
    pair = 100 * saved["stage-2"]["pair"]["accuracy"]
    assert f"| pair | accuracy | - | {pair:.2f} | - |" in table


def test_stage_two_starts_from_stage_one_best(staged, tiny_bert: str):
    spec, _ = staged
    out = Path(spec.output_dir)
    first = load_file(str(out / "stage-1" / "best" / "model.safetensors"))
    second = load_file(str(out / "stage-2" / "best" / "model.safetensors"))
    initial = load_file(str(Path(tiny_bert) / "model.safetensors"))
    assert first.keys() == second.keys()
    moved = max((first[k] - initial[k]).abs().max().item() for k in first if k in initial)
    assert moved > 1e-4  # stage 1 trained the encoder away from its initial weights ...
    for k in first:  # ... and stage 2 (one step at lr 1e-12) holds stage 1's encoder
        torch.testing.assert_close(second[k], first[k], rtol=0, atol=1e-9, msg=k)
    heads1 = load_file(str(out / "stage-1" / "best" / "heads.safetensors"))
    heads2 = load_file(str(out / "stage-2" / "best" / "heads.safetensors"))
    for k, v in heads1.items():  # sent's head carried over; pair's is new
        torch.testing.assert_close(heads2[k], v, rtol=0, atol=1e-9, msg=k)
    assert {k for k in heads2 if k.startswith("heads.pair.")} and \
        not {k for k in heads1 if k.startswith("heads.pair.")}
    stage2 = load_spec(out / "stage-2" / "best" / "spec.yaml")
    assert stage2.encoder == stage2.init_checkpoint == str(out / "stage-1" / "best")


# --- resume and the command line ----------------------------------------------------------------


@pytest.fixture
def copy_of_run(staged, tmp_path: Path) -> Path:
    spec, _ = staged
    shutil.copytree(spec.output_dir, tmp_path / "run")
    return tmp_path / "run"


def test_resume_skips_finished_stages_and_resumes_the_first_unfinished(
        staged, copy_of_run: Path, spec_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mtdnn.continual

    _, first_run = staged
    calls = []

    def recording_train(spec, **kwargs):
        calls.append((spec.output_dir, kwargs["resume"]))
        return real_train(spec, **kwargs)

    real_train = mtdnn.continual.train
    monkeypatch.setattr(mtdnn.continual, "train", recording_train)
    (copy_of_run / "stage-2" / "metrics.json").unlink()  # stage 2 stopped before its end
    stage1 = mtimes(copy_of_run / "stage-1")
    spec = load_spec(spec_path, [f"output_dir={copy_of_run}"])

    result = train_stages(spec, progress=False, resume=True)
    assert calls == [(str(copy_of_run / "stage-2"), True)]
    assert mtimes(copy_of_run / "stage-1") == stage1  # not retrained
    assert (copy_of_run / "stage-2" / "metrics.json").is_file()
    assert result.metrics["stage-1"] == first_run.metrics["stage-1"]  # read back
    assert json.loads((copy_of_run / "stages.json").read_text()) == result.metrics

    calls.clear()  # every stage finished: nothing is trained, the table is the same
    again = train_stages(spec, progress=False, resume=True)
    assert calls == [] and again.metrics == result.metrics
    assert [r.best_step for r in again.stages] == [r.best_step for r in result.stages]


def test_cli_train_runs_the_stages_and_prints_the_table(spec_path: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture):
    out = tmp_path / "cli-run"
    assert main(["train", str(spec_path), "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mtdnn: stage 1/2 (+sent) done" in printed and "mtdnn: stage 2/2 (+pair) done" in printed
    table = (out / "stages.md").read_text()
    assert printed.rstrip().endswith(table.rstrip())  # printed after the last stage
    assert "| sent | accuracy |" in printed.split("stage 2/2")[0]  # and after the first
    assert set(json.loads((out / "stages.json").read_text())) == {"stage-1", "stage-2"}

    # --resume of a finished run: every stage is skipped, the table is printed once, at the end
    assert main(["train", str(spec_path), "--output-dir", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("mtdnn: stage 1/2 (+sent) complete, skipped\n\n"
                              "mtdnn: stage 2/2 (+pair) complete, skipped; dev results")
    assert printed.rstrip().endswith(table.rstrip())

    assert main(["train", str(spec_path), "--output-dir", str(out), "--resume",
                 str(out / "stage-1" / "checkpoints" / "step-0000004")]) == 2
    assert capsys.readouterr().err == (
        f"error: --resume {out / 'stage-1' / 'checkpoints' / 'step-0000004'}: a spec with stages "
        "resumes each stage from its own checkpoints: give --resume without a path\n")
