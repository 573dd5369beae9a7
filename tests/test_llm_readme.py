"""The README's "LLM retrievers" command block, run as written (torchrun, 1 process on the CPU) with a
tiny random Llama given by hub id through a local Hugging Face cache (tests/hub_cache.py)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import REPO, run_cmd
from hub_cache import make_hub_cache
from llm_models import make_decoder, write_groups

pytest.importorskip("peft")
HUB_ID = "densir-test/tiny-llama"


def _readme_block() -> str:
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- llm-retrievers-command -->\n```bash\n(.*?)```", readme, re.S)
    assert m, "README lacks the LLM retrievers command block"
    return m.group(1)


def test_readme_llm_command_trains_lora_by_hub_id_and_encodes(tmp_path):
    block = _readme_block()
    assert "torchrun" in block and "--lora" in block and "--pooling last" in block and "--flags" in block
    cache = make_hub_cache(tmp_path, HUB_ID, make_decoder(tmp_path / "src", "llama"))
    groups = write_groups(tmp_path / "train.jsonl", n=8, negatives=15)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"docid": f"d{i}", "title": "", "text": f"passage {i} on sleep"}) + "\n"
                              for i in range(6)))
    out = tmp_path / "out"
    env = {"MODEL": HUB_ID, "NPROC": "1", "MAX_STEPS": "2", "TRAIN": str(groups), "OUT": str(out),
           "CORPUS": str(corpus), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run_cmd(["bash", "-euo", "pipefail", "-c", block], env=env, cwd=tmp_path, timeout=900)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == HUB_ID and adapter["r"] == 32
    assert sorted(adapter["target_modules"]) == sorted("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj".split(","))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2
    config = json.loads((out / "densir_config.json").read_text())
    assert config["pooling"] == "last" and config["append_eos"] is True
    assert config["query_prefix"].startswith("Instruct: Given a web search query")
    shard = json.loads((out / "corpus.json").read_text())
    assert shard["count"] == 6 and shard["prefix"] == "passage: " and shard["append_eos"] is True
    assert np.isfinite(np.load(out / "corpus.npy")).all()
    assert (out / "merged" / "model.safetensors").is_file()
