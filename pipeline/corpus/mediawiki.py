"""MediaWiki XML dumps (``.xml``, ``.xml.bz2``, ``.xml.gz``) streamed page by page.

Only article pages (namespace 0) become documents: the latest revision's
wikitext, cleaned by :func:`pipeline.corpus.wikitext.clean_wikitext`.
Redirects (a ``<redirect>`` element, or a ``#REDIRECT`` text in older
exports), other namespaces and empty pages are counted in
:class:`~pipeline.corpus.documents.CorpusStats` and skipped. A truncated or
malformed dump raises :class:`CorpusError` after the pages already read.
"""

from __future__ import annotations

import bz2
import gzip
import logging
from pathlib import Path
from typing import IO, Any, Iterator
from xml.etree.ElementTree import ParseError

from pipeline.errors import CorpusError
from pipeline.corpus.documents import CorpusStats, Document, _document
from pipeline.corpus.wikitext import clean_wikitext

logger = logging.getLogger(__name__)

_REDIRECT_PREFIX = "#redirect"


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_xml(path: Path, stats: CorpusStats) -> Iterator[Document]:
    import mwxml  # local: only XML users pay for the import
    from mwxml.errors import MalformedXML

    from mwxml.element_iterator import ElementIterator

    done = yielded = 0  # pages fully read and documents yielded, for the error message
    try:
        with _open_binary(path) as f:
            # Dump.from_file(f) would do, but it keeps every (cleared) <page> element
            # attached to the root: ~100 bytes per page, gigabytes over a full dump.
            # Holding the root lets us detach finished pages.
            root_iterator = ElementIterator.from_file(f)
            if root_iterator.tag != "mediawiki":
                raise CorpusError(
                    f"{path}: not a MediaWiki XML export (the root element is "
                    f"<{root_iterator.tag}>, not <mediawiki>). Fix: pass a pages-articles dump, "
                    f"or --format for other kinds of file.")
            root = root_iterator.element
            dump = mwxml.Dump.from_element(root_iterator)
            for page in dump.pages:
                stats.read += 1
                doc = _page_document(page, done, stats)
                done += 1
                root.clear()  # detach finished pages (see above)
                if doc is not None:
                    yielded += 1
                    yield doc
    except (EOFError, OSError, ParseError, MalformedXML, ValueError, UnicodeError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CorpusError(
            f"{path}: the XML dump is truncated or malformed after {done} page(s) were read "
            f"({yielded} document(s) yielded): {type(exc).__name__}: {detail}. Fix: "
            f"re-download the dump and check its size/checksum (or use --limit to stop "
            f"before the fault).") from exc


def _page_document(page: Any, ordinal: int, stats: CorpusStats) -> Document | None:
    """The cleaned latest revision of an article page, or None (counted in stats)."""
    if page.namespace != 0:
        stats.skipped_namespace += 1
        return None
    if page.redirect is not None:
        stats.skipped_redirect += 1
        return None
    text = None
    for revision in page:  # exports list revisions oldest first: keep the last
        text = revision.text
    text = text or ""
    if text.lstrip()[:len(_REDIRECT_PREFIX)].lower() == _REDIRECT_PREFIX:
        stats.skipped_redirect += 1  # older exports have no <redirect> element
        return None
    return _document(ordinal, page.id, page.title, clean_wikitext(text), stats)
