"""Tests of mtdnn/hub.py: the model card of a real (tiny) run, and pushes through huggingface_hub's
real client to a stand-in Hub on 127.0.0.1 (tests/hub_stub.py): what arrives equals the staged
folder byte for byte, the token authenticates every Hub call and is never printed, `private` and
`revision` reach the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import yaml
from conftest import SPECS, write_spec
from hub_stub import HubStub

from mtdnn.errors import UserError
from mtdnn.hub import model_card, push_to_hub
from mtdnn.spec import load_spec

TOKEN = "hf_stubTOKEN_1234567890abcdef"  # a made-up token: it must never show up in any output


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert: str, glue: Path) -> Path:
    """A real tiny run (rte, stsb, wikiqa; 4 steps): its best checkpoint and metrics.json."""
    from mtdnn import load_spec, train

    root = tmp_path_factory.mktemp("hub-run")
    spec = write_spec(root / "spec.yaml", f"""
include: [{SPECS / 'glue.yaml'}, {SPECS / 'wikiqa.yaml'}]
use_tasks: [rte, stsb, wikiqa]
encoder: {tiny_bert}
data_dir: {glue}
output_dir: {root / 'run'}
max_seq_length: 64
task_embedding: true
train: {{batch_size: 8, eval_batch_size: 16, max_steps: 4, report_to: [none]}}
tasks:
  rte: {{max_train_examples: 40, max_eval_examples: 24}}
  stsb: {{max_train_examples: 40, max_eval_examples: 24}}
  wikiqa: {{max_train_examples: 6, max_eval_examples: 4}}
