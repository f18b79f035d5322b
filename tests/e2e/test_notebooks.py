"""The notebooks: stored clean, parameterised, and executed end to end on the demo corpus
(a 60-document slice of it) with the default models, as CI runs them."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = REPO / "notebooks"
EXPECTED = ["01_build_index.ipynb", "02_train_reader.ipynb", "03_predict.ipynb",
            "04_evaluate.ipynb"]
SAMPLE = REPO / "data" / "sample_questions.csv"


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebook", REPO / "scripts" / "run_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_notebook = _runner()


def _read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_the_numbered_set_is_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_without_outputs_and_parameterised(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [], f"{name}: a cell is stored with outputs; clear them"
        assert c.execution_count is None, f"{name}: a cell is stored with an execution count"
        ast.parse(c.source)  # plain Python: no magics
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell is the parameters"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    names = run_notebook.parameter_names(nb)
    assert {"wheels", "progress"} <= set(names)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # Only library calls: no functions or classes that exist only in a notebook.
    for c in code:
        for node in ast.walk(ast.parse(c.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda)), \
                f"{name}: logic belongs in pipeline/, not in the notebook"


def test_all_paths_are_parameters():
    want = {"01_build_index.ipynb": {"corpus", "corpus_format", "index_dir", "wheels"},
            "02_train_reader.ipynb": {"train_csv", "index_dir", "reader_dir", "wheels"},
            "03_predict.ipynb": {"questions_csv", "index_dir", "reader_dirs", "time_budget",
                                 "out", "wheels"},
            "04_evaluate.ipynb": {"questions_csv", "index_dir", "reader_dirs", "report_dir",
                                  "wheels"}}
    for name, params in want.items():
        assert params <= set(run_notebook.parameter_names(_read(name))), name


def test_unknown_parameter_is_refused():
    with pytest.raises(run_notebook.NotebookError, match="unknown parameter.*index_dri"):
        run_notebook.inject_parameters(_read("03_predict.ipynb"), {"index_dri": "x"})


# --- executed end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


def _run(name: str, work: Path, **params):
    return run_notebook.execute(NOTEBOOKS / name, dict(progress=False, **params),
                                out=work / "executed" / name, timeout=600)


@pytest.fixture(scope="module")
def index_dir(work) -> Path:
    out = work / "index"
    _run("01_build_index.ipynb", work, index_dir=str(out), corpus_format="demo", limit=60)
    return out


@pytest.fixture(scope="module")
def questions(work) -> Path:
    """The first 12 sample questions (CI time)."""
    with open(SAMPLE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    path = work / "questions.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows[:13])
    return path


def test_01_build_index(index_dir, work):
    meta = json.loads((index_dir / "meta.json").read_text())
    assert meta["complete"] is True and meta["counts"]["documents"] == 60
    assert meta["corpus"]["format"] == "demo"
    executed = nbformat.read(work / "executed" / "01_build_index.ipynb", as_version=4)
    assert "injected-parameters" in executed.cells[2].metadata["tags"]
    assert any(o.get("output_type") == "execute_result" for c in executed.cells
               if c.cell_type == "code" for o in c.outputs)


def test_02_train_reader_then_03_predict_with_it(index_dir, questions, work):
    reader = work / "reader"
    _run("02_train_reader.ipynb", work, train_csv=str(questions), index_dir=str(index_dir),
         reader_dir=str(reader), max_steps=2, batch_size=2, max_length=96, contexts=1)
    assert (reader / "openbook_reader.json").is_file()
    assert (reader / "model.safetensors").is_file()
    out = work / "sub" / "submission.csv"
    _run("03_predict.ipynb", work, questions_csv=str(questions), index_dir=str(index_dir),
         reader_dirs=[str(reader)], top_k=2, time_budget="1h", out=str(out))
    with open(out, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [str(i) for i in range(12)]
    assert all(len(set(r["prediction"].split()) & set("ABCDE")) == 3 for r in rows)
    report = json.loads(out.with_name("submission.report.json").read_text())
    assert report["scorer"].startswith("reader")
    assert report["time_budget"]["budget_seconds"] == 3600.0


def test_02_can_skip_training(index_dir, work):
    _run("02_train_reader.ipynb", work, index_dir=str(index_dir), run_training=False,
         reader_dir=str(work / "not-trained"))
    assert not (work / "not-trained").exists()


def test_04_evaluate_writes_report_and_plots(index_dir, questions, work):
    report = work / "report"
    nb = _run("04_evaluate.ipynb", work, questions_csv=str(questions), index_dir=str(index_dir),
              report_dir=str(report), top_k=2, max_contexts=2, limit=8)
    assert (report / "report.md").is_file()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs, "plots were written"
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]
    assert len(shown) == len(pngs)
