"""benchmarks/ is a package of modules sharing benchmarks.common: no sys.path edits, no
cross-script imports, source recall through pipeline.retrieval.sources (no models)."""

from __future__ import annotations

import ast
import importlib

import numpy as np
import pytest

from benchmarks.common import REPO, cached_probabilities, markdown, needle_id, source_doc_id

SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py")
                 if p.name not in ("__init__.py", "common.py"))


def test_the_scripts_are_there():
    assert {"quality", "zeroshot_shared", "retrieval_recall"} <= {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_each_script_is_a_module_without_path_edits(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            pytest.fail(f"{path.name}:{node.lineno} touches sys.path")
        if isinstance(node, ast.Import):
            for a in node.names:
                assert a.name.split(".")[0] not in {p.stem for p in SCRIPTS} and \
                    not a.name.startswith("benchmarks."), f"{path.name}:{node.lineno} imports {a.name}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            assert top not in {p.stem for p in SCRIPTS}, \
                f"{path.name}:{node.lineno} imports another script ({node.module})"
            if node.module.startswith("benchmarks."):
                assert node.module == "benchmarks.common", \
                    f"{path.name}:{node.lineno}: share code through benchmarks.common"
            assert not (node.module == "pipeline.metrics"
                        and any(a.name == "recall_at_k" for a in node.names)), \
                f"{path.name}:{node.lineno}: source recall goes through pipeline.retrieval.sources"
    doc = ast.get_docstring(tree) or ""
    assert f"benchmarks/{path.name}" not in doc, "usage lines say python -m benchmarks.NAME"
    importlib.import_module(f"benchmarks.{path.stem}")


def test_cached_probabilities_score_once_per_inputs(tmp_path):
    reader = tmp_path / "reader"
    reader.mkdir()
    (reader / "model.safetensors").write_bytes(b"weights")
    csv = tmp_path / "q.csv"
    csv.write_text("id,prompt\n1,p\n")
    calls = []

    def compute():
        calls.append(1)
        return np.full((1, 5), 0.2)

    cache = str(tmp_path / "cache")
    a = cached_probabilities(cache, str(reader), str(csv), ["ctx"], compute)
    b = cached_probabilities(cache, str(reader), str(csv), ["ctx"], compute)
    assert len(calls) == 1 and np.array_equal(a, b)
    cached_probabilities(cache, str(reader), str(csv), ["other ctx"], compute)
    cached_probabilities(cache, str(reader), str(csv), ["ctx"], compute, max_length=128)
    assert len(calls) == 3
    cached_probabilities(None, str(reader), str(csv), ["ctx"], compute)  # no cache: always scores
    assert len(calls) == 4 and len(list((tmp_path / "cache").glob("reader-*.npy"))) == 3


def test_haystack_ids_and_tables():
    assert source_doc_id("stem-12") == needle_id("stem_1k", 12) == "stem_1k-12"
    assert source_doc_id("extra-0") == "extra_500-0" and source_doc_id("train_6k-5") == "train_6k-5"
    assert markdown([{"a": 1}], ["a", "b"]).splitlines() == ["| a | b |", "|---|---|", "| 1 |  |"]