""")
    train(load_spec(spec), progress=False)
    return root / "run"


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("\n---\n", 1)[0][4:])


def test_model_card_of_the_checkpoint(run: Path):
    metrics = json.loads((run / "metrics.json").read_text())
    card = model_card(run / "best", repo_id="me/tiny-glue")
    meta = front_matter(card)
    assert meta["library_name"] == "mtdnn"
    assert meta["tags"] == ["mtdnn", "multi-task", "text-classification", "text-ranking"]
    assert meta["datasets"] == ["microsoft/wiki_qa", "nyu-mll/glue"]
    assert "base_model" not in meta  # the encoder is a local directory, not a Hub model
    (index,) = meta["model-index"]
    assert index["name"] == "tiny-glue"
    by_task = {r["dataset"].get("config", r["dataset"]["type"]): r for r in index["results"]}
    assert set(by_task) == {"rte", "stsb", "microsoft/wiki_qa"}
    assert by_task["rte"]["task"] == {"type": "text-classification", "name": "Text Classification"}
    assert by_task["rte"]["dataset"] == {"name": "nyu-mll/glue (rte)", "type": "nyu-mll/glue",
                                         "config": "rte", "split": "validation[:24]"}
    assert by_task["microsoft/wiki_qa"]["task"]["type"] == "text-ranking"
    for key, task in (("rte", "rte"), ("stsb", "stsb"), ("microsoft/wiki_qa", "wikiqa")):
        got = {m["type"]: m["value"] for m in by_task[key]["metrics"]}
        assert got == metrics["tasks"][task]["dev"]  # the run's values, unrounded
    assert {m["name"] for m in by_task["stsb"]["metrics"]} == {"Pearson", "Spearman"}
    rte = metrics["tasks"]["rte"]["dev"]["accuracy"]
    assert f"| rte | accuracy | {100 * rte:.2f} |" in card
    assert f"Dev set at step {metrics['best_step']}" in card
    assert 'MultiTaskModel.from_pretrained(snapshot_download("me/tiny-glue"))' in card
    for row in ("| learning rate | 5e-05 (linear, warmup ratio 0.1) |", "| seed | 42 |",
                "| training length | 4 optimizer steps |", "| task sampler | proportional |",
                "| task embedding | yes |", "| batch size | 8 x 1 accumulation |"):
        assert row in card


def test_model_card_of_an_export_and_of_a_moved_checkpoint(run: Path, tmp_path: Path):
    card = model_card(run / "best", task="stsb", repo_id="me/tiny-stsb")
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == ["nyu-mll/glue"]
    assert [r["dataset"]["config"] for r in meta["model-index"][0]["results"]] == ["stsb"]
    assert 'pipeline("text-classification", model="me/tiny-stsb")' in card
    assert '"text_pair"' in card
    # The results travel with the checkpoint (its own metrics.json): a moved copy keeps them; a
    # checkpoint without its record claims nothing.
    shutil.copytree(run / "best", tmp_path / "moved" / "best")
    moved = model_card(tmp_path / "moved" / "best", task="stsb")
    assert front_matter(moved)["model-index"][0]["results"] == meta["model-index"][0]["results"]
    (tmp_path / "moved" / "best" / "metrics.json").unlink()
    bare = model_card(tmp_path / "moved" / "best", task="stsb")
    assert "model-index" not in front_matter(bare)
    assert "No dev results were found" in bare
    with pytest.raises(UserError, match="did you mean 'stsb'"):
        model_card(run / "best", task="stsbb")


@pytest.fixture
def online(monkeypatch):
    """The stand-in Hub, with huggingface_hub allowed to reach it (the tests run offline)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def start(lfs: bool) -> HubStub:
        hub = HubStub(TOKEN, lfs=lfs).__enter__()
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        stubs.append(hub)
        return hub

    stubs: list[HubStub] = []
    yield start
    for hub in stubs:
        hub.__exit__(None, None, None)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_push_export_through_lfs(run, online, monkeypatch, tmp_path, capfd, caplog):
    # The stand-in Hub implements LFS, not Xet (hf_xet's own protocol): the client is told to use
    # LFS, which it also does wherever hf_xet is not installed.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    hub = online(lfs=True)
    url = push_to_hub(run / "best", "me/tiny-rte", task="rte", private=True, revision="exp-1",
                      token=TOKEN, staging_dir=tmp_path / "stage")
    staged = folder_bytes(tmp_path / "stage")
    assert hub.files("me/tiny-rte", "exp-1") == staged  # byte for byte
    assert sorted(staged) == ["README.md", "config.json", "model.safetensors", "tokenizer.json",
                              "tokenizer_config.json"]
    assert hub.files("me/tiny-rte", "main") == {}  # the branch got the commit, not main
    import hashlib

    assert hashlib.sha256(staged["model.safetensors"]).hexdigest() in hub.lfs_objects
    repo = hub.repos["me/tiny-rte"]
    assert repo.visibility == "private"
    assert [c["revision"] for c in repo.commits] == ["exp-1"]
    assert repo.commits[0]["summary"].startswith("Upload mtdnn task 'rte' (exported)")
    assert url == f"{hub.url}/me/tiny-rte/commit/{repo.commits[0]['oid']}"
    hub_calls = [(m, p, auth) for m, p, auth in hub.requests if not p.startswith("/lfs/")
                 or p == "/lfs/verify"]
    assert {p for _, p, _ in hub_calls} >= {"/api/repos/create", "/api/models/me/tiny-rte/branch/"
                                            "exp-1", "/me/tiny-rte.git/info/lfs/objects/batch",
                                            "/api/models/me/tiny-rte/commit/exp-1"}
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in hub_calls)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text


