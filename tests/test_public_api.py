"""The public API: ``from densir import ...`` gives every name of ``__all__``, ``import densir`` loads no
torch (the settings CLI and the stage scripts' checks import it), and the module docstring's example
runs as written (with the bundled MiniLM's dir in place of its hub id: no network here)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import REPO


def test_import_densir_loads_no_torch():
    code = "import sys, densir; assert 'torch' not in sys.modules, 'torch imported'; print(len(densir.__all__))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 10


def test_every_public_name_resolves_and_is_documented():
    """Each public name has a docstring with an example; each class or function taking several
    arguments says what they are (Args) and, for a function, what it returns."""
    import inspect

    import densir

    missing = []
    for name in densir.__all__:
        obj = getattr(densir, name)
        doc = inspect.getdoc(obj) or ""
        if "Example" not in doc:
            missing.append(f"{name}: no example")
        several = len(inspect.signature(obj).parameters) > 2
        if several and inspect.isfunction(obj) and not ("Args:" in doc and "Returns:" in doc):
            missing.append(f"{name}: no Args/Returns")
        if several and inspect.isclass(obj) and name in ("Searcher", "DenseEncoder", "CrossEncoderReranker") \
                and "Args:" not in doc:
            missing.append(f"{name}: no Args")
    assert not missing, missing
    assert set(densir.__all__) <= set(dir(densir))


def test_an_unknown_name_is_an_attribute_error():
    import densir

    try:
        densir.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("densir.NoSuchThing resolved")


def test_the_docstring_example_encodes_like_the_encode_stage(minilm_path):
    from densir import DenseEncoder, encode_texts, load_model

    encoder = load_model(minilm_path, "encoder", device="cpu")
    assert isinstance(encoder, DenseEncoder)
    vectors = encode_texts(encoder, ["what lowers blood pressure?", "aspirin"], "query", max_len=64, batch_size=32)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # MiniLM normalizes
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu").encode(["what lowers blood pressure?", "aspirin"])
    assert np.abs(vectors - st).max() < 1e-4


def test_the_readme_lists_the_public_api():
    """README "Python API" names exactly ``densir.__all__``."""
    import re

    import densir

    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("<!-- api:begin -->"):text.index("<!-- api:end -->")]
    listed = {n for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for n in re.findall(r"`(\w+)`", cell)}
    assert listed == set(densir.__all__), listed ^ set(densir.__all__)


def test_the_readme_layout_names_every_module():
    """README "Layout" names each module and package of densir/ (and nothing that is gone)."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):text.index("## Data formats")]
    block = layout[layout.index("```"):layout.rindex("```")]
    words = set(re.findall(r"[\w]+", block))
    top = {p.stem for p in (REPO / "densir").glob("*.py")} | {p.name for p in (REPO / "densir").iterdir()
                                                             if p.is_dir() and (p / "__init__.py").exists()}
    missing = sorted(name for name in top if name not in words)
    assert not missing, f"README Layout does not name {missing}"
    named = set(re.findall(r"^  ([a-z_]+)(?:\.py|/)", block, re.M))
    gone = sorted(name for name in named if name not in top)
    assert not gone, f"README Layout names {gone}, which densir/ no longer has"
