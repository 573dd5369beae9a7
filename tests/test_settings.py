"""densir/settings.py, the one list of the stage scripts' settings, and the scripts that read it:
every bad setting is one line naming the setting and the value, exit 1, before anything runs (no
python but the settings check, no output directory); `--help` lists every setting with type and
default; slurm/submit_pipeline.sh hands every setting of the scripts it submits to the jobs, and a
setting a script reads that the list lacks fails here. Fast: bash and a few python starts a case."""
from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import REPO, run_cmd

from densir import settings as S

FILE_SCRIPTS = {  # each bash file that reads settings -> the scripts whose settings it may read
    "get_data.sh": (S.GET_DATA,), "run.sh": (S.RUN,), "mine_hard_neg.sh": (S.MINE,), "train_hn.sh": (S.TRAIN_HN,),
    "rerank.sh": (S.RERANK,), "slurm/submit_pipeline.sh": (S.SUBMIT,),
    "demo.sh": (S.DEMO,) + S.PIPELINE,  # and the stage settings scripts/demo_settings.sh sets
    "scripts/stages.sh": S.PIPELINE, "scripts/lib.sh": S.SCRIPTS, "scripts/demo_settings.sh": S.PIPELINE + (S.DEMO,),
}
# the files of the scripts slurm/submit_pipeline.sh submits
SUBMITTED_FILES = ("run.sh", "mine_hard_neg.sh", "train_hn.sh", "scripts/stages.sh", "scripts/lib.sh")
SCRIPT_PATH = {S.SUBMIT: "slurm/submit_pipeline.sh"}
# what the scripts read from the environment that is not a stage setting: the machinery's (SLURM,
# torchrun, HF), bash's own, densir's internals between a script and what it sources, and demo.sh's data root
NOT_SETTINGS = {"BASH_SOURCE", "SECONDS", "DENSIR_HOME", "DENSIR_SCRIPT", "DENSIR_SRUN", "DENSIR_LIB_HOME",
                "DENSIR_SHARED_DATA", "USAGE_EXTRA", "HELDOUT_USERS",
                "PYTHONPATH", "MASTER_PORT", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "SLURM_ARRAY_TASK_ID",
                "SLURM_CPUS_PER_TASK", "SLURM_GPUS_ON_NODE", "SLURM_NNODES", "SLURM_JOB_NODELIST", "SLURM_JOB_ID",
                "SLURM_SUBMIT_DIR"}


# --------------------------------------------------------------------------- the list itself
@pytest.mark.parametrize("script", S.SCRIPTS)
def test_each_script_declares_each_name_once_with_valid_defaults(script, tmp_path):
    own = [s.name for s in S.settings_of(script)]
    assert len(own) == len(set(own)), own
    assert not {s.name for s in S.passed_on(script)} & set(own)
    # every default is a value the setting takes (resolve checks each one)
    values = S.resolve(script, {"DATA_DIR": str(tmp_path)})
    assert set(own) <= set(values)


def test_rules_take_good_values_and_refuse_bad_ones():
    num_shards = next(s for s in S.SETTINGS if s.name == "NUM_SHARDS")
    weight = next(s for s in S.SETTINGS if s.name == "HYBRID_WEIGHT")
    dropout = next(s for s in S.SETTINGS if s.name == "ATTENTION_DROPOUT")
    for good in ("1", "8", "128"):
        num_shards.check(good)
    for bad in ("0", "-1", "abc", "1.5", "", " 2", "1e3", "nan"):
        with pytest.raises(S.SettingError, match=re.escape(f"NUM_SHARDS must be an integer >= 1, not '{bad}'")):
            num_shards.check(bad)
    for good in ("0", "0.5", "1", "1.0", ".3"):
        weight.check(good)
    for bad in ("-0.1", "1.01", "inf", "nan", "half"):
        with pytest.raises(S.SettingError, match=re.escape("HYBRID_WEIGHT must be a number in [0, 1]")):
            weight.check(bad)
    dropout.check("")  # optional: unset
    with pytest.raises(S.SettingError, match=re.escape("ATTENTION_DROPOUT must be a number in [0, 1), not '1'")):
        dropout.check("1")


