"""The one tokenization path of densir: queries and passages (bi-encoder) and query-passage pairs
(cross-encoder), from strings or from pre-tokenized token ids.

Pre-tokenized input (``densir.pretokenize``) is a list of token ids without special tokens; the
tokenizer's own ``prepare_for_model`` adds the special tokens, truncates and builds the
token-type ids exactly as it does for strings, so both kinds of input give the same tensors.
"""
from __future__ import annotations

import logging
from typing import Sequence

logger = logging.getLogger(__name__)


def tokenize_batch(tokenizer, items: Sequence, max_len: int, prefix: str = "", pad_to_multiple_of: int | None = None,
                   eos_id: int | None = None):
    """The one tokenization path for queries and passages (training, encoding, re-ranking).

    ``items`` are strings, or pre-tokenized lists of token ids without special tokens. The
    prefix (e.g. ``"query: "``) is put before each string; special tokens are added, the result
    truncated to ``max_len`` and padded to the longest item. ``eos_id``: every item ends with this
    token (:func:`ensure_eos`, last-token pooling of decoders). Returns tensors (``input_ids``,
    ``attention_mask``, [``token_type_ids``]).
    """
    if eos_id is not None:
        return pad_batch(tokenizer, tokenize_each(tokenizer, items, max_len, prefix, eos_id), pad_to_multiple_of)
    if all(isinstance(x, str) for x in items):
        return tokenizer([prefix + x for x in items], max_length=max_len, truncation=True, padding=True,
                         pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    return pad_batch(tokenizer, tokenize_each(tokenizer, items, max_len, prefix), pad_to_multiple_of)


def tokenize_each(tokenizer, items: Sequence, max_len: int, prefix: str = "", eos_id: int | None = None) -> list[dict]:
    """Every item tokenized as :func:`tokenize_batch` tokenizes it, unpadded: one dict of id lists
    per item (``input_ids`` and, for strings, what the tokenizer adds beside them). Tokenize once,
    then cut batches by length and pad each with :func:`pad_batch`: the same tensors as
    :func:`tokenize_batch` of the batch's items."""
    if eos_id is not None:
        return [ensure_eos(f, eos_id, max_len) for f in tokenize_each(tokenizer, items, max_len, prefix)]
    if all(isinstance(x, str) for x in items):
        enc = tokenizer([prefix + x for x in items], max_length=max_len, truncation=True, padding=False)
        keys = list(enc.keys())
        return [{k: enc[k][i] for k in keys} for i in range(len(items))]
    head, tail = special_token_template(tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    room = max(max_len - len(head) - len(tail), 0)
    features = []
    for x in items:
        ids = tokenizer(prefix + x, add_special_tokens=False)["input_ids"] if isinstance(x, str) else prefix_ids + list(x)
        features.append({"input_ids": head + ids[:room] + tail})
    return features


def token_windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of ``size`` tokens over ``length`` tokens, starting every ``stride``
    tokens until one reaches the end (the last may be shorter): ``stride <= size`` covers every
    token, neighbours overlapping by ``size - stride``. One window ``(0, length)`` when it fits."""
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(f"need 1 <= stride <= size, got size {size}, stride {stride}")
    windows = [(0, min(size, length))]
    while windows[-1][1] < length:
        start = windows[-1][0] + stride
        windows.append((start, min(start + size, length)))
    return windows


def tokenize_windows(tokenizer, texts: Sequence[str], max_len: int, size: int, stride: int, prefix: str = "",
                     eos_id: int | None = None) -> tuple[list[dict], list[int]]:
    """Every text tokenized once (no special tokens; a pre-tokenized item is its ids) and cut into :func:`token_windows` of token
    ids; each window then goes through :func:`tokenize_each`'s pre-tokenized path (prefix, special
    tokens, ``eos_id``), so a window is encoded as any pre-tokenized passage is. Returns the
    windows' features and, for each, the index of its text. A window must fit ``max_len`` with its
    prefix and special tokens (:func:`window_overhead`); the caller checks that once."""
    features, owner = [], []
    for i, ids in enumerate(token_ids(tokenizer, texts)):
        windows = [ids[a:b] for a, b in token_windows(len(ids), size, stride)]
        features.extend(tokenize_each(tokenizer, windows, max_len, prefix, eos_id))
        owner.extend([i] * len(windows))
    return features, owner


def token_ids(tokenizer, items: Sequence) -> list[list[int]]:
    """Each item's token ids without special tokens: strings tokenized in one call, lists of ids as they are."""
    strings = [i for i, x in enumerate(items) if isinstance(x, str)]
    out = [list(x) if not isinstance(x, str) else None for x in items]
    if strings:
        for i, ids in zip(strings, tokenizer([items[i] for i in strings], add_special_tokens=False)["input_ids"]):
            out[i] = ids
    return out


def window_overhead(tokenizer, prefix: str = "", eos_id: int | None = None) -> int:
    """Tokens :func:`tokenize_windows` adds to each window: special tokens, the prefix, a missing EOS."""
    head, tail = special_token_template(tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    eos = 1 if eos_id is not None and not (tail and tail[-1] == eos_id) else 0
    return len(head) + len(prefix_ids) + len(tail) + eos


def ensure_eos(feature: dict, eos_id: int, max_len: int) -> dict:
    """``feature`` (one item's id lists) ending with ``eos_id``: appended when the tokenizer did not
    put it there, the last token dropped first when the item is already ``max_len`` long (so a
    truncated text ends ``... EOS`` as Tevatron's RepLLaMA tokenizes to ``max_len - 1`` and appends it)."""
    ids = list(feature["input_ids"])
    if ids and ids[-1] == eos_id:
        return feature
    keep = min(len(ids), max(max_len - 1, 0))
    out = {}
    for key, values in feature.items():
        values = list(values)[:keep]
        if key == "input_ids":
            extra = eos_id
        elif key == "token_type_ids":
            extra = values[-1] if values else 0  # the segment of the token before it
        else:
            extra = 1  # attention_mask
        out[key] = values + [extra]
    return out


def pad_batch(tokenizer, features: Sequence[dict], pad_to_multiple_of: int | None = None):
    """Tensors of :func:`tokenize_each`'s features, padded to the longest (the tokenizer's own padding)."""
    return tokenizer.pad(list(features), padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")


def token_lengths(tokenizer, items: Sequence, max_len: int, prefix: str = "") -> list[int]:
    """How many tokens :func:`tokenize_batch` gives each item (special tokens included, after
    truncation), without padding or tensors: what length-sorted, token-budget batches are cut by."""
    return [len(f["input_ids"]) for f in tokenize_each(tokenizer, items, max_len, prefix)]


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list:
    """Indices of ``lengths`` in batches, longest first: at most ``batch_size`` items, and with
    ``max_tokens`` at most that many padded tokens (items x the batch's longest) per batch (an item
    longer than the budget gets a batch of its own). Ties keep input order."""
    import numpy as np

    order = np.argsort([-n for n in lengths], kind="stable")
    batches, current = [], []
    for i in order:
        # sorted longest first: the batch's first item is its longest
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or (max_tokens and (len(current) + 1) * longest > max_tokens)):
            batches.append(np.asarray(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.asarray(current))
    return batches


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence (e.g. [CLS] ... [SEP])."""
    cached = getattr(tokenizer, "_densir_template", None)
    if cached is not None:
        return cached
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i:i + len(inner)] == inner:
            template = (full[:i], full[i + len(inner):])
            break
    else:
        raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")
    tokenizer._densir_template = template
    return template


def tokenize_pairs(tokenizer, queries: Sequence, passages: Sequence, max_len: int,
                   pad_to_multiple_of: int | None = None, eos_id: int | None = None) -> dict:
    """The one tokenization path for (query, passage) pairs, training and re-ranking alike.

    Strings go through the tokenizer's pair encoding (special tokens and token-type ids as the
    model expects), truncating only the passage so the whole pair fits ``max_len``. Pre-tokenized
    pairs (lists of token ids without special tokens, as in pre-tokenized train groups) are put
    into the same template. A query too long to leave room for any passage is cut too (warned once).
    ``eos_id``: every pair ends with that token (a decoder re-ranker's score is read there).
    Returns padded tensors.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
    if eos_id is not None:  # a decoder scored at its last token: each pair in max_len - 1 tokens, then EOS
        features = []
        for q, p in zip(queries, passages):
            one = tokenize_pairs(tokenizer, [q], [p], max_len - 1)
            features.append(ensure_eos({k: v[0].tolist() for k, v in one.items()}, eos_id, max_len))
        return tokenizer.pad(features, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    if all(isinstance(x, str) for x in queries) and all(isinstance(x, str) for x in passages):
        kwargs = dict(max_length=max_len, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
        try:
            return tokenizer(list(queries), list(passages), truncation="only_second", **kwargs)
        except Exception as e:  # some query leaves no room: 'only_second' cannot fit that pair
            if "truncat" not in str(e).lower():
                raise
        # pair by pair, so a pair's tokens never depend on the batch it is in
        features = []
        for q, p in zip(queries, passages):
            try:
                enc = tokenizer(q, p, truncation="only_second", max_length=max_len)
            except Exception:
                _warn_long_query()
                enc = tokenizer(q, p, truncation="longest_first", max_length=max_len)
            features.append(dict(enc))
        return tokenizer.pad(features, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    head, mid, tail, types = pair_token_template(tokenizer)
    features = []
    for q, p in zip(queries, passages):
        q = tokenizer(q, add_special_tokens=False)["input_ids"] if isinstance(q, str) else list(q)
        p = tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
        room = max(max_len - len(head) - len(mid) - len(tail), 0)
        if len(q) >= room:
            _warn_long_query()
            q = q[:max(room - 1, 0)]
        p = p[:room - len(q)]
        ids = head + q + mid + p + tail
        feat = {"input_ids": ids}
        if types is not None:
            first = len(head) + len(q) + len(mid)
            feat["token_type_ids"] = [types[0]] * first + [types[1]] * (len(ids) - first)
        features.append(feat)
    return tokenizer.pad(features, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")


def pair_token_template(tokenizer) -> tuple[list[int], list[int], list[int], tuple[int, int] | None]:
    """Special tokens around a pair, ``head + query + mid + passage + tail``, and the two segment ids."""
    cached = getattr(tokenizer, "_densir_pair_template", None)
    if cached is not None:
        return cached
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    enc = tokenizer("a", "b", add_special_tokens=True)
    full = enc["input_ids"]
    for i in range(len(full) - len(a) + 1):
        if full[i:i + len(a)] != a:
            continue
        for j in range(i + len(a), len(full) - len(b) + 1):
            if full[j:j + len(b)] == b:
                types = None
                if "token_type_ids" in enc:
                    tt = enc["token_type_ids"]
                    types = (tt[i], tt[j])
                template = (full[:i], full[i + len(a):j], full[j + len(b):], types)
                tokenizer._densir_pair_template = template
                return template
    raise ValueError(f"cannot locate the pair template of {type(tokenizer).__name__}")


_warned_long_query = False


def _warn_long_query():
    global _warned_long_query
    if not _warned_long_query:
        logger.warning("a query leaves no room for its passage within max_len: the query is truncated too")
        _warned_long_query = True
