"""A local Hugging Face hub cache built from a model dir, laid out exactly as huggingface_hub writes one.

    cache = make_hub_cache(tmp_path, "sentence-transformers/all-MiniLM-L6-v2", minilm_dir)
    snapshot_download("sentence-transformers/all-MiniLM-L6-v2", cache_dir=cache, local_files_only=True)

Layout (huggingface_hub's cache, https://huggingface.co/docs/huggingface_hub/guides/manage-cache)::

    <cache>/models--<org>--<name>/
        blobs/<sha256 of the content>           every file once, by content
        snapshots/<commit>/<path>               relative symlinks into blobs/
        refs/<revision>                         the commit hash, no newline

The commit hash is derived from the files (and their paths), so the same files give the same
commit and a changed file gives another. A second call with another ``revision`` and
``overrides`` adds a second ref and snapshot to the same cache (blobs are shared, as on the hub).
Large files are hard-linked into blobs/ when the file system allows it, else copied.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def make_hub_cache(tmp_path, repo_id: str, src_dir, revision: str = "main", overrides: dict | None = None,
                   cache_dir=None, repo_type: str = "model") -> Path:
    """Lay ``src_dir``'s files out as ``repo_id`` at ``revision`` in a hub cache; return the cache dir.

    ``overrides``: ``{relative path: str | bytes | dict (written as JSON) | None (file left out)}``.
    ``cache_dir`` defaults to ``tmp_path / "hf-cache"``; pass an existing one to add a revision.
    ``repo_type``: ``"model"`` (``models--org--name``) or ``"dataset"`` (``datasets--org--name``).
    """
    src_dir = Path(src_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(tmp_path) / "hf-cache"
    repo = cache_dir / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    files: dict[str, tuple[str, Path | bytes]] = {}  # rel path -> (sha256, source file or content)
    for path in sorted(p for p in src_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(src_dir).as_posix()
        files[rel] = (_sha256_file(path), path)
    for rel, content in (overrides or {}).items():
        if content is None:
            files.pop(rel, None)
            continue
        if isinstance(content, dict | list):
            content = json.dumps(content, indent=2)
        if isinstance(content, str):
            content = content.encode("utf-8")
        files[rel] = (hashlib.sha256(content).hexdigest(), content)

    commit = hashlib.sha1("".join(f"{rel}\0{sha}\n" for rel, (sha, _) in sorted(files.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for rel, (sha, source) in files.items():
        blob = blobs / sha
        if not blob.exists():
            _write_blob(blob, source)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)  # huggingface_hub writes it without a newline
    return cache_dir


def hub_commit(cache_dir, repo_id: str, revision: str = "main") -> str:
    """The commit hash ``refs/<revision>`` points to."""
    return (Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "refs" / revision).read_text()


def _write_blob(blob: Path, source: Path | bytes) -> None:
    tmp = blob.with_name(blob.name + ".incomplete")  # huggingface_hub's own temp suffix
    if isinstance(source, bytes):
        tmp.write_bytes(source)
    else:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    os.replace(tmp, blob)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
