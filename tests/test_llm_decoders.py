"""Decoder backbones (tiny random Llama- and Qwen2-style models built in tests/llm_models.py, no
download): last-token pooling with an EOS appended for right- and left-padded batches, and the
query instruction / prefixes applied identically at train and encode time."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import train_in_process
from llm_models import make_decoder, write_groups

from densir.arguments import parse_args
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.collator import TrainCollator
from densir.retriever.modeling import DenseEncoder, instruction_prefix
from densir.tokenization import tokenize_batch

TEXTS = ["vitamin d deficiency and multiple sclerosis risk in adults and children of all ages",
         "sleep", "a randomized trial of aspirin", "gene expression in tumour cells under hypoxia"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def decoder_dir(request, tmp_path_factory):
    return make_decoder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_pooling_is_the_eos_hidden_state(decoder_dir, side):
    enc = DenseEncoder.load(decoder_dir, pooling="last").eval()
    assert enc.config.append_eos and enc.eos_id == enc.tokenizer.eos_token_id
    enc.tokenizer.padding_side = side
    max_len = 12  # the first text is longer: truncated, and still ends with EOS
    batch = tokenize_batch(enc.tokenizer, TEXTS, max_len, "", None, enc.eos_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] == max_len and int(mask.sum(1).min()) < max_len  # padded, one way or the other
    assert bool(mask[:, -1].all()) == (side == "left")
    with torch.no_grad():
        reps = enc.encode_passage(batch)
        hidden = enc.p_model(input_ids=ids, attention_mask=mask).last_hidden_state
    for i, text in enumerate(TEXTS):
        real = ids[i][mask[i].bool()].tolist()
        assert real[-1] == enc.eos_id and real.count(enc.eos_id) == 1
        eos_pos = int(((ids[i] == enc.eos_id) & mask[i].bool()).nonzero()[-1])
        torch.testing.assert_close(reps[i], hidden[i, eos_pos], atol=0, rtol=0)
        # and the same as the text run alone (no padding at all)
        alone = tokenize_batch(enc.tokenizer, [text], max_len, "", None, enc.eos_id)
        with torch.no_grad():
            single = enc.p_model(**alone).last_hidden_state[0, -1]
        torch.testing.assert_close(reps[i], single, atol=1e-5, rtol=1e-4)


def test_encoders_keep_their_pooling_without_eos(tiny_bert_dir):
    enc = DenseEncoder.load(tiny_bert_dir, pooling="last")
    assert enc.config.append_eos is False and enc.eos_id is None  # a BERT is not a decoder


def test_instruction_and_prefixes_are_saved_and_applied_at_encode(tmp_path, decoder_dir):
    groups = write_groups(tmp_path / "groups.jsonl", n=8)
    out = tmp_path / "run"
    task = "Given a scientific claim, retrieve documents that support or refute it"
    train_in_process(["--model_name_or_path", decoder_dir, "--train_dir", str(groups), "--output_dir", str(out),
                      "--pooling", "last", "--normalize", "true", "--query_instruction", task,
                      "--passage_prefix", "passage: ", "--q_max_len", "96", "--p_max_len", "32", "--train_n_passages", "2",
                      "--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "1e-3",
                      "--temperature", "0.05", "--disable_tqdm", "true", "--save_strategy", "no"])
    saved = json.loads((out / "densir_config.json").read_text())
    assert saved["query_prefix"] == instruction_prefix(task) == f"Instruct: {task}\nQuery: "
    assert saved["passage_prefix"] == "passage: " and saved["append_eos"] is True and saved["pooling"] == "last"

    # encode with no flags at all: the shard records what it applied
    from densir.retriever.encode import encode_file

    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query_id": f"q{i}", "query": t}) + "\n" for i, t in enumerate(TEXTS)))
    model_args, enc_args = parse_args(ModelArguments, EncodeArguments, argv=[
        "--model_name_or_path", str(out), "--encode_in_path", str(queries), "--encoded_save_path",
        str(tmp_path / "q"), "--encode_is_qry", "--q_max_len", "96", "--per_device_eval_batch_size", "3"])
    shard = encode_file(model_args, enc_args)
    assert shard.meta["prefix"] == instruction_prefix(task) and shard.meta["append_eos"] is True

    # the batch the trainer builds for these queries gives the same vectors, token for token
    enc = DenseEncoder.load(str(out)).eval()
    collate = TrainCollator(enc.tokenizer, 96, 32, enc.config.query_prefix, enc.config.passage_prefix,
                            eos_id=enc.eos_id)
    batch = collate([{"query": t, "passages": [t]} for t in TEXTS])
    first = batch["query"]["input_ids"][0][batch["query"]["attention_mask"][0].bool()]
    shown = enc.tokenizer.decode(first)
    assert shown.startswith(f"<s>Instruct: {task}\nQuery: ") and shown.endswith("</s>")
    with torch.no_grad():
        trained_on = enc.encode_query(batch["query"]).numpy()
    np.testing.assert_allclose(np.asarray(shard.vectors()), trained_on, atol=1e-5, rtol=0)
    passage = batch["passage"]["input_ids"][0][batch["passage"]["attention_mask"][0].bool()]
    assert enc.tokenizer.decode(passage).startswith("<s>passage: ")


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_decoder_sees_later_tokens_and_ignores_padding(decoder_dir, side):
    """--bidirectional: an early token's state depends on later tokens (it does not under causal attention);
    padding still changes nothing (a padded batch equals each text alone), on either padding side."""
    causal = DenseEncoder.load(decoder_dir, pooling="mean").eval()
    both = DenseEncoder.load(decoder_dir, pooling="mean").eval()
    both.set_bidirectional(True)
    a, b = "sleep and memory consolidation", "sleep and tumour cells under hypoxia"
    for enc in (causal, both):
        enc.tokenizer.padding_side = side
    states = {}
    for name, enc in (("causal", causal), ("both", both)):
        pair = tokenize_batch(enc.tokenizer, [a, b], 16, "", None, None)
        mask = pair["attention_mask"]
        with torch.no_grad():
            inputs = dict(pair)
            if name == "both":
                from densir.retriever.modeling import padding_mask_4d

                inputs["attention_mask"] = padding_mask_4d(mask, torch.float32)
            hidden = enc.p_model(**inputs).last_hidden_state
        first = [int(mask[i].nonzero()[1]) for i in range(2)]  # the first word after BOS (shared: "sleep")
        states[name] = [hidden[i, first[i]] for i in range(2)]
        reps = enc.encode_passage(pair)
        for i, text in enumerate((a, b)):  # padding never leaks in
            with torch.no_grad():
                alone = enc.encode_passage(tokenize_batch(enc.tokenizer, [text], 16, "", None, None))[0]
            torch.testing.assert_close(reps[i], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(states["causal"][0], states["causal"][1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(states["both"][0], states["both"][1], atol=1e-3)


def test_bidirectional_is_saved_applied_at_load_and_refused_for_encoders(tmp_path, decoder_dir, tiny_bert_dir):
    from densir.io import ParameterError

    enc = DenseEncoder.load(decoder_dir, pooling="last")
    enc.set_bidirectional(True)
    enc.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "densir_config.json").read_text())["bidirectional"] is True
    again = DenseEncoder.load(str(tmp_path / "m")).eval()
    assert again.config.bidirectional
    assert not any(getattr(m, "is_causal", False) for m in again.q_model.modules())
    batch = tokenize_batch(again.tokenizer, TEXTS, 16, "", None, again.eos_id)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_passage(batch), enc.eval().encode_passage(batch), atol=1e-6, rtol=0)
    with pytest.raises(ParameterError, match="bidirectional.*attends both ways"):
        DenseEncoder.load(tiny_bert_dir).set_bidirectional(True)
    with pytest.raises(ValueError, match="bidirectional decoder runs on torch"):
        again.with_backend("onnx")
