"""--attention_dropout: the attention-probability dropout of the encoder being trained
(densir.models.set_attention_dropout), which lets SDPA take its fused CPU kernel when it is 0."""
import pytest
import torch

from densir.models import set_attention_dropout
from densir.retriever.modeling import DenseEncoder


def _dropouts(model):
    return {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}


def test_build_sets_only_the_attention_dropout_and_saves_it(tiny_bert_dir, tmp_path):
    before = _dropouts(DenseEncoder.build(tiny_bert_dir).q_model)
    enc = DenseEncoder.build(tiny_bert_dir, attention_dropout=0.0)
    after = _dropouts(enc.q_model)
    attention = [n for n in after if n.endswith(".attention.self.dropout")]
    assert len(attention) == 2 and all(before[n] == 0.1 and after[n] == 0.0 for n in attention)
    assert all(after[n] == before[n] == 0.1 for n in after if n not in attention)  # hidden dropout untouched
    enc.save(tmp_path / "m")
    again = DenseEncoder.load(str(tmp_path / "m"))
    assert again.q_model.config.attention_probs_dropout_prob == 0.0
    assert all(_dropouts(again.q_model)[n] == 0.0 for n in attention)


def test_attention_without_dropout_is_deterministic_in_training(tiny_bert_dir):
    """With every dropout off but the attention's kept at 0, two training-mode forwards agree:
    the 0 reached the attention call (SDPA's dropout argument is read from that module)."""
    enc = DenseEncoder.build(tiny_bert_dir, attention_dropout=0.0)
    for name, m in enc.q_model.named_modules():
        if isinstance(m, torch.nn.Dropout) and not name.endswith(".attention.self.dropout"):
            m.p = 0.0
    batch = enc.tokenizer(["a query about cells", "another one"], return_tensors="pt", padding=True)
    enc.train()
    assert torch.equal(enc.encode_query(batch), enc.encode_query(batch))
    set_attention_dropout(enc.q_model, 0.5)
    assert not torch.equal(enc.encode_query(batch), enc.encode_query(batch))


def test_unknown_model_type_is_refused():
    class Config:
        model_type = "mystery"

    model = torch.nn.Module()
    model.config = Config()
    with pytest.raises(ValueError, match="mystery"):
        set_attention_dropout(model, 0.0)
