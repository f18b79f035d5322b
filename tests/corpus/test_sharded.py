"""Sharded corpora: ``--corpus`` a directory or a glob of files, read in order as one corpus.

Laid out like the Hugging Face ``wikipedia`` dataset (``train-0000N-of-00003.parquet``,
columns ``id,url,title,text``) and like the 270k STEM set (parquet shards with
``page_title,section,text``, no id column); resume across files skips the finished
files unread.
"""

from __future__ import annotations

import bz2
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import kill_when, popen_cli, run_cli
from pipeline.corpus.documents import CorpusStats
from pipeline.corpus.multifile import LEDGER_FILE
from pipeline.corpus.stream import iter_documents, skip_documents
from pipeline.errors import CorpusError

FLAGS = ("--chunk-size", "64", "--chunk-overlap", "16", "--no-bm25", "--no-progress")


def _text(k: int) -> str:
    return (f"Article {k} explains that the constant number {k * 7919 % 10007} appears in "
            f"experiment {k}. It was first measured in the year {1000 + k}.")


def hf_wikipedia(folder: Path, sizes=(4, 5, 6)) -> list[dict]:
    """``train-0000N-of-0000M.parquet`` shards with ``id,url,title,text`` (+ the repo's extras)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, k = [], 0
    for i, n in enumerate(sizes):
        shard = []
        for _ in range(n):
            shard.append({"id": str(12 + 100 * k), "url": f"https://en.wikipedia.org/wiki?curid={k}",
                          "title": f"Topic {k}", "text": "" if k == 3 else _text(k)})
            k += 1
        pq.write_table(pa.Table.from_pylist(shard),
                       folder / f"train-{i:05d}-of-{len(sizes):05d}.parquet", row_group_size=2)
        rows += shard
    (folder / "README.md").write_text("---\nlicense: cc-by-sa-3.0\n---\n", encoding="utf-8")
    (folder / ".gitattributes").write_text("*.parquet filter=lfs\n", encoding="utf-8")
    return rows


def stem_270k(folder: Path, names=("part-2", "part-10", "part-1")) -> dict[str, list[dict]]:
    """Section-level parquet shards with ``page_title,section,text`` and no id column."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for j, name in enumerate(names):
        rows = [{"page_title": f"Page {j}-{r // 2}", "section": ["Summary", "History"][r % 2],
                 "text": _text(10 * j + r)} for r in range(3)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        out[name] = rows
    return out


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- reading ------------------------------------------------------------------------------


def test_hf_wikipedia_directory_reads_every_shard_in_order(tmp_path):
    rows = hf_wikipedia(tmp_path / "wikipedia")
    stats = CorpusStats()
    docs = list(iter_documents(tmp_path / "wikipedia", stats=stats))
    want = [r for r in rows if r["text"]]
    assert [d.doc_id for d in docs] == [r["id"] for r in want]  # the id column, across files
    assert [d.title for d in docs] == [r["title"] for r in want]
    assert (stats.read, stats.yielded, stats.skipped_empty) == (15, 14, 1)
    globbed = list(iter_documents(str(tmp_path / "wikipedia" / "train-*-of-00003.parquet")))
    assert globbed == docs


def test_stem_shards_get_file_and_row_ids_in_natural_order(tmp_path):
    shards = stem_270k(tmp_path / "stem")
    docs = list(iter_documents(str(tmp_path / "stem" / "*.parquet"), title_column="page_title"))
    assert [d.doc_id for d in docs] == [f"{name}/{r}" for name in ("part-1", "part-2", "part-10")
                                        for r in range(3)]
    assert [d.title for d in docs[:3]] == [r["page_title"] for r in shards["part-1"]]
    assert docs[4].text == shards["part-2"][1]["text"]
    with pytest.raises(CorpusError, match=r"part-1\.parquet: no column 'title'.*page_title.*"
                                          r"--title-column"):
        iter_documents(tmp_path / "stem")


def test_limit_counts_over_all_files(tmp_path):
    hf_wikipedia(tmp_path / "w")
    stats = CorpusStats()
    docs = list(iter_documents(tmp_path / "w", limit=6, stats=stats))
    assert [d.title for d in docs] == ["Topic 0", "Topic 1", "Topic 2", "Topic 4", "Topic 5",
                                       "Topic 6"]
    assert stats.yielded == 6 and stats.read == 7  # stopped inside the second file


def test_split_xml_dumps_are_read_in_natural_order_and_their_indexes_ignored(tmp_path):
    from test_corpus import HEADER, FOOTER, _page

    folder = tmp_path / "enwiki"
    folder.mkdir()
    for part, first in ((1, 10), (2, 20), (10, 100)):
        name = f"enwiki-20240101-pages-articles-multistream{part}.xml-p{first}p{first + 1}.bz2"
        pages = "".join(_page(f"P{first + i}", 0, first + i, f"Page {first + i} text.")
                        for i in range(2))
        (folder / name).write_bytes(bz2.compress((HEADER + pages + FOOTER).encode()))
        index = f"enwiki-20240101-pages-articles-multistream-index{part}.txt-p{first}p{first + 1}.bz2"
        (folder / index).write_bytes(bz2.compress(b"600:10:P10\n"))
    docs = list(iter_documents(folder))
    assert [d.doc_id for d in docs] == ["10", "11", "20", "21", "100", "101"]  # page ids


def test_clashing_names_are_labelled_by_folder(tmp_path):
    _jsonl(tmp_path / "c" / "a" / "train.jsonl", [{"title": "A", "text": "alpha"}])
    _jsonl(tmp_path / "c" / "b" / "train.jsonl", [{"title": "B", "text": "beta"}])
    docs = list(iter_documents(str(tmp_path / "c" / "**" / "*.jsonl")))
    assert [d.doc_id for d in docs] == ["a/train/0", "b/train/0"]


def test_mixed_formats_are_refused_unless_format_picks_one(tmp_path):
    folder = tmp_path / "mixed"
    hf_wikipedia(folder, sizes=(2, 2))
    _jsonl(folder / "dataset_info.jsonl", [{"title": "x", "text": "not an article"}])
    with pytest.raises(CorpusError) as info:
        iter_documents(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg
    assert "2 parquet (train-00000-of-00002.parquet, ...), 1 jsonl (dataset_info.jsonl)" in msg
    assert "--format parquet" in msg
    assert [d.title for d in iter_documents(folder, "parquet")] == [
        "Topic 0", "Topic 1", "Topic 2"]  # "Topic 3" is empty


@pytest.mark.parametrize(("make", "pattern"), [
    (lambda p: p.mkdir(), r"empty: no corpus files in this directory \(it is empty\)\. Fix: pass"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")),
     r"no corpus files in this directory \(it holds notes\.txt\)\. Fix"),
])
def test_empty_directory_is_a_one_line_error(tmp_path, make, pattern):
    folder = tmp_path / "empty"
    make(folder)
    with pytest.raises(CorpusError, match=pattern) as info:
        iter_documents(folder)
    assert "\n" not in str(info.value)


def test_glob_matching_nothing_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "train-*.parquet")
    with pytest.raises(CorpusError, match=r"train-\*\.parquet: the glob matches no file\. Fix: "
                                          r"check the pattern \(quote it"):
        iter_documents(pattern)


def test_an_unreadable_shard_fails_before_any_document(tmp_path):
    hf_wikipedia(tmp_path / "w")
    bad = tmp_path / "w" / "train-00001-of-00003.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(CorpusError, match=r"train-00001-of-00003\.parquet: not a readable parquet "
                                          r"file .*Fix"):
        iter_documents(tmp_path / "w")


