"""BM25 terms come from bm25s's Tokenizer with our splitter: the same terms as before the
switch (folding before lower-casing), queries mapped onto a built vocabulary without growing it."""

from __future__ import annotations

import pytest

from pipeline.index.bm25 import TermTokenizer, stemmer_available


def test_compatibility_capitals_are_folded_then_lower_cased():
    # bm25s's own lower=True lower-cases before the splitter folds: these would stay capitals
    tok = TermTokenizer.from_config("en_plus", "none")
    assert tok.terms(["ℝ ᴮ 𝐙 ϒ Ⅻ ﬁsh", "ΟΔΟΣ", "", "the of"]) == [
        ["r", "b", "z", "υ", "xii", "fish"], ["οδος"], [], []]


@pytest.mark.parametrize("stemmer", ["none", "english"])
def test_queries_use_the_built_vocabulary_and_never_grow_it(stemmer):
    if stemmer == "english" and not stemmer_available():
        pytest.skip("PyStemmer is not installed")
    tok = TermTokenizer.from_config("en_plus", stemmer)
    build = tok.bm25s_tokenizer()
    ids = list(build.streaming_tokenize(["Proteins fold.", "", "Folding of proteins in 1905"],
                                        update_vocab=True, allow_empty=True))
    vocab = dict(build.get_vocab_dict())
    assert vocab[""] == 0 and ids[1] == [0]  # the empty passage's only term
    frozen = dict(vocab)
    query = tok.bm25s_tokenizer(vocab)
    got = list(query.streaming_tokenize(["the proteins unknownword proteins 1905", "the of"],
                                        update_vocab=False, allow_empty=False))
    protein = "protein" if stemmer == "english" else "proteins"
    assert got == [[vocab[protein], vocab[protein], vocab["1905"]], []]
    assert vocab == frozen