# --------------------------------------------------------------------------- bad settings: one line, nothing ran
# (script, env, flags, what the one line says): at least one bad value of each type, issue 21's
# NUM_SHARDS=abc / PRECISION=fp8 / BATCH=0, and issue 26's mining values that wrote bad groups with exit 0
BAD = [
    (S.RUN, {"NUM_SHARDS": "abc"}, [], "NUM_SHARDS must be an integer >= 1, not 'abc'"),
    (S.RUN, {"PRECISION": "fp8"}, [], "PRECISION must be auto, bf16, fp16 or fp32, not 'fp8'"),
    (S.RUN, {"BATCH": "0"}, [], "BATCH must be an integer >= 1, not '0'"),
    (S.RUN, {}, ["--num_shards", "2.5"], "NUM_SHARDS must be an integer >= 1, not '2.5'"),
    (S.RUN, {}, ["--lr=fast"], "LR must be a number > 0, not 'fast'"),
    (S.RUN, {"TEMPERATURE": "0"}, [], "TEMPERATURE must be a number > 0, not '0'"),
    (S.RUN, {"WARMUP": "nan"}, [], "WARMUP must be a number >= 0, not 'nan'"),
    (S.RUN, {"POOLING": "max"}, [], "POOLING must be cls, mean or last, not 'max'"),
    (S.RUN, {"ZERO_SHOT": "yes"}, [], "ZERO_SHOT must be 0 or 1, not 'yes'"),
    (S.RUN, {"STAGE": "nope"}, [], "unknown STAGE 'nope'"),
    (S.RUN, {"SHARD": "2", "NUM_SHARDS": "2"}, [], "SHARD=2 is out of range for NUM_SHARDS=2"),
    (S.RUN, {"QUANTIZE": "int8"}, [], "QUANTIZE=int8 needs BACKEND=onnx or openvino"),
    (S.RUN, {"HYBRID_WEIGHT": "1.5"}, [], "HYBRID_WEIGHT must be a number in [0, 1], not '1.5'"),
    (S.RUN, {"HYBRID": "best"}, [], "HYBRID must be rrf, weighted, auto or none, not 'best'"),
    (S.TRAIN_HN, {"VALIDATE": "yes"}, [], "VALIDATE must be 0 or 1, not 'yes'"),
    (S.MINE, {"SKIP": "-1"}, [], "SKIP must be an integer >= 0, not '-1'"),
    (S.MINE, {"N_SAMPLE": "0"}, [], "N_SAMPLE must be an integer >= 1, not '0'"),
    (S.MINE, {"DEPTH": "0"}, [], "DEPTH must be an integer >= 1, not '0'"),
    (S.MINE, {}, ["--depth", "-1"], "DEPTH must be an integer >= 1, not '-1'"),
    (S.MINE, {"SKIP": "100", "DEPTH": "100"}, [], "SKIP=100 leaves no rank of DEPTH=100 to mine"),
    (S.MINE, {"MINE_RANGE_MIN": "5", "MINE_RANGE_MAX": "5"}, [], "MINE_RANGE_MAX must be > MINE_RANGE_MIN, not '5'"),
    (S.MINE, {"MINE_SAMPLING": "best"}, [], "MINE_SAMPLING must be random or top, not 'best'"),
    (S.MINE, {"STAGE": "reduce"}, [], "unknown STAGE 'reduce'"),
    (S.TRAIN_HN, {"INIT": "round3"}, [], "INIT must be model or round1, not 'round3'"),
    (S.TRAIN_HN, {"HN_LR": "-1"}, [], "HN_LR must be a number > 0, not '-1'"),
    (S.TRAIN_HN, {"DISTILL_LOSS": "mse"}, [], "DISTILL_LOSS must be kl or margin_mse, not 'mse'"),
    (S.TRAIN_HN, {"TEACHER_MAX_LEN": "0"}, [], "TEACHER_MAX_LEN must be an integer >= 1, not '0'"),
    (S.RERANK, {"RERANK_ALPHA": "2"}, [], "RERANK_ALPHA must be a number in [0, 1], not '2'"),
    (S.RERANK, {"NUM_QUERY_SHARDS": "0"}, [], "NUM_QUERY_SHARDS must be an integer >= 1, not '0'"),
    (S.RERANK, {"QUERY_SHARD": "1"}, [], "QUERY_SHARD=1 is out of range for NUM_QUERY_SHARDS=1"),
    (S.RERANK, {"RERANK_BATCH": "x"}, [], "RERANK_BATCH must be an integer >= 1, not 'x'"),
    (S.GET_DATA, {"THREADS": "0"}, [], "THREADS must be an integer >= 1, not '0'"),
    (S.GET_DATA, {}, ["--n_sample", "0"], "N_SAMPLE must be an integer >= 1, not '0'"),
    (S.GET_DATA, {}, ["--depth", "-5"], "DEPTH must be an integer >= 1, not '-5'"),
    (S.GET_DATA, {"EVAL_DEPTH": "all"}, [], "EVAL_DEPTH must be an integer >= 1, not 'all'"),
    (S.GET_DATA, {"HOLDOUT": "-1"}, [], "HOLDOUT must be an integer >= 0, not '-1'"),
    (S.GET_DATA, {}, ["--holdout_seed", "x"], "HOLDOUT_SEED must be an integer >= 0, not 'x'"),
    (S.DEMO, {"HOLDOUT": "some"}, [], "HOLDOUT must be an integer >= 0, not 'some'"),
    (S.DEMO, {"DEMO_CHECK": "2"}, [], "DEMO_CHECK must be 0 or 1, not '2'"),
    (S.DEMO, {"RERANK": "yes"}, [], "RERANK must be 0 or 1, not 'yes'"),
    (S.DEMO, {"NUM_SHARDS": "abc"}, [], "error: run.sh: NUM_SHARDS must be an integer >= 1, not 'abc'"),
    (S.DEMO, {"RERANK": "1", "RERANK_DEPTH": "0"}, [], "error: rerank.sh: RERANK_DEPTH must be an integer >= 1"),
    (S.SUBMIT, {"NODES": "0"}, [], "NODES must be an integer >= 1, not '0'"),
    (S.SUBMIT, {}, ["--gpus_per_node", "-1"], "GPUS_PER_NODE must be an integer >= 0, not '-1'"),
    (S.SUBMIT, {"BATCH": "0"}, [], "BATCH must be an integer >= 1, not '0'"),
    (S.SUBMIT, {}, ["--teacher_max_len", "big"], "TEACHER_MAX_LEN must be an integer >= 1, not 'big'"),
]


