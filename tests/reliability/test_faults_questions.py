"""Question CSVs through ``python -m pipeline.predict``: bad ones are refused with a one-line
message naming the file, row/line and column and what to do, before any model is loaded and
without touching the previous submission; valid-but-odd ones just work."""

from __future__ import annotations

import csv
import io
import json

import pytest

from reliability_helpers import (assert_ok, assert_user_error, run_cli, snapshot, tiny_index)


@pytest.fixture(scope="module")
def rel_index(tmp_path_factory):
    return tiny_index(tmp_path_factory)


HEADER = "id,prompt,A,B,C,D,E\n"
ROW = "1,What is water made of?,hydrogen and oxygen,iron,gold,neon,salt\n"

#: fault -> (file bytes, words the one-line message must hold besides the file name)
BAD = {
    "missing_column": (b"id,prompt,A,B,C,D\n1,What?,a,b,c,d\n",
                       ["line 1", "missing required column(s) 'E'", "Fix:", "id,prompt,A,B,C,D,E"]),
    "empty_option": (f"{HEADER}1,What?,a,b,,d,e\n".encode(),
                     ["row 1 (line 2)", "column 'C'", "option is empty", "Fix: write the option"]),
    "blank_option": (f"{HEADER}1,What?,a,b,c,   ,e\n".encode(),
                     ["row 1 (line 2)", "column 'D'", "option is empty"]),
    "empty_prompt": (f"{HEADER}1,,a,b,c,d,e\n".encode(),
                     ["row 1 (line 2)", "column 'prompt'", "prompt is empty"]),
    "duplicate_id": (f"{HEADER}{ROW}2,Other?,a,b,c,d,e\n1,Again?,a,b,c,d,e\n".encode(),
                     ["row 3 (line 4)", "column 'id'", "duplicate id '1'", "row 1, line 2",
                      "unique id"]),
    "not_utf8": (f"{HEADER}1,Caf".encode() + b"\xe9 au lait?,a,b,c,d,e\n",
                 ["row 1 (line 2)", "column 'prompt'", "not valid UTF-8", "0xe9", "iconv"]),
    "zero_bytes": (b"", ["the file is empty", "Fix:", "id,prompt,A,B,C,D,E"]),
    "header_only": (HEADER.encode(), ["line 1", "header but no data rows", "Fix:"]),
    "answer_letter_F": (b"id,prompt,A,B,C,D,E,answer\n1,What?,a,b,c,d,e,F\n",
                        ["row 1 (line 2)", "column 'answer'", "answer 'F' is not one of A, B, C, "
                         "D, E", "Fix: write the letter"]),
    "answer_two_letters": (b"id,prompt,A,B,C,D,E,answer\n1,What?,a,b,c,d,e,AB\n",
                           ["row 1 (line 2)", "column 'answer'", "answer 'AB'"]),
    "too_many_fields": (f"{HEADER}1,What?,a,b,c,d,e,oops\n".encode(),
                        ["row 1 (line 2)", "8 fields but the header has 7", "'oops'",
                         "quote fields that contain commas"]),
    "too_few_fields": (f"{HEADER}1,What?,a,b,c\n".encode(),
                       ["row 1 (line 2)", "column 'D'", "5 field(s) but the header has 7"]),
    "unclosed_quote": (f'{HEADER}1,"What?,a,b,c,d,e\n'.encode(),
                       ["malformed CSV", "close every opening quote"]),
}


def _previous_outputs(folder):
    """A submission and report from an earlier run, which a failed run must leave as they are."""
    folder.mkdir()
    (folder / "submission.csv").write_text("id,prediction\n1,A B C\n", encoding="utf-8")
    (folder / "submission.report.json").write_text('{"earlier": true}\n', encoding="utf-8")
    return folder / "submission.csv"


@pytest.mark.parametrize("fault", list(BAD))
def test_bad_question_file_is_refused(fault, rel_index, tmp_path):
    data, needles = BAD[fault]
    questions = tmp_path / f"{fault}.csv"
    questions.write_bytes(data)
    out = _previous_outputs(tmp_path / "out")
    before = snapshot(out.parent)
    res = run_cli("predict", questions, "--index", rel_index, "--out", out, "--overwrite",
                  "--no-progress")
    assert_user_error(res, str(questions), *needles)
    assert "pipeline.index.embedding:" not in res.stderr  # refused before any model is loaded
    assert snapshot(out.parent) == before  # no new file, no temp file, previous ones unchanged


