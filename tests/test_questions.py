"""Tests for pipeline.questions: valid-but-odd files load verbatim, bad files fail clearly."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, OpenbookError
from pipeline.questions import LETTERS, Question, has_answers, load_questions

HEADER = "id,prompt,A,B,C,D,E"
GOOD = "1,What is red?,apple,sky,grass,coal,snow\n2,What is blue?,apple,sky,grass,coal,snow\n"


def write(tmp_path: Path, content: str | bytes, name: str = "questions.csv") -> Path:
    """Write ``content`` byte-exact (no newline translation) and return the path."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def load_error(path: Path, **kwargs) -> str:
    """Load ``path`` expecting an InputError; return its message."""
    with pytest.raises(InputError) as info:
        load_questions(path, **kwargs)
    assert isinstance(info.value, OpenbookError)
    message = str(info.value)
    assert path.name in message
    assert "Fix: " in message
    return message


# --- valid files -------------------------------------------------------------

def test_basic_file(tmp_path):
    path = write(tmp_path, f"{HEADER},answer\n{GOOD.replace(chr(10), ',A' + chr(10))}")
    qs = load_questions(path)
    assert qs == [
        Question("1", "What is red?", ("apple", "sky", "grass", "coal", "snow"), "A", None, 1),
        Question("2", "What is blue?", ("apple", "sky", "grass", "coal", "snow"), "A", None, 2),
    ]
    assert has_answers(qs)
    assert LETTERS == ("A", "B", "C", "D", "E")


def test_unlabelled_file(tmp_path):
    qs = load_questions(write(tmp_path, f"{HEADER}\n{GOOD}"))
    assert [q.answer for q in qs] == [None, None]
    assert not has_answers(qs)
    assert not has_answers([])


def test_unicode_kept_verbatim(tmp_path):
    prompt = "Which 🧪 has the Greek letter λ (ΑΒΓ αβγ) and café vs cafe\u0301?"
    options = ("Ω ohm", "µ micro", "e\u0301", "ﬁ ligature", "🦠🔬")
    row = ",".join(["q-ü", prompt, *options])
    [q] = load_questions(write(tmp_path, f"{HEADER}\n{row}\n"))
    assert q.id == "q-ü"
    assert q.prompt == prompt  # no NFC/NFKC normalisation
    assert q.options == options


def test_na_like_options_preserved(tmp_path):
    options = ("None", "NA", "nan", "null", "N/A")
    path = write(tmp_path, f"{HEADER}\nNA,NULL,{','.join(options)}\nnan,#N/A,NaN,-nan,<NA>,None,n/a\n")
    q1, q2 = load_questions(path)
    assert (q1.id, q1.prompt, q1.options) == ("NA", "NULL", options)
    assert (q2.id, q2.prompt, q2.options) == ("nan", "#N/A", ("NaN", "-nan", "<NA>", "None", "n/a"))


def test_bom_is_stripped(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + f"{HEADER},answer\n1,p,a,b,c,d,e,B\n".encode())
    [q] = load_questions(path)
    assert (q.id, q.answer) == ("1", "B")


def test_quoted_newlines_and_crlf(tmp_path):
    text = (f"{HEADER}\r\n"
            '1,"line one\r\nline two\nline three","a, with comma","say ""hi""",c,d,e\r\n'
            '2,plain,a,b,c,d,e\r\n')
    q1, q2 = load_questions(write(tmp_path, text))
    assert q1.prompt == "line one\r\nline two\nline three"
    assert q1.options[:2] == ("a, with comma", 'say "hi"')
    assert (q2.id, q2.row) == ("2", 2)


def test_extra_columns_ignored_and_order_free(tmp_path):
    text = (",notes,E,D,C,B,A,prompt,id,answer\n"  # pandas' unnamed index column first
            "0,ignore me,e,d,c,b,a,P,x1,c\n")
    [q] = load_questions(write(tmp_path, text))
    assert q == Question("x1", "P", ("a", "b", "c", "d", "e"), "C", None, 1)


def test_header_names_stripped(tmp_path):
    path = write(tmp_path, " id , prompt ,A ,\tB, C,D,E , answer \n1,p,a,b,c,d,e,d\n")
    [q] = load_questions(path)
    assert (q.id, q.options, q.answer) == ("1", ("a", "b", "c", "d", "e"), "D")


def test_context_column(tmp_path):
    text = (f"{HEADER},context\n"
            '1,p,a,b,c,d,e,"Some context, with comma\nand newline"\n'
            "2,p,a,b,c,d,e,\n"
            "3,p,a,b,c,d,e,   \n")
    q1, q2, q3 = load_questions(write(tmp_path, text))
    assert q1.context == "Some context, with comma\nand newline"
    assert q2.context is None and q3.context is None


