"""The stacker of a trained reader: fitted at the end of a run, or again by ``pipeline.stack``.

:func:`fit_stacker` scores the validation questions with the best checkpoint in ``OUT``,
computes the evidence features of :mod:`pipeline.readers.stacking` (with the index's
own embedder, :func:`stack_embedder`, as ``predict`` will), fits the
:class:`~pipeline.readers.stacking.Stacker` and saves ``OUT/openbook_stack.json``.
:func:`restack` does only that, for a reader already trained: from its saved training
config (``openbook_reader.json``), with the run's contexts cache read, never rewritten.

Example::

    >>> restack("readers/minilm", features=["lexical", "dense"]).describe()  # doctest: +SKIP
    {'features': {'reader': ..., 'lexical': ..., 'dense': ...}, ...}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.device import pick_device
from pipeline.errors import OpenbookError
from pipeline.index.embedding import Embedder
from pipeline.index.store import load_index
from pipeline.metrics import map_at_3, rank_letters
from pipeline.questions import LETTERS, Question, load_question_files, load_questions
from pipeline.readers.kinds import load_reader
from pipeline.readers.record import READER_CONFIG, load_reader_record
from pipeline.readers.stacking import (CONTEXT_FEATURES, STACK_FILE, Stacker, context_features,
                                       gated_features, reader_feature)
from pipeline.retrieval.setup import open_embedder
from pipeline.training.config import TrainConfig, _known_fields, index_paths
from pipeline.training.data import load_contexts

log = logging.getLogger(__name__)


def stack_embedder(cfg: TrainConfig, device: str):
    """The embedder for the stacker's dense/consensus features: the index's (as predict)."""
    if cfg.index:  # the first index's embedder, as predict's evidence features use
        return open_embedder(load_index(index_paths(cfg.index)[0]), cfg.embedder, device)
    return Embedder(cfg.embedder or "minilm", device=device)


def fit_stacker(cfg: TrainConfig, out: Path, qs: Sequence[Question], contexts: Sequence[str],
                device: str) -> Stacker:
    """Fit :class:`pipeline.readers.stacking.Stacker` on the validation questions with the best
    reader's log-probabilities plus ``cfg.stack_features``; save ``OUT/openbook_stack.json``.

    The reader's log-probabilities are only centred per question, so the stacker sees how
    sure the reader is; the other features are z-scored. The validation MAP@3 it logs is
    in-sample for the stacker (its few weights were fitted there): judge it on questions
    neither stage saw, as ``benchmarks/quality.py`` does."""
    reader = load_reader(str(out), device=device, batch_size=cfg.eval_batch_size)  # either kind
    prompts, options = [q.prompt for q in qs], [list(q.options) for q in qs]
    logp = reader_feature(reader.probabilities(prompts, options, contexts, [q.row for q in qs],
                                               progress=cfg.progress))
    del reader
    embedder = stack_embedder(cfg, device) \
        if {"dense", "consensus"} & set(cfg.stack_features) else None
    feats = {"reader": logp, **context_features(cfg.stack_features, prompts, options, contexts,
                                                embedder, progress=cfg.progress)}
    answers = np.array([LETTERS.index(q.answer) for q in qs])
    gated = gated_features(cfg.stack_features, cfg.stack_gate)
    stacker = Stacker.fit(feats, answers, ["reader", *cfg.stack_features], centered=["reader"],
                          gated=gated)
    letters = [q.answer for q in qs]
    before = map_at_3(rank_letters(logp), letters)
    after = map_at_3(rank_letters(stacker.score(feats)), letters)
    stacker.info.update({"fitted_on": str(cfg.valid), "embedder": embedder.name if embedder else None,
                         "valid_map@3_reader": round(before, 5),
                         "valid_map@3_stacked_in_sample": round(after, 5)})
    stacker.save(out)
    log.info("stacker on %d valid questions: MAP@3 %.4f (reader alone) -> %.4f (stacked, "
             "in-sample); weights %s%s; saved %s", len(qs), before, after,
             dict(zip(stacker.features, stacker.weights)),
             f", gated {dict(zip(stacker.gated, stacker.gate_weights))}" if gated else "",
             out / STACK_FILE)
    return stacker


def restack(out: str | Path, valid: str | None = None, features: Sequence[str] | None = None,
            device: str | None = None, progress: bool = True, gate: bool | None = None,
            rerank: str | None = None) -> Stacker:
    """Fit (again) the stacker of the trained reader in ``out``, without training.

    Uses the reader's saved training config (index, retrieval settings, validation CSV);
    ``valid``, ``features``, ``gate`` and ``rerank`` (a cross-encoder, or ``"none"``) replace
    the saved ones. For readers trained before a
    change to the stacker, or to fit it on other labelled questions.
    """
    out = Path(out)
    record = load_reader_record(out)
    if record is None:
        raise OpenbookError(f"{out} holds no reader trained by pipeline.train ({READER_CONFIG} "
                            "is missing); train one first")
    saved = record.section("training")
    cfg_d = _known_fields(saved)
    cfg_d.update(out=str(out), resume=False, progress=progress)
    if valid is not None:
        cfg_d["valid"] = valid
    if features is not None:
        unknown = sorted(set(features) - set(CONTEXT_FEATURES))
        if unknown:
            raise OpenbookError(f"--features: unknown {unknown}; choose from "
                                f"{','.join(CONTEXT_FEATURES)}")
        cfg_d["stack_features"] = tuple(features)
    if gate is not None:
        cfg_d["stack_gate"] = gate
    if rerank is not None:
        cfg_d["rerank"] = None if rerank.lower() == "none" else rerank
    if not cfg_d.get("valid"):
        raise OpenbookError(f"{out} was trained without --valid: pass --valid VALID.csv "
                            "(labelled questions the reader was not trained on)")
    cfg = TrainConfig(**cfg_d)
    device = pick_device(device or cfg.device)
    splits = {"valid": load_questions(cfg.valid, require_answer=True)}
    if valid is None and all(Path(t).is_file() for t in cfg.train):
        # the run's own splits: the contexts cache (keyed on both) is read, not retrieved again
        splits = {"train": load_question_files(cfg.train, require_answer=True), **splits}
    # never rewrite the run's cache: other --valid questions would replace its contexts
    contexts, _ = load_contexts(cfg, splits, device, write_cache=False)
    return fit_stacker(cfg, out, splits["valid"], contexts["valid"], device)
