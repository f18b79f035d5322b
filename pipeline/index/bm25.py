"""BM25 (with ``bm25s``) over an index's passages, stored inside the index directory.

Row *i* of the BM25 matrix is passage row *i* of ``passages.parquet`` and
vector *i* of ``faiss.index``, so lexical and dense hits share ids. Each
passage is indexed as ``with_title(title, text)``, exactly what is embedded::

    index/NAME/
      meta.json          ... + "bm25": params, tokenizer, vocab size, counts, files (bytes, sha256)
      bm25/
        data.csc.index.npy, indices.csc.index.npy, indptr.csc.index.npy
                         the (token x passage) BM25 score matrix, CSC; memory-mapped at query time
        vocab.index.json term -> column
        params.index.json bm25s parameters
        tokenizer.json   how text became terms (pattern, stop-word list, stemmer): queries
                         are tokenised from this file, not from library defaults

Tokenisation (:class:`TermTokenizer`): Unicode NFKD with accents dropped
(``Schrödinger`` -> ``schrodinger``, ``H₂O`` -> ``h2o``), lower case, then
terms are numbers with their decimal point or thousands commas
(``3.14``, ``1,000`` -> ``1000``) or runs of letters and digits (``h2o``,
``1905``, ``β``); English stop words are removed and the rest stemmed with
PyStemmer's Snowball English stemmer when it is installed. The first part is
ours (:meth:`TermTokenizer.split`), given as the splitter to bm25s's own
``bm25s.tokenization.Tokenizer``, which drops the stop words, stems and numbers
the terms. Its ``lower=True`` is not used: it lower-cases *before* the
splitter, and folding after lower-casing keeps the capitals that compatibility
characters decompose to (``ℝ`` -> ``R``, ``ᴬ`` -> ``A``, ``𝐀`` -> ``A``) and
misplaces Greek final sigma beside modifier letters: 844 code points tokenise
differently that way (no demo document is affected). A regex splitter alone
(no folding, no comma rule) changes the terms of 1,712 of the 10,033 demo
documents (17%: ``concrète``, ``9,896``). Split, then bm25s, gives the terms
this module always gave, so BM25 indexes built before load and score the same.
The BM25 bits are recorded in ``meta.json["bm25"]``; ``bm25/`` files are listed
there, not in the top-level ``files``, so an index without BM25 is still complete.

Building streams ``passages.parquet`` a batch at a time and writes the score
matrix by :func:`pipeline.index.bm25_build.build_streaming`: sorted runs of
(term, passage) pairs spilled to disk, then the CSC columns written a term
range at a time, so memory stays within ``--memory`` (``build_index
--bm25-memory``, default 1G) plus the vocabulary, whatever the corpus size; the files are
byte-for-byte those ``bm25s.BM25.index`` + ``save`` write. At query time the
three CSC arrays are memory-mapped; the vocabulary (a dict) is read into RAM.

Building runs beside the live files (``bm25/`` is replaced only when the new
one is whole, and ``meta.json["bm25"]`` is written last), so it can be re-run
on its own: ``python -m pipeline.bm25 --index DIR``.

Example::

    >>> meta = add_bm25("index/demo")                                   # doctest: +SKIP
    >>> bm = load_bm25("index/demo")                                    # doctest: +SKIP
    >>> scores, rows = bm.search(["Who proposed special relativity in 1905?"], k=3)  # doctest: +SKIP
    >>> rows.shape, scores.shape                                        # doctest: +SKIP
    ((1, 3), (1, 3))
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pipeline.errors import IndexMismatchError, OpenbookError
from pipeline.index.artifacts import check_bm25_model, check_files, short_error
from pipeline.index.bm25_build import build_streaming

log = logging.getLogger(__name__)

BM25_DIR = "bm25"
TOKENIZER_FILE = "tokenizer.json"
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
STEMMERS = ("auto", "english", "none")
STOPWORD_LISTS = ("en_plus", "en", "none")
#: Working memory of a BM25 build beyond the vocabulary (runs and column ranges).
DEFAULT_MEMORY = "1G"

#: Numbers with thousands commas or decimal points first (so "3.14" stays one
#: term), then runs of letters/digits ("h2o", "1905"); "_" is a separator.
TOKEN_PATTERN = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)+|[^\W_]+"
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


class Bm25MissingError(OpenbookError):
    """BM25 retrieval was asked of an index that has no BM25."""


def missing_message(index: str | Path) -> str:
    return (f"--index {index} has no BM25 index; add one with "
            f"`python -m pipeline.bm25 --index {index}` (or rebuild the index without --no-bm25), "
            "or use --retriever dense")


def _stopwords(name: str) -> list[str]:
    from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_EN_PLUS

    lists = {"en_plus": STOPWORDS_EN_PLUS, "en": STOPWORDS_EN, "none": ()}
    if name not in lists:
        raise OpenbookError(f"--stopwords must be one of {', '.join(STOPWORD_LISTS)}, got {name!r}")
    return sorted(lists[name])


def stemmer_available() -> bool:
    try:
        import Stemmer  # noqa: F401  (PyStemmer)
    except ImportError:
        return False
    return True


class TermTokenizer:
    """Text -> BM25 terms: fold accents, lower-case, split (ours), drop stop words, stem (bm25s).

    Args:
        stopwords: the stop words (already lower case).
        stemmer: ``"english"`` (PyStemmer's Snowball) or ``None``.

    >>> tok = TermTokenizer(["the", "of", "is"], stemmer=None)
    >>> tok.terms(["The mass of H₂O is 18.015 g/mol; π ≈ 3.14, c. 1,000 proteins in 1905."])
    [['mass', 'h2o', '18.015', 'g', 'mol', 'π', '3.14', 'c', '1000', 'proteins', 'in', '1905']]
    """

    def __init__(self, stopwords: Iterable[str], stemmer: str | None, *,
                 pattern: str = TOKEN_PATTERN, stopwords_name: str = "custom"):
        self.stopwords = frozenset(stopwords)
        self.stopwords_name = stopwords_name
        self.pattern = pattern
        self._find = re.compile(pattern).findall
        self.stemmer = stemmer
        self._stemmer = None
        if stemmer == "english":
            try:
                import Stemmer
            except ImportError as e:
                raise OpenbookError(
                    "this BM25 index was built with the PyStemmer English stemmer, which is not "
                    "installed; `pip install PyStemmer`, or rebuild the BM25 with "
                    "`python -m pipeline.bm25 --index DIR --stemmer none`") from e
            self._stemmer = Stemmer.Stemmer("english")
        elif stemmer is not None:
            raise OpenbookError(f"unknown stemmer {stemmer!r}; use english or none")

    @classmethod
    def from_config(cls, stopwords: str = "en_plus", stemmer: str = "auto") -> "TermTokenizer":
        """``stemmer="auto"``: English when PyStemmer is installed, else none (with a warning)."""
        if stemmer not in STEMMERS:
            raise OpenbookError(f"--stemmer must be one of {', '.join(STEMMERS)}, got {stemmer!r}")
        if stemmer == "auto":
            stemmer = "english" if stemmer_available() else "none"
            if stemmer == "none":
                log.warning("PyStemmer is not installed: BM25 terms are not stemmed "
                            "(`pip install PyStemmer` and rebuild the BM25 for stemming)")
        return cls(_stopwords(stopwords), None if stemmer == "none" else stemmer,
                   stopwords_name=stopwords)

    def split(self, text: str) -> list[str]:
        """Fold accents, lower-case, cut into terms (stop words still in): the bm25s splitter."""
        if not text.isascii():
            text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        return [w.replace(",", "") if "," in w else w for w in self._find(text.lower())]

    def bm25s_tokenizer(self, vocab: dict[str, int] | None = None):
        """A ``bm25s.tokenization.Tokenizer`` with these rules.

        ``vocab``: a built index's term -> column (``vocab.index.json``); queries are then
        mapped onto it (with ``update_vocab=False``; unknown terms dropped) and it never grows.
        """
        from bm25s.tokenization import Tokenizer

        tok = Tokenizer(lower=False, splitter=self.split, stopwords=sorted(self.stopwords),
                        stemmer=self._stemmer)
        if vocab is not None:  # the dict bm25s looks terms up in: stems, or words unstemmed
            if self._stemmer is None:
                tok.word_to_id = vocab
            else:
                tok.stem_to_sid = vocab
        return tok

    def terms(self, texts: Sequence[str]) -> list[list[str]]:
        """Terms of each text (stemmed when a stemmer is set)."""
        tok = self.bm25s_tokenizer()
        return tok.decode(tok.tokenize(list(texts), update_vocab=True, show_progress=False,
                                       allow_empty=False))

    def describe(self) -> dict:
        """What ``tokenizer.json`` holds: enough to tokenise queries the same way."""
        return {"lower": True, "fold_accents": True, "pattern": self.pattern,
                "stopwords": self.stopwords_name, "stopword_list": sorted(self.stopwords),
                "stemmer": self.stemmer}

    @classmethod
    def from_description(cls, d: dict) -> "TermTokenizer":
        return cls(d["stopword_list"], d["stemmer"], pattern=d["pattern"],
                   stopwords_name=d["stopwords"])


@dataclass(frozen=True)
class Bm25Config:
    """How the BM25 index is built. Recorded in ``meta.json["bm25"]``.

    Args:
        k1, b: BM25 term-frequency saturation and length normalisation (Lucene's defaults).
        method: bm25s scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stemmer: ``auto`` (English if PyStemmer is installed), ``english`` or ``none``.
        stopwords: ``en_plus`` (NLTK's 179 English stop words), ``en`` (Lucene's 33) or ``none``.
    """

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stemmer: str = "auto"
    stopwords: str = "en_plus"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OpenbookError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise OpenbookError(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")


def parse_memory(size: str, flag: str = "--memory") -> float:
    """A BM25 build's working memory (``--memory`` / ``--bm25-memory``, e.g. ``"512M"``) in MB;
    one line naming ``flag`` if it is not a size or under 1M."""
    from pipeline.index.sizing import parse_size

    mb = parse_size(size, flag) / 2**20
    if mb < 1:
        raise OpenbookError(f"{flag} {size}: give at least 1M (e.g. 512M)")
    return mb


def has_bm25(meta: dict) -> bool:
    """Whether an index's ``meta.json`` records a finished BM25 index."""
    return isinstance(meta.get("bm25"), dict) and bool(meta["bm25"].get("files"))


def add_bm25(index: str | Path, config: Bm25Config = Bm25Config(), *,
             memory_mb: float | None = None, progress: bool = True) -> dict:
    """Build (or rebuild) the BM25 index of a finished index directory.

    Returns the ``meta.json["bm25"]`` record. The old ``bm25/`` (if any)
    stays usable until the new one is complete. Holds the index's build lock
    (``.NAME.lock``), so two builds never write the same directory; a caller
    in this process that already holds it (``build_index``) keeps it.
    ``memory_mb`` bounds the build's working memory beyond the vocabulary
    (:mod:`pipeline.index.bm25_build`; default :data:`DEFAULT_MEMORY`); it changes how,
    not what, is built.
    """
    from pipeline.index.lock import BuildLock

    index = Path(index)
    memory_mb = memory_mb if memory_mb is not None else parse_memory(DEFAULT_MEMORY)
    with BuildLock(index).holding():  # one builder per index directory (build_index or this)
        return _add_bm25(index, config, memory_mb=memory_mb, progress=progress)


def _add_bm25(index: Path, config: Bm25Config, *, memory_mb: float, progress: bool) -> dict:
    import bm25s

    from pipeline.index.store import PASSAGES_FILE, publish_side, read_meta, side_files

    meta = read_meta(index)
    t0 = time.perf_counter()
    tokenizer = TermTokenizer.from_config(config.stopwords, config.stemmer)
    partial = index / f".{BM25_DIR}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    n = meta["counts"]["passages"]
    try:
        stats = build_streaming(index / PASSAGES_FILE, partial, tokenizer, k1=config.k1,
                                b=config.b, method=config.method, memory_mb=memory_mb,
                                total=n, progress=progress)
        if stats.num_docs != n:
            raise IndexMismatchError(f"--index {index}: passages.parquet has {stats.num_docs} rows "
                                     f"but meta.json says {n}; rebuild the index")
        (partial / TOKENIZER_FILE).write_text(json.dumps(tokenizer.describe(), indent=1) + "\n",
                                              encoding="utf-8")
        record = {
            "dir": BM25_DIR,
            "params": {"k1": config.k1, "b": config.b, "method": config.method},
            "tokenizer": {k: v for k, v in tokenizer.describe().items() if k != "stopword_list"}
            | {"n_stopwords": len(tokenizer.stopwords)},
            "vocab_size": stats.vocab_size,
            "num_docs": n,
            "avg_terms_per_passage": round((stats.n_tokens - stats.n_empty) / max(n, 1), 2),
            "nnz": stats.nnz,
            "build": {"memory_mb": memory_mb, "runs": stats.runs, "column_ranges": stats.ranges},
            "files": side_files(partial, BM25_DIR),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"bm25s": bm25s.__version__, "PyStemmer": _pystemmer_version()},
        }
        publish_side(index, "bm25", partial, record, t0)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = sum(f["bytes"] for f in record["files"].values())
    log.info("bm25 for %s: %d passages, vocabulary %d, %.1f MB, %.1f s", index, n,
             stats.vocab_size, size / 1e6, record["seconds"])
    return record


def _pystemmer_version() -> str | None:
    try:
        import Stemmer
    except ImportError:
        return None
    return getattr(Stemmer, "__version__", "installed")


class Bm25Index:
    """A loaded (memory-mapped) BM25 index: ``search`` queries -> passage rows."""

    def __init__(self, path: Path, record: dict, model, tokenizer: TermTokenizer):
        self.path = path
        self.record = record
        self.model = model
        self.tokenizer = tokenizer
        self._queries = tokenizer.bm25s_tokenizer(model.vocab_dict)

    @property
    def size(self) -> int:
        return int(self.model.scores["num_docs"])

    def query_ids(self, queries: Sequence[str]) -> list[list[int]]:
        """Term ids of each query (unknown terms dropped, order kept)."""
        return list(self._queries.streaming_tokenize(list(queries), update_vocab=False,
                                                     allow_empty=False))

    def search(self, queries: Sequence[str], k: int, *, n_threads: int | None = None,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query in one ``bm25s`` call: ``(scores, rows)``, both ``(n, k)``.

        Row -1 marks "no (more) passages share a term with the query"; a query
        with no known term gets only -1.
        """
        k = min(k, self.size)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        ids = self.query_ids(queries)
        todo = [i for i, q in enumerate(ids) if q]
        if not todo or k == 0:
            return scores, rows
        threads = n_threads if n_threads is not None else (os.cpu_count() or 1)
        try:
            res = self.model.retrieve([ids[i] for i in todo], k=k, sorted=True,
                                      return_as="tuple", show_progress=progress, n_threads=threads)
        except (IndexError, ValueError) as e:  # arrays of the right size but wrong content
            raise OpenbookError(
                f"--index {self.path.parent}: the BM25 files in {self.path} are damaged "
                f"({short_error(e)}); rebuild the BM25 with `python -m pipeline.bm25 --index "
                f"{self.path.parent}` (--verify-index full checks them before any work)") from e
        found, sc = np.asarray(res.documents, dtype=np.int64), np.asarray(res.scores, np.float32)
        found[sc <= 0] = -1
        rows[todo], scores[todo] = found, np.where(sc > 0, sc, 0)
        return scores, rows


def load_bm25(index: str | Path, meta: dict | None = None, *, verify: str = "size",
              mmap: bool = True) -> Bm25Index:
    """Open ``index/bm25/`` (memory-mapped) after checking it against ``meta.json``.

    Raises :class:`Bm25MissingError` when the index has none.
    """
    import bm25s

    from pipeline.index.store import read_meta

    index = Path(index)
    meta = meta if meta is not None else read_meta(index)
    if not has_bm25(meta):
        raise Bm25MissingError(missing_message(index))
    rec = meta["bm25"]
    source, fix = f"--index {index}", f"rebuild the BM25 with `python -m pipeline.bm25 --index {index}`"
    check_files(index, meta, verify, source=source, fix=fix, key="bm25.files")
    if rec.get("dir", BM25_DIR) != BM25_DIR:
        raise OpenbookError(f"{source}: meta.json key 'bm25.dir' is {str(rec['dir'])[:60]!r}, not "
                            f"{BM25_DIR!r} (it was edited or damaged); {fix}")
    folder = index / BM25_DIR
    try:
        tokenizer = TermTokenizer.from_description(
            json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8")))
        model = bm25s.BM25.load(str(folder), mmap=mmap, load_corpus=False, show_progress=False)
        check_bm25_model(model, full=verify == "full")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, re.error) as e:
        raise OpenbookError(f"{source}: the BM25 files in {folder} are damaged ({short_error(e)}); "
                            f"{fix} (--verify-index full checks every byte)") from e
    n = meta["counts"]["passages"]
    if int(model.scores["num_docs"]) != n:
        raise IndexMismatchError(
            f"--index {index}: the BM25 index covers {model.scores['num_docs']} passages but the "
            f"index has {n}; rebuild it with `python -m pipeline.bm25 --index {index}`")
    log.info("bm25 %s: %d passages, vocabulary %d, stemmer %s", folder, n, len(model.vocab_dict),
             tokenizer.stemmer)
    return Bm25Index(folder, rec, model, tokenizer)


def bm25_for(store) -> Bm25Index:
    """The BM25 index of a loaded :class:`~pipeline.index.store.IndexStore`, loaded once and cached on it."""
    cached = getattr(store, "_bm25", None)
    if cached is None:
        cached = load_bm25(store.path, store.meta)
        store._bm25 = cached
    return cached
