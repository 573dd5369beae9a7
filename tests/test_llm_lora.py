"""LoRA through peft (densir.lora) on tiny random decoders built in tests/llm_models.py: a LoRA
encoder's vectors equal its merged model's, a killed-and-resumed LoRA run ends with the adapter of
an uninterrupted one, grad cache and gradient checkpointing give the plain run's adapter, and the
decoder cross-encoder scores at the last token (with LoRA too)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import KilledAtStep, kill_at, train_in_process
from llm_models import make_decoder, write_groups
from safetensors.torch import load_file

from densir.retriever.modeling import DenseEncoder
from densir.tokenization import tokenize_batch

pytest.importorskip("peft")

TEXTS = ["vitamin d deficiency and multiple sclerosis", "sleep and memory", "aspirin for prevention",
         "gene expression in tumour cells under hypoxia"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_decoder(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    return write_groups(tmp_path_factory.mktemp("groups") / "groups.jsonl", n=16)


def _args(model, groups, out, *extra):
    return ["--model_name_or_path", str(model), "--train_dir", str(groups), "--output_dir", str(out),
            "--pooling", "last", "--normalize", "true", "--temperature", "0.05", "--q_max_len", "16",
            "--p_max_len", "24", "--train_n_passages", "2", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-2", "--disable_tqdm", "true", "--lora", "--lora_r", "4", *map(str, extra)]


def _vectors(model_dir) -> torch.Tensor:
    enc = DenseEncoder.load(str(model_dir)).eval()
    with torch.no_grad():
        return enc.encode_passage(tokenize_batch(enc.tokenizer, TEXTS, 24, "", None, enc.eos_id))


def test_lora_saves_an_adapter_whose_vectors_equal_the_merged_model(tmp_path, llama_dir, groups):
    out = tmp_path / "run"
    train_in_process(_args(llama_dir, groups, out, "--max_steps", 3, "--save_strategy", "no", "--lora_merge"))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists() and (out / "merged" / "model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == llama_dir
    assert DenseEncoder.load(str(out)).is_lora and not DenseEncoder.load(str(out / "merged")).is_lora
    lora, merged, base = _vectors(out), _vectors(out / "merged"), _vectors(llama_dir)
    torch.testing.assert_close(lora, merged, atol=1e-5, rtol=0)
    assert (lora - base).abs().max() > 1e-3  # the adapter changed the vectors: the comparison could fail
    # shards of the adapter are never taken for the base model's
    from densir.embeddings import model_fingerprint

    assert model_fingerprint(DenseEncoder.load(str(out)).q_model) != model_fingerprint(DenseEncoder.load(llama_dir).q_model)


def test_lora_resume_after_kill_gives_the_uninterrupted_adapter(tmp_path, llama_dir, groups):
    """16 groups, batch 4: 4 steps an epoch, 6 steps; killed at step 3 (checkpoint-2) and resumed.
    LoRA dropout is on, so the RNG state must come back too."""
    common = ("--max_steps", 6, "--save_steps", 2, "--logging_steps", 1, "--lora_dropout", 0.1)
    train_in_process(_args(llama_dir, groups, tmp_path / "full", *common))
    out = tmp_path / "killed"
    argv = _args(llama_dir, groups, out, *common, "--resume_from_checkpoint", "auto")
    with pytest.raises(KilledAtStep):
        train_in_process(argv, callbacks=[kill_at(3)])
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    resumed = train_in_process(argv)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_step"] == 6
    a, b = load_file(tmp_path / "full" / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # lora_B starts at 0: training moved it


def test_lora_with_grad_cache_and_gradient_checkpointing(tmp_path, llama_dir, groups):
    common = ("--max_steps", 2, "--save_strategy", "no", "--lora_dropout", 0.0)
    runs = {"plain": (), "grad_cache": ("--grad_cache", "--gc_q_chunk_size", 2, "--gc_p_chunk_size", 3),
            "checkpointing": ("--gradient_checkpointing",)}
    adapters = {}
    for name, extra in runs.items():
        train_in_process(_args(llama_dir, groups, tmp_path / name, *common, *extra))
        adapters[name] = load_file(tmp_path / name / "adapter_model.safetensors")
    assert any(v.abs().max() > 0 for k, v in adapters["plain"].items() if "lora_B" in k)  # trained at all
    for name in ("grad_cache", "checkpointing"):
        for key, value in adapters["plain"].items():
            torch.testing.assert_close(adapters[name][key], value, atol=2e-5, rtol=1e-4, msg=f"{name} {key}")


# --------------------------------------------------------------------------- the decoder cross-encoder
def test_decoder_reranker_scores_at_the_last_token_and_trains_with_lora(tmp_path, llama_dir, groups):
    from densir.driver.train_reranker import main as train_reranker
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.retriever.modeling import pool

    torch.manual_seed(0)
    r = CrossEncoderReranker.load(llama_dir, max_len=32).eval()
    assert r.decoder and r.eos_id == r.tokenizer.eos_token_id
    pairs = [("sleep", t) for t in TEXTS]
    scores = {}
    for side in ("right", "left"):
        r.tokenizer.padding_side = side
        scores[side] = r.predict(pairs, batch_size=4)
        batch = r.tokenize(pairs)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for i in range(len(pairs)):
            assert ids[i][mask[i].bool()][-1] == r.eos_id
    torch.testing.assert_close(torch.as_tensor(scores["left"]), torch.as_tensor(scores["right"]), atol=1e-5, rtol=0)
    # independently: each pair alone, the head on the hidden state at its EOS
    with torch.no_grad():
        for i, pair in enumerate(pairs):
            one = r.tokenize([pair])
            hidden = r.model.model(**one).last_hidden_state
            assert int(one["input_ids"][0, -1]) == r.eos_id
            expected = r.model.score(hidden[0, -1]).item()
            assert scores["right"][i] == pytest.approx(expected, abs=1e-5)
            assert pool(hidden, one["attention_mask"], "last")[0].equal(hidden[0, -1])

    out = tmp_path / "reranker"
    train_reranker(["--model_name_or_path", llama_dir, "--train_dir", str(groups), "--output_dir", str(out),
                    "--max_len", "32", "--train_n_passages", "2", "--per_device_train_batch_size", "4",
                    "--max_steps", "2", "--learning_rate", "1e-2", "--save_strategy", "no", "--disable_tqdm", "true",
                    "--lora", "--lora_r", "4", "--lora_merge"])
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "densir_reranker.json").read_text())["head"] == "last_token"
    lora, merged = CrossEncoderReranker.load(str(out)), CrossEncoderReranker.load(str(out / "merged"))
    assert lora.is_lora and merged.decoder and not merged.is_lora
    torch.testing.assert_close(torch.as_tensor(lora.predict(pairs)), torch.as_tensor(merged.predict(pairs)),
                               atol=1e-5, rtol=0)
