"""Sentence-aware, token-measured chunking with stable ids."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.index.chunking import ChunkConfig, Chunker, split_sentences, with_title


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


TEXT = ("Water boils at 100 °C at sea level. The value of π is about 3.14159. "
        "Avogadro's number is 6.02×10^23 per mole! Is light a wave? Both, e.g. in "
        "the double-slit experiment.\nA new paragraph starts here. ") * 8


def test_split_sentences_keeps_decimals():
    spans = split_sentences("Pi is 3.14 today. E = mc^2 holds! Next line\nand more.")
    text = "Pi is 3.14 today. E = mc^2 holds! Next line\nand more."
    assert [text[a:b] for a, b in spans] == ["Pi is 3.14 today.", "E = mc^2 holds!",
                                             "Next line", "and more."]


def test_windows_fit_budget_and_keep_title(tokenizer):
    chunker = Chunker(tokenizer, ChunkConfig(max_tokens=48, overlap_tokens=12))
    ps = chunker.chunk("42", "Physics", TEXT)
    assert len(ps) > 5
    assert [p.passage_id for p in ps] == [f"42:{k}" for k in range(len(ps))]
    for p in ps:
        assert p.title == "Physics" and p.full_text.startswith("Physics. ")
        assert chunker.n_tokens(p.full_text) <= 48
        assert p.text in TEXT  # windows are verbatim slices: numbers and symbols kept
    assert any("6.02×10^23" in p.text for p in ps)
    # overlap: some window starts with a sentence that ended the previous one
    assert any(ps[k + 1].text.split(". ")[0] in ps[k].text for k in range(len(ps) - 1))


def test_long_documents_are_not_cut_by_tokenizer_truncation(tokenizer):
    # tokenizer.json of MiniLM truncates at 128 tokens; the chunker must not.
    chunker = Chunker(tokenizer, ChunkConfig(max_tokens=40, overlap_tokens=0))
    ps = chunker.chunk("x", "", "word " * 1000)
    assert sum(p.n_tokens for p in ps) == 1000


def test_stable_ids_and_chunk_many_equals_chunk(tokenizer):
    chunker = Chunker(tokenizer, ChunkConfig(max_tokens=64, overlap_tokens=16))

    class D:
        def __init__(self, i, t):
            self.doc_id, self.title, self.text = str(i), f"T{i}", t

    docs = [D(i, TEXT[: 100 * (i + 1)]) for i in range(5)]
    many = chunker.chunk_many(docs)
    one = [p for d in docs for p in chunker.chunk(d.doc_id, d.title, d.text)]
    assert many == one == chunker.chunk_many(docs)


def test_with_title_not_repeated():
    assert with_title("Water", "Water is wet.") == "Water is wet."
    assert with_title("Water", "It is wet.") == "Water. It is wet."
    assert with_title("", "It is wet.") == "It is wet."


def test_bad_config():
    with pytest.raises(ValueError):
        ChunkConfig(max_tokens=8)
    with pytest.raises(ValueError):
        ChunkConfig(max_tokens=64, overlap_tokens=40)


def assert_covers(text: str, windows: list[str]) -> None:
    """Every non-space character of ``text`` lies in some window: the windows are slices of
    ``text`` in order, the first starts at its first word, the last ends at its last, and
    between one window's end and the next one's start there is only whitespace (no gap)."""
    end, prev_start = 0, -1
    for k, w in enumerate(windows):
        found = [i for i in range(len(text) - len(w) + 1) if text.startswith(w, i)]
        assert found, f"window {k} is not a slice of the text"
        reach = len(text) - len(text[end:].lstrip())  # a start beyond this leaves a gap
        # A window cut inside a word ("pha" of "w3alpha") can occur several times: take the
        # last place that leaves no gap (the windows go forward).
        starts = [i for i in found if prev_start < i <= reach]
        assert starts, f"gap before window {k}: {text[end:min((i for i in found if i > prev_start), default=len(text))]!r}"
        start = max(starts)
        prev_start, end = start, max(end, start + len(w))
    assert text[end:].strip() == "", f"text after the last window: {text[end:]!r}"


def test_assert_covers_sees_a_gap():
    text = "w0a. w1b. w2c. w3d."
    assert_covers(text, ["w0a. w1b.", "w1b. w2c.", "w3d."])
    with pytest.raises(AssertionError, match="gap before window 1"):
        assert_covers(text, ["w0a. w1b.", "w3d."])
    with pytest.raises(AssertionError, match="after the last window"):
        assert_covers(text, ["w0a. w1b. w2c."])
    # a window cut inside a word occurs several times; the one that leaves no gap is meant
    assert_covers("w0alpha w1alpha w2beta. w3alpha", ["w0alpha w1alpha w2beta. w3al", "pha"])
    with pytest.raises(AssertionError, match="after the last window"):
        assert_covers("w0alpha w1alpha w2beta. w3alpha", ["w0alpha w1alpha w2beta.", "pha"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["alpha", "beta.", "3.5", "Gamma!", "delta?", "x\n", "ε"]),
                      min_size=1, max_size=300),
       size=st.integers(16, 80))
def test_every_token_is_covered(tokenizer, words, size):
    # a numbered prefix makes every word occur once in the text
    text = " ".join(f"w{i}{w}" for i, w in enumerate(words))
    chunker = Chunker(tokenizer, ChunkConfig(max_tokens=size, overlap_tokens=size // 4))
    ps = chunker.chunk("d", "", text)
    assert all(p.n_tokens <= size for p in ps)
    assert_covers(text, [p.text for p in ps])
