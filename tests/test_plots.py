"""The figures of mtdnn/plots.py: a run's curves, written by every training run."""

from __future__ import annotations

import json

import pytest

import mtdnn.plots
from mtdnn.plots import plot_run
from mtdnn.spec import load_spec
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_draws_its_curves(tiny_glue_spec, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    train(load_spec(tiny_glue_spec(tasks="[rte, stsb]", steps=4), ["train.log_every=1",
                                                                   "train.eval_every=2"]),
          progress=False)
    out = tmp_path / "run"
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # Without matplotlib: no figure, one line saying how to get it.
    png.unlink()
    capsys.readouterr()
    monkeypatch.setattr(mtdnn.plots, "_pyplot", lambda: None)
    assert plot_run(out) is None and not png.exists()
    assert capsys.readouterr().out.strip() == (
        f'mtdnn: no curves.png for {out}: matplotlib is not installed (pip install '
        '"mtdnn[plot]"  (or: pip install matplotlib))')


def test_the_curves_draw_each_task_s_chosen_metric(tmp_path):
    pytest.importorskip("matplotlib")
    records = [{"step": 1, "loss/a": 0.9}, {"step": 2, "loss/a": 0.5},
               {"step": 2, "score": 0.5, "dev/a/f1": 0.4, "dev/a/accuracy": 0.6}]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_run(tmp_path, {"a": "accuracy"}) == tmp_path / "curves.png"
    assert plot_run(tmp_path / "missing") is None