def test_a_bad_line_in_a_later_shard_names_that_file(tmp_path):
    _jsonl(tmp_path / "j" / "a.jsonl", [{"title": "A", "text": "alpha"}])
    (tmp_path / "j" / "b.jsonl").write_text('{"title": "B", "text": "beta"}\n{"title": \n')
    docs = []
    with pytest.raises(CorpusError, match=r"b\.jsonl: line 2: not valid JSON"):
        for d in iter_documents(tmp_path / "j"):
            docs.append(d)
    assert [d.doc_id for d in docs] == ["a/0", "b/0"]


# -- resume: finished files are skipped unread ---------------------------------------------


def _three_jsonl(folder: Path) -> list[Path]:
    paths = []
    for i, n in enumerate((3, 4, 5)):
        paths.append(_jsonl(folder / f"shard-{i}.jsonl",
                            [{"title": f"S{i} doc {j}", "text": "" if (i, j) == (1, 0) else _text(j)}
                             for j in range(n)]))
    return paths


def _spoil_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    path.write_bytes(b"{" * st.st_size)  # any read of it would fail
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_skip_passes_finished_files_unread(tmp_path):
    paths = _three_jsonl(tmp_path / "c")
    full_stats = CorpusStats()
    full = list(iter_documents(tmp_path / "c", stats=full_stats))
    assert len(full) == 11
    first = iter_documents(tmp_path / "c")  # the killed build: reads into the third file
    first.ledger.attach(tmp_path / LEDGER_FILE)
    consumed = [next(first) for _ in range(8)]
    assert consumed == full[:8]
    saved = json.loads((tmp_path / LEDGER_FILE).read_text())["files"]
    assert [e["documents"] for e in saved.values()] == [3, 3]  # shard-2 not finished
    _spoil_keeping_size_and_mtime(paths[1])

    stats = CorpusStats()
    again = iter_documents(tmp_path / "c", stats=stats)  # the rerun
    assert again.peek() == full[0]
    again.ledger.attach(tmp_path / LEDGER_FILE)
    rest = list(skip_documents(again, 7, progress=False))
    assert rest == full[7:]
    assert stats == full_stats  # the skipped files' counts come from the ledger


