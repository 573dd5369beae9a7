"""densir.models: a hub id resolved offline from a Hugging Face cache gives what the same files in a
local dir give (the bundled all-MiniLM-L6-v2, laid out as a hub cache by tests/hub_cache.py)."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hub_cache import hub_commit, make_hub_cache

from densir.io import InputError
from densir.models import (
    CheckpointSettings,
    load_encoder_settings,
    load_reranker_settings,
    merge_settings,
    read_sentence_transformers_config,
    resolve_model_dir,
)
from densir.retriever.modeling import EncoderConfig

REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_DEFAULTS = asdict(EncoderConfig())
NOTHING_EXPLICIT = {"pooling": None, "normalize": None, "query_prefix": None, "passage_prefix": None}
V2 = {  # a second revision of the repo: cls pooling, no Normalize module, 128 tokens
    "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                     {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
    "1_Pooling/config.json": {"embedding_dimension": 384, "pooling_mode": "cls", "include_prompt": True},
    "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
}


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, minilm_path) -> Path:
    """REPO_ID at ``main`` (the bundled files) and at ``v2`` (see V2), in one hub cache."""
    tmp = tmp_path_factory.mktemp("hub")
    cache = make_hub_cache(tmp, REPO_ID, minilm_path)
    make_hub_cache(tmp, REPO_ID, minilm_path, revision="v2", overrides=V2, cache_dir=cache)
    return cache


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def snapshot(cache: Path, revision: str = "main") -> Path:
    return cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / hub_commit(cache, REPO_ID, revision)


# --------------------------------------------------------------------------- the fake cache is a real one
def test_hub_cache_resolves_with_huggingface_hub_and_transformers(hub_cache):
    from huggingface_hub import scan_cache_dir, snapshot_download
    from transformers import AutoConfig, AutoModel

    assert Path(snapshot_download(REPO_ID, cache_dir=hub_cache, local_files_only=True)) == snapshot(hub_cache)
    assert Path(snapshot_download(REPO_ID, revision="v2", cache_dir=hub_cache, local_files_only=True)) == \
        snapshot(hub_cache, "v2")
    assert snapshot(hub_cache) != snapshot(hub_cache, "v2")
    model = AutoModel.from_pretrained(REPO_ID, cache_dir=hub_cache)
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    assert AutoConfig.from_pretrained(REPO_ID, revision="v2", cache_dir=hub_cache).hidden_size == 384
    (repo,) = scan_cache_dir(hub_cache).repos
    assert repo.repo_id == REPO_ID and {r.commit_hash for r in repo.revisions} == \
        {hub_commit(hub_cache, REPO_ID, "main"), hub_commit(hub_cache, REPO_ID, "v2")}


# --------------------------------------------------------------------------- resolving
def test_local_dir_is_used_as_is(minilm_path):
    resolved = resolve_model_dir(minilm_path)
    assert resolved.local_dir == Path(minilm_path).resolve()
    assert resolved.name == minilm_path
    assert resolved.source == f"local dir {Path(minilm_path).resolve()}"


def test_hub_id_resolves_to_its_cached_snapshot(hub_cache):
    resolved = resolve_model_dir(REPO_ID, cache_dir=hub_cache)
    assert resolved.local_dir == snapshot(hub_cache)
    assert resolved.source == f"hub cache {snapshot(hub_cache)} (revision main)"


def test_hub_id_and_local_dir_give_the_same_settings(hub_cache, minilm_path, caplog):
    with caplog.at_level(logging.INFO, logger="densir.models"):
        _, hub_settings, hub_provenance = load_encoder_settings(REPO_ID, NOTHING_EXPLICIT, ENCODER_DEFAULTS,
                                                                  cache_dir=hub_cache)
    _, local_settings, local_provenance = load_encoder_settings(minilm_path, NOTHING_EXPLICIT, ENCODER_DEFAULTS)
    assert hub_settings == local_settings == {"pooling": "mean", "normalize": True, "untied": False,
                                              "query_prefix": "", "passage_prefix": "", "max_seq_length": 256,
                                              "append_eos": None, "matryoshka_dims": None, "bidirectional": False}
    assert hub_provenance == local_provenance == {
        "pooling": "checkpoint 1_Pooling/config.json", "normalize": "checkpoint modules.json",
        "untied": "default", "query_prefix": "default", "passage_prefix": "default",
        "max_seq_length": "checkpoint sentence_bert_config.json", "append_eos": "default",
        "matryoshka_dims": "default", "bidirectional": "default"}
    assert f"encoder {REPO_ID}: pooling=mean (from 1_Pooling/config.json)" in caplog.messages
    assert f"encoder {REPO_ID}: normalize=True (from modules.json)" in caplog.messages
    assert f"encoder {REPO_ID}: query_prefix='' (default)" in caplog.messages


def test_explicit_settings_win(hub_cache):
    explicit = dict(NOTHING_EXPLICIT, pooling="cls", normalize=False, query_prefix="query: ")
    _, settings, provenance = load_encoder_settings(REPO_ID, explicit, ENCODER_DEFAULTS, cache_dir=hub_cache)
    assert (settings["pooling"], settings["normalize"], settings["query_prefix"]) == ("cls", False, "query: ")
    assert provenance["pooling"] == provenance["normalize"] == provenance["query_prefix"] == "flag"
    assert provenance["max_seq_length"] == "checkpoint sentence_bert_config.json"


def test_model_revision(hub_cache):
    resolved, settings, provenance = load_encoder_settings(REPO_ID, NOTHING_EXPLICIT, ENCODER_DEFAULTS,
                                                           revision="v2", cache_dir=hub_cache)
    assert resolved.local_dir == snapshot(hub_cache, "v2")
    assert resolved.source == f"hub cache {snapshot(hub_cache, 'v2')} (revision v2)"
    assert (settings["pooling"], settings["normalize"], settings["max_seq_length"]) == ("cls", False, 128)
    assert provenance["normalize"] == "checkpoint modules.json"  # the module list has no Normalize
    commit = hub_commit(hub_cache, REPO_ID, "v2")
    assert resolve_model_dir(REPO_ID, revision=commit, cache_dir=hub_cache).local_dir == snapshot(hub_cache, "v2")


@pytest.mark.parametrize("name, revision, expected", [
    ("sentence-transformers/no-such-model", None, "revision main"),
    (REPO_ID, "no-such-branch", "revision no-such-branch"),
    (REPO_ID, "0" * 40, "revision " + "0" * 40),
])
def test_a_name_found_nowhere_is_one_clear_line(hub_cache, name, revision, expected):
    with pytest.raises(InputError) as err:
        resolve_model_dir(name, revision=revision, cache_dir=hub_cache)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: not a local dir and not in the Hugging Face cache")
    assert expected in message and f"cache dir {hub_cache}" in message and "HF_HUB_OFFLINE" in message


def test_online_the_hub_is_asked_only_after_a_cache_miss(monkeypatch, hub_cache, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    real = huggingface_hub.snapshot_download
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("local_files_only", False)))
        if kwargs.get("local_files_only"):
            return real(repo_id, **kwargs)
        if repo_id == "org/downloadable":
            return str(tmp_path)
        raise ConnectionError("no route to host\n(details)")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_model_dir(REPO_ID, cache_dir=hub_cache).local_dir == snapshot(hub_cache)
    assert calls == [(REPO_ID, True)]  # cached: the hub is not asked
    assert resolve_model_dir("org/downloadable", cache_dir=hub_cache).local_dir == tmp_path
    assert calls[1:] == [("org/downloadable", True), ("org/downloadable", False)]
    with pytest.raises(InputError) as err:
        resolve_model_dir("org/unreachable", cache_dir=hub_cache)
    assert str(err.value) == (f"org/unreachable: not a local dir and not in the Hugging Face cache (revision main, "
                              f"cache dir {hub_cache}), and the download failed: ConnectionError: no route to host")


def test_a_missing_path_is_not_looked_up_on_the_hub(tmp_path):
    for name in (str(tmp_path / "no-model"), "./no-model", "runs/round1/model"):
        with pytest.raises(InputError, match="no such model directory"):
            resolve_model_dir(name)
    with pytest.raises(InputError, match="not a valid Hugging Face model id"):
        resolve_model_dir("no such model")


# --------------------------------------------------------------------------- reading checkpoints
def settings_dir(tmp_path, minilm_path, files: dict) -> Path:
    """The bundled model's JSON files (no weights: settings only) with ``files`` written over them."""
    d = tmp_path / "model"
    for path in Path(minilm_path).rglob("*.json"):
        target = d / path.relative_to(minilm_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    for rel, obj in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(json.dumps(obj))
    return d


def test_prompts_and_sentence_transformers_5_pooling(tmp_path, minilm_path):
    d = settings_dir(tmp_path, minilm_path, {
        "1_Pooling/config.json": {"embedding_dimension": 384, "pooling_mode": "lasttoken"},
        "config_sentence_transformers.json": {"prompts": {"query": "query: ", "document": "passage: "}}})
    found = read_sentence_transformers_config(d)
    assert found == {"pooling": "last", "normalize": True, "query_prefix": "query: ", "passage_prefix": "passage: ",
                     "max_seq_length": 256}
    assert found.sources["query_prefix"] == found.sources["passage_prefix"] == "config_sentence_transformers.json"
    assert read_sentence_transformers_config(tmp_path / "empty") == {}  # a plain HF dir: nothing found


def test_a_pooling_densir_lacks_names_its_file(tmp_path, minilm_path):
    d = settings_dir(tmp_path, minilm_path, {"1_Pooling/config.json": {"pooling_mode_max_tokens": True}})
    with pytest.raises(InputError, match=r"1_Pooling/config.json: pooling 'max' is not one of densir's"):
        load_encoder_settings(d, NOTHING_EXPLICIT, ENCODER_DEFAULTS)
    _, settings, _ = load_encoder_settings(d, dict(NOTHING_EXPLICIT, pooling="mean"), ENCODER_DEFAULTS)
    assert settings["pooling"] == "mean"


def test_densir_config_wins_over_the_sentence_transformers_files(tmp_path, minilm_path):
    d = settings_dir(tmp_path, minilm_path, {"densir_config.json": {"pooling": "cls", "normalize": True,
                                                                    "untied": False, "query_prefix": "q: "}})
    _, settings, provenance = load_encoder_settings(d, NOTHING_EXPLICIT, ENCODER_DEFAULTS)
    assert (settings["pooling"], settings["query_prefix"], settings["max_seq_length"]) == ("cls", "q: ", 256)
    assert provenance["pooling"] == "checkpoint densir_config.json"
    assert provenance["max_seq_length"] == "checkpoint sentence_bert_config.json"


def test_merge_settings():
    found = CheckpointSettings(a=1, b=2, e=5)
    found.sources = {"a": "x.json"}  # b: a plain value, no file known
    settings, provenance = merge_settings({"a": None, "c": 3, "d": None}, found, {"a": 0, "b": 0}, "t")
    assert settings == {"a": 1, "b": 2, "c": 3}  # e: not a setting of this caller; d: None and nothing else
    assert provenance == {"a": "checkpoint x.json", "b": "checkpoint", "c": "flag"}
    settings, provenance = merge_settings({}, {}, {"a": 0}, "t")
    assert (settings, provenance) == ({"a": 0}, {"a": "default"})


# --------------------------------------------------------------------------- agreement with sentence-transformers
def st_pooling(model) -> str:
    (pooling,) = [m for m in model if type(m).__name__ == "Pooling"]
    mode = getattr(pooling, "pooling_mode", None) or pooling.get_pooling_mode_str()
    return {"lasttoken": "last"}.get(mode, mode)


@pytest.mark.parametrize("where", ["local dir", "hub cache"])
def test_bi_encoder_settings_agree_with_sentence_transformers(hub_cache, minilm_path, where):
    from sentence_transformers import SentenceTransformer

    if where == "local dir":
        model = SentenceTransformer(minilm_path, device="cpu")
        found = read_sentence_transformers_config(minilm_path)
    else:
        model = SentenceTransformer(REPO_ID, cache_folder=str(hub_cache), device="cpu", local_files_only=True)
        found = read_sentence_transformers_config(resolve_model_dir(REPO_ID, cache_dir=hub_cache).local_dir)
    assert found["pooling"] == st_pooling(model) == "mean"
    assert found["normalize"] == any(type(m).__name__ == "Normalize" for m in model) is True
    assert found["max_seq_length"] == model.max_seq_length == 256


def test_cross_encoder_settings_agree_with_sentence_transformers(tmp_path, tiny_bert_dir):
    """CrossEncoders saved by sentence-transformers itself (its max length in tokenizer_config.json, or
    in sentence_bert_config.json as densir's re-ranker writes it) and a pre-v4 one (no modules.json)."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    saved = tmp_path / "st-cross-encoder"
    CrossEncoder(tiny_bert_dir, num_labels=1, max_length=200, device="cpu").save(str(saved))
    legacy = tmp_path / "legacy-cross-encoder"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=1)
    model.config.sbert_ce_default_activation_function = "torch.nn.modules.linear.Identity"
    model.save_pretrained(legacy)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokenizer.model_max_length = 300
    tokenizer.save_pretrained(legacy)
    with_bert_config = tmp_path / "with-sentence-bert-config"
    shutil.copytree(saved, with_bert_config)
    bert_config = json.loads((saved / "sentence_bert_config.json").read_text())
    (with_bert_config / "sentence_bert_config.json").write_text(json.dumps(dict(bert_config, max_seq_length=100)))

    for d, max_len, max_len_source in ((saved, 200, "tokenizer_config.json"),
                                       (with_bert_config, 100, "sentence_bert_config.json"),
                                       (legacy, 300, "tokenizer_config.json")):
        ce = CrossEncoder(str(d), device="cpu")
        found = read_sentence_transformers_config(d)
        assert found["model_type"] == "CrossEncoder"
        assert found["num_labels"] == ce.num_labels == 1
        assert found["max_seq_length"] == ce.max_seq_length == max_len
        assert found.sources["max_seq_length"] == max_len_source
        activation = type(ce.activation_fn)
        assert found.get("activation_fn", "torch.nn.modules.activation.Sigmoid") == \
            f"{activation.__module__}.{activation.__name__}"
        _, settings, provenance = load_reranker_settings(d)
        assert settings["max_len"] == max_len and provenance["max_len"] == f"checkpoint {max_len_source}"
    assert found["activation_fn"] == "torch.nn.modules.linear.Identity"  # the legacy config.json key
    assert load_reranker_settings(legacy, max_len=64)[1]["max_len"] == 64


def test_reranker_max_len_from_a_bi_encoder(minilm_path):
    """Not a CrossEncoder: the tokenizer's limit (capped at 512), not the bi-encoder's max_seq_length."""
    _, settings, provenance = load_reranker_settings(minilm_path)
    assert settings == {"max_len": 512} and provenance == {"max_len": "checkpoint tokenizer_config.json"}


# --------------------------------------------------------------------------- end to end (needs the lead's wiring)
TEXTS = ["what is a dense retriever", "how do cross-encoders rank passages",
         "A dense retriever encodes queries and passages into vectors.",
         "Cross-encoders read the query and the passage together.",
         "bm25 is a sparse baseline", "sentence embeddings are mean pooled",
         "BM25 scores term overlap with length normalisation.",
         "Mean pooling averages the token embeddings of a sentence."]


def test_hub_id_and_local_dir_give_identical_vectors_and_the_same_training_loss(hub_cache, minilm_path):
    """DenseEncoder.load(hub id, cache_dir=...) must read the sentence-transformers files from the snapshot."""
    from densir.retriever.loss import ContrastiveLoss
    from densir.retriever.modeling import DenseEncoder
    from densir.tokenization import tokenize_batch

    encoders = {"local": DenseEncoder.load(minilm_path), "hub": DenseEncoder.load(REPO_ID, cache_dir=str(hub_cache))}
    for enc in encoders.values():
        assert (enc.config.pooling, enc.config.normalize, enc.config.max_seq_length) == ("mean", True, 256)
    vectors, losses = {}, {}
    for where, enc in encoders.items():
        queries = tokenize_batch(enc.tokenizer, TEXTS[0:8:2], 32)
        passages = tokenize_batch(enc.tokenizer, TEXTS[1:8:2], 64)
        enc.eval()
        with torch.inference_mode():
            vectors[where] = torch.cat([enc.encode_query(queries), enc.encode_passage(passages)])
        enc.train()
        torch.manual_seed(0)  # the same dropout masks for both
        q, p = enc(queries, passages)
        losses[where] = ContrastiveLoss(temperature=0.05)(q, p)
        losses[where].backward()
    assert torch.equal(vectors["local"], vectors["hub"])
    assert torch.allclose(vectors["local"].norm(dim=-1), torch.ones(8))
    assert losses["local"].item() == losses["hub"].item()
