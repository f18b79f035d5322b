"""CirrusSearch dumps (``--format cirrus``): hand-made gzipped bulk files, index line then document."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from pipeline.corpus.documents import CorpusStats
from pipeline.corpus.stream import FORMATS, detect_format, iter_documents
from pipeline.errors import CorpusError

NAME = "enwiki-20240101-cirrussearch-content.json.gz"


def page(page_id: int, title: str, text: str, *, namespace: int = 0,
         opening: str | None = None) -> dict:
    return {"template": ["Template:Infobox"], "content_model": "wikitext",
            "opening_text": opening, "wiki": "enwiki", "auxiliary_text": ["a caption"],
            "language": "en", "title": title, "text": text, "defaultsort": None,
            "redirect": [{"namespace": 0, "title": f"{title}s"}], "heading": ["History"],
            "namespace": namespace, "namespace_text": "" if namespace == 0 else "User",
            "page_id": page_id, "incoming_links": 3}


PAGES = [
    page(12, "Anarchism", "Anarchism is a political philosophy. History: it began long ago.",
         opening="Anarchism is a political philosophy."),
    page(25, "Autism", "Autism is a neurodevelopmental condition.", opening=None),
    page(39, "User:Someone", "A user page, not an article.", namespace=2),
    page(290, "A", "", opening=""),  # empty text: skipped
    page(303, "Alabama", "Alabama is a state in the Southeastern United States.",
         opening="Alabama is a state."),
]


def dump(path: Path, pages: list[dict], *, action: str = "index") -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for p in pages:
            f.write(json.dumps({action: {"_type": "_doc", "_id": str(p["page_id"])}}) + "\n")
            f.write(json.dumps(p) + "\n")
    return path


def test_detected_from_the_name():
    assert detect_format(NAME) == "cirrus" and "cirrus" in FORMATS
    assert detect_format("enwiki-20240101-cirrussearch-general.json.bz2") == "cirrus"
    assert detect_format("docs.json.gz") == "jsonl"  # other JSON stays JSON Lines


def test_reads_articles_with_page_ids(tmp_path):
    stats = CorpusStats()
    docs = list(iter_documents(dump(tmp_path / NAME, PAGES), stats=stats))
    assert [(d.doc_id, d.title) for d in docs] == [("12", "Anarchism"), ("25", "Autism"),
                                                   ("303", "Alabama")]
    assert docs[0].text == PAGES[0]["text"]
    assert (stats.read, stats.yielded, stats.skipped_namespace, stats.skipped_empty) == (5, 3, 1, 1)


def test_opening_text_only_via_text_column(tmp_path):
    path = dump(tmp_path / NAME, PAGES)
    docs = list(iter_documents(path, text_column="opening_text"))
    assert [(d.doc_id, d.text) for d in docs] == [("12", "Anarchism is a political philosophy."),
                                                  ("303", "Alabama is a state.")]


def test_format_flag_on_any_json_name_and_create_actions(tmp_path):
    path = dump(tmp_path / "file-1.json.gz", PAGES[:2], action="create")
    assert [d.doc_id for d in iter_documents(path, "cirrus")] == ["12", "25"]
    with pytest.raises(CorpusError, match=r"file-1\.json\.gz: line 1: an index line, as in a "
                                          r"CirrusSearch dump .*Fix: pass --format cirrus\."):
        list(iter_documents(path))  # read as JSON Lines


def test_a_directory_of_cirrus_files(tmp_path):
    (tmp_path / "d").mkdir()
    dump(tmp_path / "d" / "a-cirrussearch-content.json.gz", PAGES[:2])
    dump(tmp_path / "d" / "b-cirrussearch-content.json.gz", PAGES[4:])
    assert [d.doc_id for d in iter_documents(tmp_path / "d")] == ["12", "25", "303"]


def _many(n: int) -> list[dict]:
    return [page(1000 + i, f"Page {i}", f"Page {i} reports the value {i * 7919 % 10007} in "
                 f"{1000 + i * 37 % 997} trials of experiment {i}.") for i in range(n)]


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    path = dump(tmp_path / NAME, _many(3000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    docs = []
    with pytest.raises(CorpusError) as info:
        for d in iter_documents(path):
            docs.append(d)
    msg = str(info.value)
    assert msg.startswith(f"{path}: the CirrusSearch dump is truncated or damaged after ")
    assert "EOFError" in msg and "Fix: re-download the dump" in msg and "\n" not in msg
    assert 0 < len(docs) < 3000 and docs[0].doc_id == "1000"


def test_index_line_without_its_document_is_an_error(tmp_path):
    path = tmp_path / NAME
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"index": {"_id": "1"}}) + "\n" + json.dumps(PAGES[0]) + "\n")
        f.write(json.dumps({"index": {"_id": "2"}}) + "\n")
    with pytest.raises(CorpusError, match=r"line 3: an index line with no document after it "
                                          r"\(the dump is truncated after 1 document\(s\)\)"):
        list(iter_documents(path))


def test_plain_json_lines_are_not_a_cirrus_dump(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"title": "T", "text": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"docs\.jsonl: line 1: expected an index line .* got "
                                          r"keys 'title', 'text'\. Fix: .*--format jsonl"):
        list(iter_documents(path, "cirrus"))


def test_unknown_field_names_the_flag(tmp_path):
    path = dump(tmp_path / NAME, PAGES)
    with pytest.raises(CorpusError, match=r"line 2: the document has no field 'body' .*'opening_"
                                          r"text'.*Fix: pass --text-column"):
        list(iter_documents(path, text_column="body"))


def test_build_index_on_a_cirrus_dump(tmp_path):
    path = dump(tmp_path / NAME, PAGES)
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", path, "--out", out, "--no-bm25", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"reading {path} as cirrus" in res.stderr
    passages = pq.read_table(out / "passages.parquet").to_pylist()
    assert [(p["doc_id"], p["doc_title"]) for p in passages] == [
        ("12", "Anarchism"), ("25", "Autism"), ("303", "Alabama")]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["skipped_namespace"] == 1 and meta["counts"]["documents"] == 3