def test_skip_rereads_a_file_that_changed(tmp_path):
    paths = _three_jsonl(tmp_path / "c")
    full = list(iter_documents(tmp_path / "c"))
    first = iter_documents(tmp_path / "c")
    first.ledger.attach(tmp_path / LEDGER_FILE)
    list(first)
    os.utime(paths[0], ns=(1, 1))  # its ledger entry no longer vouches for it
    _spoil_keeping_size_and_mtime(paths[1])  # still vouched for: never opened
    again = iter_documents(tmp_path / "c")
    again.ledger.attach(tmp_path / LEDGER_FILE)
    assert list(skip_documents(again, 8, progress=False)) == full[8:]


# -- the build_index CLI ---------------------------------------------------------------------


def _passages(index: Path) -> list[dict]:
    return pq.read_table(index / "passages.parquet").to_pylist()


def test_build_index_on_a_wikipedia_directory_and_a_stem_glob(tmp_path):
    rows = hf_wikipedia(tmp_path / "wikipedia")
    out = tmp_path / "idx"
    res = run_cli("build_index", "--corpus", tmp_path / "wikipedia", "--out", out, *FLAGS)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["documents"] == 14 and meta["counts"]["skipped_empty"] == 1
    passages = _passages(out)
    assert [p["doc_id"] for p in passages] == [r["id"] for r in rows if r["text"]]
    assert {p["doc_title"] for p in passages} == {r["title"] for r in rows if r["text"]}
    assert not (out / LEDGER_FILE).exists()

    stem_270k(tmp_path / "stem")
    out = tmp_path / "stem_idx"
    res = run_cli("build_index", "--corpus", tmp_path / "stem" / "part-*.parquet",
                  "--title-column", "page_title", "--out", out, *FLAGS)
    assert res.returncode == 0, res.stderr[-3000:]
    passages = _passages(out)
    assert [p["passage_id"] for p in passages][:2] == ["part-1/0:0", "part-1/1:0"]
    assert [p["doc_id"] for p in passages][-1] == "part-10/2"
    assert passages[0]["doc_title"] == "Page 2-0"  # part-1 is the third shard written


@pytest.mark.parametrize(("setup", "want"), [
    (lambda d: d.mkdir(), "no corpus files in this directory (it is empty). Fix:"),
    (lambda d: hf_wikipedia(d, sizes=(1,)) and _jsonl(d / "x.jsonl", [{"text": "t"}]),
     "holds corpus files of several formats: 1 parquet (train-00000-of-00001.parquet), 1 jsonl "
     "(x.jsonl). Fix: pass --format"),
])
def test_build_index_bad_directory_is_one_line(tmp_path, setup, want):
    setup(tmp_path / "corpus")
    res = run_cli("build_index", "--corpus", tmp_path / "corpus", "--out", tmp_path / "idx",
                  *FLAGS)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.stderr
    assert last.startswith(f"error: {tmp_path / 'corpus'}: ") and want in last, res.stderr


def test_build_killed_in_the_third_file_resumes_without_rereading_the_others(tmp_path):
    sizes = (4, 4, 40)
    rows = hf_wikipedia(tmp_path / "w", sizes=sizes)
    flags = (*FLAGS, "--shard-size", "4")
    ref = tmp_path / "ref"
    res = run_cli("build_index", "--corpus", tmp_path / "w", "--out", ref, *flags)
    assert res.returncode == 0, res.stderr[-3000:]

    out = tmp_path / "idx"
    partial = tmp_path / ".idx.partial"
    in_first_two = sum(1 for r in rows[:8] if r["text"])

    def in_third_file() -> bool:
        try:
            ledger = json.loads((partial / LEDGER_FILE).read_text())
            ck = json.loads((partial / "checkpoint.json").read_text())
        except (OSError, ValueError):
            return False
        return len(ledger["files"]) == 2 and ck["documents"] > in_first_two + 2

    proc = popen_cli("build_index", "--corpus", tmp_path / "w", "--out", out, *flags)
    kill_when(proc, in_third_file, what="a checkpoint inside the third file")
    done = json.loads((partial / "checkpoint.json").read_text())["documents"]
    assert in_first_two < done < len([r for r in rows if r["text"]])

    res = run_cli("build_index", "--corpus", tmp_path / "w", "--out", out, *flags)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "resuming the unfinished build" in err
    assert "train-00000-of-00003.parquet skipped unread (its 3 documents" in err  # one empty
    assert "train-00001-of-00003.parquet skipped unread (its 4 documents" in err
    assert (f"re-read {done - in_first_two} document(s) (read, not embedded), up to "
            f"{tmp_path / 'w' / 'train-00002-of-00003.parquet'}") in err
    assert f"reading {tmp_path / 'w' / 'train-00001-of-00003.parquet'}" not in err
    got, want = _passages(out), _passages(ref)
    assert got == want  # same passages, same order, nothing twice
    meta, ref_meta = (json.loads((p / "meta.json").read_text()) for p in (out, ref))
    assert meta["build"]["resumed"] is True
    assert meta["counts"] | {"shards": 0} == ref_meta["counts"] | {"shards": 0}