def test_push_checkpoint_with_the_default_client(run, online, capfd, caplog, tmp_path):
    # Every file a regular blob: the client's default (Xet-capable) upload pipeline runs as is.
    hub = online(lfs=False)
    url = push_to_hub(run / "best", "me/tiny-glue", token=TOKEN)
    received = hub.files("me/tiny-glue")
    checkpoint = folder_bytes(run / "best")
    assert set(received) == set(checkpoint) | {"README.md"}
    assert {k: v for k, v in received.items() if k not in ("README.md", "spec.yaml")} == \
        {k: v for k, v in checkpoint.items() if k != "spec.yaml"}
    # spec.yaml and the card do not publish the training machine's directories.
    spec_text = received["spec.yaml"].decode()
    saved = yaml.safe_load(checkpoint["spec.yaml"])
    assert str(run.parent) in saved["output_dir"] and saved["data_dir"]  # what there was to hide
    for local in (str(run.parent), saved["data_dir"], saved["encoder"]):
        assert local not in spec_text and local not in received["README.md"].decode()
    public = yaml.safe_load(spec_text)
    assert (public["data_dir"], public["output_dir"], public["init_checkpoint"]) == \
        (None, "runs/run", None)
    assert public["encoder"] == Path(saved["encoder"]).name
    assert public["tasks"] == saved["tasks"] and public["train"] == saved["train"]
    spec = load_spec(write_spec(tmp_path / "spec.yaml", spec_text))  # still a valid spec
    assert [t.hub.path for t in spec.tasks] == ["nyu-mll/glue", "nyu-mll/glue", "microsoft/wiki_qa"]
    assert received["README.md"].decode() == model_card(run / "best", repo_id="me/tiny-glue")
    assert hub.repos["me/tiny-glue"].visibility is None  # not --private: the Hub's default
    assert url.startswith(f"{hub.url}/me/tiny-glue/commit/")
    assert not any(m == "POST" and p.endswith("/branch/main") for m, p, _ in hub.requests)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text


def test_dry_run_and_refusals(run, online, monkeypatch, tmp_path):
    hub = online(lfs=True)
    staged = push_to_hub(run / "best", "me/x", task="wikiqa", dry_run=True,
                         staging_dir=tmp_path / "dry")
    assert staged == tmp_path / "dry" and (staged / "README.md").is_file()
    assert json.loads((staged / "config.json").read_text())["id2label"] == {"0": "score"}
    assert hub.requests == []  # a dry run sends nothing
    with pytest.raises(ValueError, match="staging directory must be new or empty"):
        push_to_hub(run / "best", "me/x", dry_run=True, staging_dir=tmp_path / "dry")
    with pytest.raises(ValueError) as e:
        push_to_hub(run / "best", "me/x", token="hf_wrong_token_000")
    assert "may not write to me/x (HTTP 401)" in str(e.value)
    assert "hf_wrong_token_000" not in str(e.value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ValueError, match="no Hugging Face token: log in with `hf auth login`"):
        push_to_hub(run / "best", "me/x")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        push_to_hub(run / "best", "me/x", token=TOKEN)
    # Only the refused push reached the Hub (create_repo, then the client's check whether the
    # repository exists anyway); without a token, or offline, nothing was sent.
    assert [(p, auth) for _, p, auth in hub.requests] == [
        ("/api/repos/create", "Bearer hf_wrong_token_000"),
        ("/api/models/me/x", "Bearer hf_wrong_token_000")]


def test_cli_push(run, tmp_path):
    with HubStub(TOKEN, lfs=True) as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_OFFLINE",)}
        env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN,
                   HF_HUB_DISABLE_XET="1")  # the stand-in Hub speaks LFS, not Xet
        result = subprocess.run(
            [sys.executable, "-m", "mtdnn.cli", "push", str(run / "best"), "--repo-id", "me/cli",
             "--task", "stsb", "--private", "--revision", "v1", "--staging-dir",
             str(tmp_path / "stage")], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert TOKEN not in result.stdout + result.stderr
        assert f"pushed to {hub.url}/me/cli/commit/" in result.stdout
        assert hub.files("me/cli", "v1") == folder_bytes(tmp_path / "stage")
        assert hub.repos["me/cli"].visibility == "private"
        assert json.loads(hub.files("me/cli", "v1")["config.json"])["problem_type"] == \
            "regression"
