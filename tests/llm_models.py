"""Tiny randomly initialised decoder models (Llama- and Qwen2-style) with a byte-level BPE tokenizer
trained here: no download. ``make_decoder(out, "llama")`` writes a HF dir (ForCausalLM weights,
as a hub checkpoint holds them) that AutoModel / AutoModelForSequenceClassification read."""
from __future__ import annotations

from pathlib import Path

TEXTS = [
    "vitamin d deficiency and multiple sclerosis risk in adults",
    "0-dimensional biomaterials lack inductive properties",
    "the relationship between sleep and memory consolidation",
    "a randomized trial of aspirin for primary prevention",
    "gene expression in tumour cells under hypoxia",
    "Instruct: Given a scientific claim, retrieve documents that support or refute it Query:",
    "query: passage: what is the effect of exercise on blood pressure",
] * 5


def make_tokenizer(out: Path, padding_side: str = "right", pad_token: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    bos = tok.token_to_id("<s>")
    # Llama's template: BOS, no EOS (densir appends it for last-token pooling)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   padding_side=padding_side, model_max_length=256,
                                   **({"pad_token": pad_token} if pad_token else {}))
    fast.save_pretrained(out)
    return fast


def make_decoder(out, family: str = "llama", seed: int = 0) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    # Llama's tokenizer has no pad token; Qwen2's pads with its EOS (<|endoftext|>)
    tok = make_tokenizer(out, pad_token="</s>" if family == "qwen2" else None)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(family)
    model.save_pretrained(out)
    return str(out)


def write_groups(path: Path, n: int = 16, negatives: int = 3) -> Path:
    """``n`` small train groups in densir's JSONL layout, made of TEXTS."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            def text(k, i=i):
                return TEXTS[(i + k) % 7] + f" number {i + k}"

            f.write(json.dumps({
                "query_id": f"q{i}", "query": TEXTS[i % 7].split(" and ")[0] + f" {i}",
                "positive_passages": [{"docid": f"d{i}", "title": "", "text": text(0)}],
                "negative_passages": [{"docid": f"d{i}-{k}", "title": "", "text": text(k)}
                                      for k in range(1, negatives + 1)]}) + "\n")
    return path