@pytest.fixture
def sandbox(tmp_path):
    """A DATA_DIR that looks complete, a python that logs every run but the settings check, a fake sbatch."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    ran = tmp_path / "ran.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\ncase " $* " in *" -m densir.settings "*) ;; *) echo "python $*" >> {ran} ;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(f'#!/bin/bash\necho "sbatch $*" >> {ran}\necho 101\n')
    for f in (python, sbatch):
        f.chmod(0o755)
    return {"data": data, "out": tmp_path / "out", "ran": ran, "python": str(python), "sbatch": str(sbatch)}


@pytest.mark.parametrize("script,env,flags,says", BAD, ids=[f"{b[0]}-{'-'.join(b[1]) or b[2][0]}" for b in BAD])
def test_bad_setting_is_one_line_before_anything_runs(script, env, flags, says, sandbox):
    base = {"PYTHON": sandbox["python"], "OUT_DIR": str(sandbox["out"]), "DATA_DIR": str(sandbox["data"]),
            "SBATCH": sandbox["sbatch"], "MODEL": "some-model"}
    if script == S.GET_DATA:
        base["SOURCE"] = str(sandbox["data"] / "no-such.zip")
    if script == S.SUBMIT:
        base["DATA_DIR"] = str(sandbox["out"] / "data")  # it would create it
    proc = run_cmd(["bash", SCRIPT_PATH.get(script, script), *flags], env=dict(base, **env), check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert says in proc.stderr
    if not says.startswith("error: "):
        assert proc.stderr.startswith(f"error: {script}: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # nothing ran: no python but the settings check (no model loaded, no precision probe), no sbatch,
    # no output directory
    assert not sandbox["ran"].exists(), sandbox["ran"].read_text()
    assert not sandbox["out"].exists()


@pytest.mark.parametrize("script", (S.RUN, S.GET_DATA, S.SUBMIT))
def test_unknown_option_and_missing_value_are_usage_errors(script):
    path = SCRIPT_PATH.get(script, script)
    proc = run_cmd(["bash", path, "--no_such_setting", "1"], check=False)
    assert proc.returncode == 2 and proc.stderr == f"error: {script}: unknown option --no_such_setting (see --help)\n"
    proc = run_cmd(["bash", path, "--depth" if script != S.RUN else "--batch"], check=False)
    assert proc.returncode == 2 and "needs a value" in proc.stderr and proc.stderr.count("\n") == 1


# --------------------------------------------------------------------------- --help
@pytest.mark.parametrize("script", S.SCRIPTS)
def test_help_lists_every_setting_with_type_and_default(script):
    out = run_cmd(["bash", SCRIPT_PATH.get(script, script), "--help"]).stdout
    for s in S.settings_of(script) + S.passed_on(script):
        line = f"  {s.name:<24} {s.type_text()}; default {s.default_text()}"
        assert re.search(rf"^{re.escape(line)}$", out, re.M), (s.name, line)
    for s in S.settings_of(script):  # and what it is
        assert " ".join(s.help.split()[:4]) in " ".join(out.split())


# --------------------------------------------------------------------------- one list: scripts and submit_pipeline.sh
def read_names(path) -> set:
    """Upper-case variables a bash file reads from the environment: each ${NAME:-...} / ${NAME-...} /
    ${NAME:+...}, and each $NAME it reads but never assigns."""
    text = "\n".join(line.split(" #")[0] for line in (REPO / path).read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    with_default = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):?[-+=]", text))
    read = {n for n in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text) if n.upper() == n}
    assignment = r"(?:^|[\s;({])(?:export\s+|local\s+)?([A-Z_][A-Z0-9_]*)(?:\[[^]]*\])?\+?="
    assigned = set(re.findall(assignment, text, re.MULTILINE))
    assigned |= set(re.findall(r"(?:mapfile -t|read -r|declare -A|for)\s+([A-Z_][A-Z0-9_]*)", text))
    return (with_default | (read - assigned)) - NOT_SETTINGS


@pytest.mark.parametrize("path", FILE_SCRIPTS)
def test_every_setting_a_script_reads_is_in_the_list(path):
    """A setting added to a script (its ${NAME:-default}, or a $NAME read from the environment) but not
    to densir/settings.py fails here."""
    found = read_names(path)
    assert found, path
    declared = set(S.names(FILE_SCRIPTS[path]))
    assert found <= declared, sorted(found - declared)


def test_read_names_sees_a_new_setting(tmp_path, monkeypatch):
    """The grep above finds a setting with a default, and one read bare from the environment."""
    (tmp_path / "x.sh").write_text('FOO=${FOO:-1}\nlocal y=$BAR_BAZ\nZ=1; echo "$Z ${PYTHON:-python}"\n')
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert read_names("x.sh") == {"FOO", "BAR_BAZ", "PYTHON"}


def _sample(s: S.Setting) -> str:
    """A valid value for setting ``s`` that is not its default."""
    fixed = {"SHARD": "1", "NUM_SHARDS": "4", "SKIP": "2", "DEPTH": "50", "MINE_RANGE_MIN": "1", "MINE_RANGE_MAX": "9",
             "BACKEND": "onnx", "QUANTIZE": "int8", "STAGE": "search", "MODEL": "some/model", "NPROC": "3"}
    if s.name in fixed:
        return fixed[s.name]
    if s.type == "choice":
        return s.choices[-1] if s.choices[-1] != s.default else s.choices[0]
    if s.type == "int":
        return "7"
    if s.type == "number":
        return "0.25"
    if s.type == "flags":
        return f"--{s.name.lower()} 1"
    return f"value of {s.name}"


def test_submit_pipeline_passes_every_setting_of_the_scripts_it_submits(tmp_path):
    """Each setting of run.sh, mine_hard_neg.sh and train_hn.sh (the module's list, and what grep finds
    in those scripts), given to slurm/submit_pipeline.sh as a --flag or an env var, is in the
    environment of every job it submits (sbatch exports it), with its value."""
    submitted = S.names(S.SUBMITTED)
    grepped = set().union(*(read_names(f) for f in SUBMITTED_FILES))
    assert grepped <= set(submitted), sorted(grepped - set(submitted))
    assert {"TEACHER", "DISTILL_LOSS", "TEACHER_MAX_LEN", "TEACHER_ARGS", "TEACHER_MISSING"} <= set(submitted)
    table = {s.name: s for s in S.SETTINGS if any(x in s.scripts for x in S.SUBMITTED)}
    values = {name: _sample(table[name]) for name in submitted}
    values.update(DATA_DIR=str(tmp_path / "data"), OUT_DIR=str(tmp_path / "out"), PYTHON=sys.executable)
    log = tmp_path / "envs.jsonl"
    sbatch = tmp_path / "sbatch"
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    sbatch.write_text(f"#!/bin/bash\n{sys.executable} -c '{dump}' >> {log}\necho 7\n")
    sbatch.chmod(0o755)
    env, flags = {"SBATCH": str(sbatch)}, []
    for i, (name, value) in enumerate(values.items()):  # half as flags, half as env vars
        if i % 2:
            flags += [f"--{name.lower()}", value]
        else:
            env[name] = value
    run_cmd(["bash", "slurm/submit_pipeline.sh", *flags], env=env)
    jobs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(jobs) == 14
    for job_env in jobs:
        got = {name: job_env.get(name) for name in submitted}
        assert got == values, {k: (got[k], v) for k, v in values.items() if got[k] != v}


def test_names_command_is_the_module_list():
    out = run_cmd([sys.executable, "-m", "densir.settings", "names", *S.SUBMITTED]).stdout.split()
    assert out == S.names(S.SUBMITTED)
    proc = run_cmd([sys.executable, "-m", "densir.settings", "check", "run.sh"], env={"BATCH": "-3"}, check=False)
    assert proc.returncode == 1 and proc.stderr == "error: run.sh: BATCH must be an integer >= 1, not '-3'\n"


def test_heldout_users_are_declared_per_setting_and_stage():
    """HYBRID=auto and VALIDATE=1 read the held-out train queries only in a round's script and only in the
    stages that use them: the list says so (Setting.heldout), the export hands it to scripts/stages.sh."""
    run = S.resolve(S.RUN, {"DATA_DIR": "d", "HYBRID": "auto", "VALIDATE": "1"})
    assert S.heldout_users(S.RUN, run) == ["HYBRID=auto", "VALIDATE=1"]
    assert S.heldout_users(S.RUN, {**run, "STAGE": "train"}) == ["VALIDATE=1"]
    assert S.heldout_users(S.RUN, {**run, "STAGE": "search"}) == ["HYBRID=auto"]
    assert S.heldout_users(S.RUN, {**run, "STAGE": "encode-corpus"}) == []
    assert S.heldout_users(S.TRAIN_HN, {**run, "VALIDATE": "0"}) == ["HYBRID=auto"]
    assert S.heldout_users(S.MINE, S.resolve(S.MINE, {"DATA_DIR": "d", "HYBRID": "auto", "VALIDATE": "1"})) == []
    assert "HELDOUT_USERS='HYBRID=auto VALIDATE=1'\n" in S.export_lines(S.RUN, run)
    assert "HELDOUT_USERS=''\n" in S.export_lines(S.RUN, {**run, "STAGE": "encode-corpus"})