def test_lower_case_and_padded_answers(tmp_path):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,a\n2,p,a,b,c,d,e, e \n3,p,a,b,c,d,e,C\n"
    assert [q.answer for q in load_questions(write(tmp_path, text))] == ["A", "E", "C"]


def test_answer_column_empty_everywhere_means_unlabelled(tmp_path):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,\n2,p,a,b,c,d,e,  \n"
    qs = load_questions(write(tmp_path, text))
    assert [q.answer for q in qs] == [None, None]
    assert not has_answers(qs)


def test_values_keep_surrounding_whitespace(tmp_path):
    [q] = load_questions(write(tmp_path, f"{HEADER}\n1, spaced prompt ,  a,b ,c,d,e\n"))
    assert q.prompt == " spaced prompt "
    assert q.options[:2] == ("  a", "b ")


def test_blank_lines_skipped_and_not_counted(tmp_path):
    text = f"\n{HEADER}\n\n1,p,a,b,c,d,e\n,,,,,,\n\n2,p,a,b,c,d,e\n\n\n"
    qs = load_questions(write(tmp_path, text))
    assert [(q.id, q.row) for q in qs] == [("1", 1), ("2", 2)]


def test_huge_prompt_loads(tmp_path):
    csv.field_size_limit(131072)  # Python's default, whatever earlier tests did
    big = "λ" * 300_000
    [q] = load_questions(write(tmp_path, f'{HEADER}\n1,"{big}",a,b,c,d,e\n'))
    assert q.prompt == big


def test_pandas_written_file_round_trips(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"id": [0, 1], "prompt": ["p, q", "r\ns"], "A": ["None", "a"],
                       "B": ["NA", "b"], "C": ["nan", "c"], "D": ["d", "d"], "E": ["e", "é"],
                       "answer": ["A", "e"]})
    path = tmp_path / "train.csv"
    df.to_csv(path, index=True)
    q0, q1 = load_questions(path, require_answer=True)
    assert q0.options == ("None", "NA", "nan", "d", "e")
    assert (q1.id, q1.prompt, q1.answer) == ("1", "r\ns", "E")


def test_loading_modifies_nothing(tmp_path):
    path = write(tmp_path, f"{HEADER}\n{GOOD}")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(tmp_path)))
    load_questions(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(tmp_path))) == before


def test_accepts_str_path(tmp_path):
    assert len(load_questions(str(write(tmp_path, f"{HEADER}\n{GOOD}")))) == 2


# --- bad files: each names file, row (line) and column -----------------------

def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.csv")
    assert "not found" in message


