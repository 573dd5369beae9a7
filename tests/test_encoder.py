"""DenseEncoder: save -> load gives the same embeddings (tied, untied, in-place load_weights), and
a saved tied dir loads in sentence-transformers with identical vectors (prompts = prefixes)."""
from __future__ import annotations

import pytest
import torch

from densir.retriever.modeling import DenseEncoder
from densir.tokenization import tokenize_batch

TEXTS = ["Vitamin D deficiency is linked to multiple sclerosis.", "short", "a somewhat longer passage " * 12]


def _embed(enc, texts=TEXTS, query=False, max_len=64):
    prefix = enc.config.query_prefix if query else enc.config.passage_prefix
    batch = tokenize_batch(enc.tokenizer, texts, max_len, prefix)
    with torch.no_grad():
        return (enc.encode_query if query else enc.encode_passage)(batch)


def _perturb(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("last", True)])
def test_save_load_same_embeddings_and_sentence_transformers_agrees(tmp_path, tiny_bert_dir, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    enc = DenseEncoder.build(tiny_bert_dir, pooling=pooling, normalize=normalize,
                             query_prefix="query: ", passage_prefix="passage: ").eval()
    _perturb(enc, 1)
    enc.config.max_seq_length = 64
    enc.save(tmp_path / "m")
    back = DenseEncoder.load(str(tmp_path / "m")).eval()
    assert (back.config.pooling, back.config.normalize, back.config.query_prefix) == (pooling, normalize, "query: ")
    torch.testing.assert_close(_embed(back), _embed(enc), atol=1e-6, rtol=0)
    torch.testing.assert_close(_embed(back, query=True), _embed(enc, query=True), atol=1e-6, rtol=0)

    st = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert st.max_seq_length == 64
    st_q = torch.as_tensor(st.encode(TEXTS, prompt_name="query"))
    st_p = torch.as_tensor(st.encode(TEXTS, prompt_name="document"))
    torch.testing.assert_close(st_q, _embed(enc, query=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(st_p, _embed(enc), atol=1e-5, rtol=0)


def test_untied_save_load_keeps_two_encoders(tmp_path, tiny_bert_dir):
    enc = DenseEncoder.build(tiny_bert_dir, pooling="mean", untie_encoder=True).eval()
    assert enc.config.untied and enc.p_model is not enc.q_model
    _perturb(enc.p_model, 2)
    enc.save(tmp_path / "u")
    assert (tmp_path / "u" / "query_model" / "model.safetensors").is_file()
    assert (tmp_path / "u" / "passage_model" / "model.safetensors").is_file()
    back = DenseEncoder.load(str(tmp_path / "u")).eval()
    assert back.config.untied
    torch.testing.assert_close(_embed(back, query=True), _embed(enc, query=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(_embed(back), _embed(enc), atol=1e-6, rtol=0)
    assert not torch.allclose(_embed(back, query=True), _embed(back), atol=1e-3)


def test_load_weights_in_place(tmp_path, tiny_bert_dir):
    src = DenseEncoder.build(tiny_bert_dir, pooling="mean").eval()
    _perturb(src, 3)
    src.save(tmp_path / "s")
    dst = DenseEncoder.build(tiny_bert_dir, pooling="mean").eval()
    params = list(dst.parameters())
    assert not torch.allclose(_embed(dst), _embed(src))
    dst.load_weights(tmp_path / "s")
    assert all(a is b for a, b in zip(params, dst.parameters()))  # an optimizer keeps its references
    torch.testing.assert_close(_embed(dst), _embed(src), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="untied"):
        DenseEncoder.build(tiny_bert_dir, untie_encoder=True).load_weights(tmp_path / "s")


def test_minilm_roundtrip_matches_the_original_checkpoint(tmp_path, minilm_path):
    from sentence_transformers import SentenceTransformer

    enc = DenseEncoder.build(minilm_path).eval()
    assert (enc.config.pooling, enc.config.normalize) == ("mean", True)
    enc.save(tmp_path / "mini")
    ref = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS)
    got = SentenceTransformer(str(tmp_path / "mini"), device="cpu").encode(TEXTS)
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(ref), atol=1e-5, rtol=0)
    torch.testing.assert_close(_embed(enc, max_len=256), torch.as_tensor(ref), atol=1e-5, rtol=0)
