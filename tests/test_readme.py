"""The README's commands and expected figures stay true: figures come from the same table the tests use."""
from conftest import REPO


def test_readme_shows_setup_commands_and_expected_figures(expected):
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for key in ("scifact_bm25_flat", "scifact_minilm_zero_shot"):
        for metric, value in expected[key].items():
            if metric.startswith(("nDCG", "Recall", "MRR")):
                assert f"{value:.4f}" in readme, f"README lacks {key} {metric} {value}"


def test_makefile_pins_torch_in_the_same_pip_command():
    makefile = (REPO / "Makefile").read_text()
    assert 'pip install -q "$(TORCH)" -e' in makefile and "TORCH  ?= torch==2.13.0" in makefile