def test_directory(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    message = load_error(tmp_path / "dir.csv")
    assert "directory" in message


def test_not_utf8_names_row_line_column_and_offset(tmp_path):
    head = f"{HEADER}\n1,p,a,b,c,d,e\n2,p,a,caf".encode()
    path = write(tmp_path, head + b"\xe9,c,d,e\n")
    message = load_error(path)
    assert "row 2 (line 3)" in message
    assert "column 'B'" in message
    assert f"byte offset {len(head)}" in message
    assert "0xe9" in message
    assert "UTF-8" in message and "re-save" in message


def test_not_utf8_after_multiline_prompt(tmp_path):
    head = f'{HEADER}\n1,"two\nlines",a,b,c,d,e\n2,p,a,b,c,d,'.encode()
    path = write(tmp_path, b"\xef\xbb\xbf" + head + b"\x96\n")  # cp1252 en dash, after a BOM
    message = load_error(path)
    assert "row 2 (line 4)" in message and "column 'E'" in message
    assert f"byte offset {len(head) + 3}" in message


def test_not_utf8_in_header(tmp_path):
    message = load_error(write(tmp_path, b"id,pr\xf6mpt,A,B,C,D,E\n1,p,a,b,c,d,e\n"))
    assert "line 1" in message and "byte offset 5" in message and "UTF-8" in message


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\ufeff"])
def test_empty_file(tmp_path, content):
    message = load_error(write(tmp_path, content))
    assert "empty" in message


def test_header_only(tmp_path):
    message = load_error(write(tmp_path, f"{HEADER},answer\n\n"))
    assert "no data rows" in message and "line 1" in message


def test_missing_columns_listed_with_header(tmp_path):
    message = load_error(write(tmp_path, "id,prompt,A,B,D,answer\n1,p,a,b,d,A\n"))
    assert "'C'" in message and "'E'" in message
    assert "'id,prompt,A,B,D,answer'" in message
    assert "'A'" not in message.split("header found")[0]


def test_missing_columns_case_hint(tmp_path):
    message = load_error(write(tmp_path, "ID,Prompt,A,B,C,D,E\n1,p,a,b,c,d,e\n"))
    assert "'id'" in message and "'prompt'" in message and "case-sensitive" in message


def test_missing_columns_separator_hint(tmp_path):
    message = load_error(write(tmp_path, "id;prompt;A;B;C;D;E\n1;p;a;b;c;d;e\n"))
    assert "separator" in message


def test_duplicate_header_column(tmp_path):
    message = load_error(write(tmp_path, f"{HEADER},A\n1,p,a,b,c,d,e,f\n"))
    assert "column 'A'" in message and "twice" in message


def test_row_with_too_few_fields(tmp_path):
    path = write(tmp_path, f'{HEADER}\n1,"multi\nline",a,b,c,d,e\n2,p,a,b,c,d\n')
    message = load_error(path)
    assert "row 2 (line 4)" in message
    assert "column 'E'" in message
    assert "6 field(s)" in message and "header has 7" in message


def test_row_with_too_many_fields(tmp_path):
    message = load_error(write(tmp_path, f"{HEADER}\n1,p,a,b,c,d,e\n2,p,a,b,c,d,e,oops\n"))
    assert "row 2 (line 3)" in message
    assert "last column is 'E'" in message
    assert "8 fields" in message and "'oops'" in message


@pytest.mark.parametrize("column", ["id", "prompt", *LETTERS])
@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_empty_required_value(tmp_path, column, blank):
    names = HEADER.split(",")
    values = ["2", "p", "a", "b", "c", "d", "e"]
    values[names.index(column)] = blank
    path = write(tmp_path, f"{HEADER}\n1,p,a,b,c,d,e\n{','.join(values)}\n")
    message = load_error(path)
    assert "row 2 (line 3)" in message
    assert f"column {column!r}" in message
    assert "empty" in message


def test_duplicate_id_names_both_rows(tmp_path):
    text = f"{HEADER}\n7,p,a,b,c,d,e\n8,p,a,b,c,d,e\n7,q,a,b,c,d,e\n"
    message = load_error(write(tmp_path, text))
    assert "row 3 (line 4)" in message and "row 1" in message
    assert "column 'id'" in message and "'7'" in message


def test_duplicate_id_ignoring_surrounding_whitespace(tmp_path):
    message = load_error(write(tmp_path, f"{HEADER}\n7,p,a,b,c,d,e\n 7 ,p,a,b,c,d,e\n"))
    assert "row 2" in message and "duplicate" in message


@pytest.mark.parametrize("bad", ["F", "AB", "1", "A.", "option A", "Ä"])
def test_answer_not_a_letter(tmp_path, bad):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,A\n2,p,a,b,c,d,e,{bad}\n"
    message = load_error(write(tmp_path, text))
    assert "row 2 (line 3)" in message
    assert "column 'answer'" in message
    assert repr(bad) in message


def test_answer_empty_in_some_rows(tmp_path):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,\n2,p,a,b,c,d,e,B\n3,p,a,b,c,d,e,\n"
    message = load_error(write(tmp_path, text))
    assert "row 1 (line 2)" in message and "column 'answer'" in message


def test_first_error_in_row_order(tmp_path):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,A\n2,p,a,,c,d,e,A\n3,p,a,b,c,d,e,Z\n"
    message = load_error(write(tmp_path, text))
    assert "row 2 (line 3), column 'B'" in message


@pytest.mark.parametrize("answers", [None, ["", ""]])
def test_require_answer(tmp_path, answers):
    if answers is None:
        text = f"{HEADER}\n{GOOD}"
    else:
        text = f"{HEADER},answer\n1,p,a,b,c,d,e,\n2,p,a,b,c,d,e,\n"
    path = write(tmp_path, text)
    assert len(load_questions(path)) == 2  # fine without the flag
    message = load_error(path, require_answer=True)
    assert "column 'answer'" in message and "required" in message


def test_require_answer_with_answers(tmp_path):
    text = f"{HEADER},answer\n1,p,a,b,c,d,e,b\n"
    assert [q.answer for q in load_questions(write(tmp_path, text), require_answer=True)] == ["B"]


def test_malformed_quotes(tmp_path):
    message = load_error(write(tmp_path, f'{HEADER}\n1,p,a,b,c,d,e\n2,"p"x,a,b,c,d,e\n'))
    assert "row 2 (line 3)" in message and "malformed" in message


def test_unclosed_quote(tmp_path):
    message = load_error(write(tmp_path, f'{HEADER}\n1,"p,a,b,c,d,e\n2,p,a,b,c,d,e\n'))
    assert "row 1 (line 2)" in message and "stopped at line 3" in message


# --- property: any valid table written by csv.writer loads back exactly ------

TRICKY = ["NA", "N/A", "None", "nan", "NaN", "null", "NULL", "#N/A", "-", '"', '""', "a,b",
          ' "quoted" ', "line\nbreak", "cr\rlf\r\n", "  padded  ", "ǅ", "🧪λ", "e\u0301",
          "\u2028sep", "\x85next", "tab\there", "\ufeffbom-inside", "0", "-0.0", "TRUE"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=40)
NONBLANK = st.one_of(st.sampled_from(TRICKY), TEXT).filter(lambda s: s.strip() != "")


@st.composite
def question_tables(draw):
    n = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(NONBLANK, min_size=n, max_size=n, unique_by=lambda s: s.strip()))
    labelled = draw(st.booleans())
    with_context = draw(st.booleans())
    rows = []
    for qid in ids:
        answer = draw(st.sampled_from(LETTERS)) if labelled else None
        rows.append({
            "id": qid,
            "prompt": draw(NONBLANK),
            "options": tuple(draw(NONBLANK) for _ in LETTERS),
            "answer": answer,
            "written_answer": (draw(st.sampled_from(["", " ", "  "])) + draw(
                st.sampled_from([answer, answer.lower()])) + draw(st.sampled_from(["", " "])))
            if labelled else "",
            "context": draw(st.one_of(st.just(""), NONBLANK)) if with_context else None,
            "extra": draw(st.one_of(st.just(""), TEXT)),
        })
    columns = ["id", "prompt", *LETTERS, "extra"]
    if labelled or draw(st.booleans()):
        columns.append("answer")
    if with_context:
        columns.append("context")
    order = draw(st.permutations(columns))
    quote_all = draw(st.booleans())
    bom = draw(st.booleans())
    return rows, list(order), quote_all, bom


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=question_tables())
def test_round_trip_property(tmp_path, table):
    rows, order, quote_all, bom = table
    path = tmp_path / "prop.csv"
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        if quote_all:  # the writer only quotes "\r" for its own line terminator, so quote all
            writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        else:
            writer = csv.writer(f)
        writer.writerow(order)
        for r in rows:
            cells = {"id": r["id"], "prompt": r["prompt"], "answer": r["written_answer"],
                     "context": r["context"], "extra": r["extra"],
                     **dict(zip(LETTERS, r["options"]))}
            writer.writerow([cells[c] for c in order])
    loaded = load_questions(path)
    assert len(loaded) == len(rows)
    for i, (q, r) in enumerate(zip(loaded, rows), start=1):
        assert q.row == i
        assert q.id == r["id"]
        assert q.prompt == r["prompt"]
        assert q.options == r["options"]
        assert q.answer == r["answer"]
        expected_context = r["context"] if r["context"] and r["context"].strip() else None
        assert q.context == expected_context