def test_bad_question_file_writes_nothing_in_a_fresh_folder(rel_index, tmp_path):
    questions = tmp_path / "dup.csv"
    questions.write_bytes(BAD["duplicate_id"][0])
    out = tmp_path / "fresh" / "submission.csv"
    res = run_cli("predict", questions, "--index", rel_index, "--out", out)
    assert_user_error(res, str(questions), "duplicate id")
    assert not out.exists() and not list(out.parent.rglob("*"))


def test_missing_question_file(rel_index, tmp_path):
    res = run_cli("predict", tmp_path / "nope.csv", "--index", rel_index,
                  "--out", tmp_path / "s.csv")
    assert_user_error(res, "nope.csv", "file not found", "Fix: check the path")
    assert not (tmp_path / "s.csv").exists()


# -- valid but odd: must work --------------------------------------------------------------

HUGE_PROMPT = " ".join(f"word{i % 997}" for i in range(20_000)) + " Which planet is red?"
LONG_OPTION = " ".join(["a very long option about the red iron oxide surface of Mars"] * 150)

#: row id -> (prompt, five options, answer); each is one odd-but-valid kind of input.
ODD = {
    "bom": ("What is water made of?", ["hydrogen and oxygen", "iron", "gold", "neon", "salt"],
            "A"),
    "quoted_newlines": ("Which planet\nis called the\r\nRed Planet?",
                        ["Venus", "Mars,\n the fourth planet", 'Earth "the blue one"', "Jupiter",
                         "Saturn"], "B"),
    "unicode": ("Quelle molécule est H₂O 💧 (水, νερό, ماء)?",
                ["l'eau 💧", "Fe₂O₃", "金 (or)", "Ne", "NaCl — sel"], "A"),
    "na_like_options": ("Which option is literally the word None?",
                        ["None", "NA", "nan", "NULL", "N/A"], "A"),
    "huge_prompt": (HUGE_PROMPT, ["Venus", "Mars", "Earth", "Jupiter", "Saturn"], "B"),
    "long_options": ("Which one describes Mars?",
                     [LONG_OPTION, LONG_OPTION.replace("Mars", "Venus"), "ice", "neon", "gold"],
                     "A"),
}
EXTRA_COLUMNS = ("source_title", "notes")


def _odd_csv() -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # CRLF line ends, as Excel writes them
    w.writerow(["id", "prompt", "A", "B", "C", "D", "E", "answer", *EXTRA_COLUMNS])
    for qid, (prompt, options, answer) in ODD.items():
        w.writerow([qid, prompt, *options, answer.lower(), "Some source, with a comma",
                    "note: \"quoted\"\nover two lines"])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")  # UTF-8 BOM


@pytest.fixture(scope="module")
def odd_run(rel_index, tmp_path_factory):
    """One predict run over a file that holds every odd-but-valid input (one model load)."""
    folder = tmp_path_factory.mktemp("odd")
    questions = folder / "odd.csv"
    questions.write_bytes(_odd_csv())
    out = folder / "submission.csv"
    res = run_cli("predict", questions, "--index", rel_index, "--out", out, "--no-progress")
    return questions, out, res


def test_odd_file_predicts(odd_run):
    questions, out, res = odd_run
    assert_ok(res)
    assert f"({len(ODD)} questions" in res.stdout and "MAP@3 = " in res.stdout


@pytest.mark.parametrize("qid", list(ODD))
def test_odd_input_is_answered(qid, odd_run):
    questions, out, res = odd_run
    assert res.returncode == 0, res.stderr[-3000:]
    with open(out, encoding="utf-8", newline="") as f:
        sub = {r["id"]: r["prediction"] for r in csv.DictReader(f)}
    assert list(sub) == list(ODD)  # every row, in file order, ids verbatim (BOM stripped)
    letters = sub[qid].split(" ")
    assert len(letters) == 3 and len(set(letters)) == 3 and set(letters) <= set("ABCDE")
    report = json.loads(out.with_name("submission.report.json").read_text(encoding="utf-8"))
    entry = {q["id"]: q for q in report["per_question"]}[qid]
    assert entry["answer"] == ODD[qid][2]  # answers upper-cased


def test_odd_file_text_is_kept_verbatim(odd_run):
    """What predict answered is the text as written (checked with the loader it uses)."""
    from pipeline.questions import load_questions

    questions = {q.id: q for q in load_questions(odd_run[0])}
    for qid, (prompt, options, _) in ODD.items():
        assert questions[qid].prompt == prompt
        assert list(questions[qid].options) == options  # "None", "NA", "nan" stay text
