"""Bad corpora through ``python -m pipeline.build_index``: a clear one-line error, exit 2, and
no index, ``.NAME.partial`` or ``.NAME.lock`` left under ``--out``'s folder. And incomplete
indexes refused by ``predict`` with the command to run."""

from __future__ import annotations

import bz2
import json
from xml.sax.saxutils import escape

import pytest

from reliability_helpers import (BUILD_FLAGS, assert_user_error, copy_index, leftovers,
                                 questions_file, run_cli, tiny_index)

HEADER = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" '
          'xml:lang="en">\n  <siteinfo><sitename>Wikipedia</sitename><namespaces>'
          '<namespace key="0" case="first-letter" /></namespaces></siteinfo>\n')
FOOTER = "</mediawiki>\n"


def _page(i: int, text: str, title: str | None = None) -> str:
    body = f'<text xml:space="preserve">{escape(text)}</text>' if text else '<text bytes="0" />'
    return (f"  <page><title>{escape(title or f'Page {i}')}</title><ns>0</ns><id>{1000 + i}</id>"
            f"<revision><id>{5000 + i}</id><timestamp>2024-01-01T00:00:00Z</timestamp>"
            f"<model>wikitext</model><format>text/x-wiki</format>{body}</revision></page>\n")


def _dump(pages: list[str]) -> bytes:
    return (HEADER + "".join(pages) + FOOTER).encode("utf-8")


def _build(corpus, out, *extra):
    return run_cli("build_index", "--corpus", corpus, "--out", out, *BUILD_FLAGS, *extra)


def _nothing_under(out) -> None:
    assert not out.exists(), f"{out} was created"
    assert leftovers(out) == [], leftovers(out)


def test_truncated_bz2_dump_midway(tmp_path):
    """Cut in the middle of a multi-block .bz2: documents were already read and the
    model loaded when the stream ends, so the half-written ``.partial`` must be removed."""
    pages = [_page(i, f"Page {i} says that {i * 7919 % 10007} is a number. "
                      f"It is {'odd' if i % 2 else 'even'}.") for i in range(900)]
    data = bz2.compress(_dump(pages), compresslevel=1)  # 100 kB blocks: several of them
    corpus = tmp_path / "corpus" / "enwiki-cut.xml.bz2"
    corpus.parent.mkdir()
    corpus.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "index" / "wiki"
    res = _build(corpus, out)
    assert_user_error(res, str(corpus), "truncated or malformed", "page(s) were read",
                      "re-download the dump")
    _nothing_under(out)
    assert "pipeline.index.embedding:" in res.stderr  # it failed mid-build, after loading the model


def test_truncated_bz2_dump_in_header(tmp_path):
    corpus = tmp_path / "tiny.xml.bz2"
    corpus.write_bytes(bz2.compress(_dump([_page(0, "Some text.")]))[:40])
    out = tmp_path / "idx"
    res = _build(corpus, out)
    assert_user_error(res, str(corpus), "truncated or malformed after 0 page(s)",
                      "re-download the dump")
    _nothing_under(out)


def test_malformed_xml_dump(tmp_path):
    corpus = tmp_path / "bad.xml"
    corpus.write_bytes(_dump([_page(0, "Good text.").replace("</title>", "</titel>")]))
    out = tmp_path / "idx"
    res = _build(corpus, out)
    assert_user_error(res, str(corpus), "truncated or malformed", "ParseError", "mismatched tag")
    _nothing_under(out)


def test_not_a_mediawiki_export(tmp_path):
    corpus = tmp_path / "feed.xml"
    corpus.write_text("<rss><channel><item>x</item></channel></rss>", encoding="utf-8")
    out = tmp_path / "idx"
    res = _build(corpus, out)
    assert_user_error(res, str(corpus), "not a MediaWiki XML export", "Fix:")
    _nothing_under(out)


def test_dump_of_empty_and_template_only_pages(tmp_path):
    corpus = tmp_path / "empty.xml.bz2"
    corpus.write_bytes(bz2.compress(_dump([
        _page(0, ""),
        _page(1, "{{Short description|A stub}}{{Infobox thing|name=X}}"),
        _page(2, "[[Category:Stubs]]\n{{reflist}}"),
    ])))
    out = tmp_path / "idx"
    res = _build(corpus, out)
    assert_user_error(res, str(corpus), "no passages to index", "read 3", "3 empty",
                      "check --format, --text-column")
    _nothing_under(out)


# -- incomplete index -------------------------------------------------------------------------


def test_predict_refuses_incomplete_index(tmp_path_factory, tmp_path):
    """meta.json says complete=false (what a build leaves until it has finished)."""
    idx = copy_index(tiny_index(tmp_path_factory), tmp_path / "idx")
    meta = json.loads((idx / "meta.json").read_text())
    meta["complete"] = False
    (idx / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "s.csv"
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out", out)
    assert_user_error(res, f"--index {idx}", "did not finish (complete=false)",
                      "run the same pipeline.build_index command again")
    assert not out.exists()


@pytest.mark.parametrize("name", ["faiss.index", "passages.parquet"])
def test_predict_refuses_index_with_a_missing_file(name, tmp_path_factory, tmp_path):
    idx = copy_index(tiny_index(tmp_path_factory), tmp_path / "idx")
    (idx / name).unlink()
    res = run_cli("predict", questions_file(tmp_path), "--index", idx, "--out", tmp_path / "s.csv")
    assert_user_error(res, f"--index {idx}", f"{name} is missing", "rebuild the index")