# --- several files -------------------------------------------------------------

def test_several_files_combined_with_file_prefixed_ids(tmp_path):
    from pipeline.questions import load_question_files

    (tmp_path / "x").mkdir()
    a = write(tmp_path, f"{HEADER}\n{GOOD}", "stem.csv")
    b = write(tmp_path, f"{HEADER}\n{GOOD}", "extra.csv")
    c = write(tmp_path / "x", f"{HEADER}\n{GOOD}", "stem.csv")
    assert load_question_files(a) == load_questions(a)  # one file: ids as written
    assert [q.id for q in load_question_files([a, b])] == ["stem:1", "stem:2", "extra:1", "extra:2"]
    assert [q.id for q in load_question_files([a, c])][::2] == ["1.stem:1", "2.stem:1"]
    assert [q.row for q in load_question_files([a, b])] == [1, 2, 1, 2]


def test_several_files_error_names_the_bad_one(tmp_path):
    from pipeline.questions import load_question_files

    a = write(tmp_path, f"{HEADER},answer\n1,Hi?,a,b,c,d,e,A\n", "good.csv")
    b = write(tmp_path, f"{HEADER},answer\n1,Hi?,a,b,c,d,e,F\n", "bad.csv")
    with pytest.raises(InputError, match=r"bad\.csv.*row 1"):
        load_question_files([a, b], require_answer=True)
    with pytest.raises(InputError, match="no question file"):
        load_question_files([])
