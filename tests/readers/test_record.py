"""pipeline.readers.record: the one reader of openbook_reader.json, and its users."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.readers.record import READER_CONFIG, ReaderError, load_reader_record
from pipeline.retrieval.retriever import RetrievalConfig
from pipeline.retrieval.setup import reader_retrieval


def _write(folder, text: str):
    folder.mkdir(exist_ok=True)
    (folder / READER_CONFIG).write_text(text, encoding="utf-8")
    return folder


def test_record_reads_each_key_and_names_file_and_key(tmp_path):
    assert load_reader_record(tmp_path) is None  # no file: not an error
    good = _write(tmp_path / "good", json.dumps(
        {"max_length": 96, "retrieval": {"top_k": 2}, "training": None}))
    record = load_reader_record(good)
    assert record.path == good / READER_CONFIG
    assert record.max_length == 96 and record.section("retrieval") == {"top_k": 2}
    assert record.section("training") == {} and record.section("validation") == {}
    assert load_reader_record(_write(tmp_path / "bare", "{}")).max_length is None
    for text, says in (("{broken", "cannot read reader settings"),
                       ("[1, 2]", "must be a JSON object, got list")):
        with pytest.raises(ReaderError, match=says) as info:
            load_reader_record(_write(tmp_path / "bad", text))
        assert str(tmp_path / "bad" / READER_CONFIG) in str(info.value)
    for value in ("long", 0, -3, True, 2.5):
        record = load_reader_record(_write(tmp_path / "len", json.dumps({"max_length": value})))
        with pytest.raises(ReaderError, match=f"{READER_CONFIG}: max_length must be a positive"):
            record.max_length
    record = load_reader_record(_write(tmp_path / "sec", json.dumps({"retrieval": [5]})))
    with pytest.raises(ReaderError, match=f"{READER_CONFIG}: retrieval must be a JSON object"):
        record.section("retrieval")


def test_reader_retrieval_takes_the_first_readable_record(tmp_path):
    trained = _write(tmp_path / "trained", json.dumps(
        {"retrieval": {"top_k": 8, "query": "prompt", "focus": None, "top_k_train": 3}}))
    broken = _write(tmp_path / "broken", "{broken")
    cfg = SimpleNamespace(readers=[str(tmp_path / "none"), str(broken), str(trained)],
                          retrieval=RetrievalConfig())
    got = reader_retrieval(cfg)
    assert (got.top_k, got.query, got.focus) == (8, "prompt", "none")  # null focus: not taken
    cfg.retrieval = RetrievalConfig(top_k=3)  # an explicit flag wins
    assert reader_retrieval(cfg).top_k == 3 and reader_retrieval(cfg).query == "prompt"
    assert reader_retrieval(SimpleNamespace(readers=[], retrieval=cfg.retrieval)) is cfg.retrieval
