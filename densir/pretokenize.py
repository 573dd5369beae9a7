"""Pre-tokenize train groups and a corpus once, so training and encoding skip the tokenizer.

A pre-tokenized record keeps every field but replaces strings by token-id lists without special
tokens: ``query`` -> ids; each passage's ``text`` -> ids of ``passage_text(title, text)``, title
emptied. Ids are truncated to the max length minus room for special tokens.
:func:`densir.tokenization.tokenize_batch` adds the special tokens back at batch time.
"""
from __future__ import annotations

from densir.formats import iter_corpus, iter_train_groups, passage_text
from densir.io import write_jsonl
from densir.tokenization import special_token_template


def _encoder(tokenizer, max_len: int):
    head, tail = special_token_template(tokenizer)
    room = max_len - len(head) - len(tail)

    def ids(text) -> list[int]:
        if isinstance(text, list):
            return text[:room]
        return tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"][:room]
    return ids


def pretokenize_groups(in_path, out_path, tokenizer, q_max_len: int, p_max_len: int) -> int:
    q_ids, p_ids = _encoder(tokenizer, q_max_len), _encoder(tokenizer, p_max_len)

    def passages(ps):
        return [{"docid": p.get("docid"), "title": "", "text": p_ids(passage_text(p.get("title"), p["text"]))}
                for p in ps]

    def records():
        for _, g in iter_train_groups(in_path):
            g = dict(g)
            g["query"] = q_ids(g["query"])
            g["positive_passages"] = passages(g["positive_passages"])
            g["negative_passages"] = passages(g["negative_passages"])
            yield g
    return write_jsonl(out_path, records())


def pretokenize_corpus(in_path, out_path, tokenizer, p_max_len: int) -> int:
    p_ids = _encoder(tokenizer, p_max_len)
    return write_jsonl(out_path, ({"docid": d, "title": "", "text": p_ids(passage_text(t, x))}
                                  for d, t, x in iter_corpus(in_path)))
