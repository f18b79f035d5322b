"""Option scores for retrieved contexts: readers (encoder or causal LM), ensembles, stackers,
the zero-shot baseline, and the confidence cascade that sends the unsure questions on.

The scoring half of ``predict`` (and of ``evaluate``, which must score exactly as
``predict`` does). A run's scorer is, in order:

1. the *first stage*: the mean probability of ``cfg.readers`` (each through its stacker,
   if its folder has one), or the zero-shot baseline when no reader is given;
2. with ``cfg.cascade``: the questions whose first-stage margin (best probability minus the
   second) is smallest, ``cascade_fraction`` of them or those under ``cascade_margin``
   (:func:`pipeline.readers.cascade.route`), are scored again by the cascade readers on the
   same contexts, and their probabilities replace (or, ``cascade_combine="mean"``, are
   averaged with) the first stage's.

A reader is loaded once per process and folder state, of either kind
(:func:`pipeline.readers.kinds.load_reader`: ``AutoModelForMultipleChoice`` or a causal LM);
the causal-LM options (``PredictConfig.llm``) go to every causal-LM reader.

Example (shapes: ``scores`` is ``(n_questions, 5)``)::

    >>> scores, name, described = score_options(cfg, questions, contexts, embedder)  # doctest: +SKIP
    >>> name                                                                           # doctest: +SKIP
    'reader readers/minilm, cascade to readers/mpnet (30% least confident)'
    >>> parse_max_memory("0=20GiB, 1=20GiB, cpu=60GiB")
    {0: '20GiB', 1: '20GiB', 'cpu': '60GiB'}
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.answering.recheck import RECHECK, score_with_recheck
from pipeline.errors import OpenbookError
from pipeline.index.embedding import Embedder
from pipeline.metrics import margins, softmax
from pipeline.questions import Question
from pipeline.readers import cascade as C
from pipeline.readers.kinds import load_reader
from pipeline.retrieval.contexts import Contexts

log = logging.getLogger(__name__)

#: The causal-LM options ``PredictConfig.llm`` may hold (see CausalLMReader.from_pretrained).
LLM_OPTIONS = ("scoring", "per_option", "tta", "template", "use_chat_template", "device_map",
               "max_memory", "offload_folder", "load_in_4bit", "load_in_8bit")


def parse_max_memory(text: str | None) -> dict | None:
    """``"0=20GiB,cpu=60GiB"`` -> ``{0: "20GiB", "cpu": "60GiB"}`` (accelerate's ``max_memory``);
    raises :class:`OpenbookError` naming ``--max-memory`` for anything else."""
    if not text:
        return None
    out: dict[Any, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip() or not value.strip():
            raise OpenbookError(f"--max-memory {text!r}: expected DEVICE=SIZE pairs such as "
                                "0=20GiB,cpu=60GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    return out


def check_llm_options(llm: dict) -> None:
    """Refuse unknown keys and out-of-range values of ``PredictConfig.llm`` up front."""
    unknown = set(llm) - set(LLM_OPTIONS)
    if unknown:
        raise OpenbookError(f"unknown causal-LM option(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(LLM_OPTIONS)}")
    if llm.get("tta") is not None and not 1 <= int(llm["tta"]) <= 5:
        raise OpenbookError(f"--tta must be between 1 and 5 (option-order rotations), got {llm['tta']}")
    parse_max_memory(llm.get("max_memory"))


def _stamp(name: str) -> tuple:
    """Modification times of a reader folder's files: a retrained reader is loaded afresh."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=4)
def _load_reader(name: str, stamp: tuple, device: str | None, max_length: int | None,
                 batch_size: int | None, kind: str = "auto", llm: tuple = (), backend: str = "torch"):
    """A reader loaded once per process, folder state and settings (``--time-budget`` scores
    chunk by chunk; ``evaluate`` scores several times)."""
    options = dict(llm)
    options["max_memory"] = parse_max_memory(options.get("max_memory"))
    return load_reader(name, kind=kind, device=device, max_length=max_length,
                       batch_size=batch_size, backend=backend, **options)


def reader_for(cfg, name: str):
    """The loaded reader ``name`` with ``cfg``'s device, length, batch, kind, backend and LLM
    options."""
    llm = tuple(sorted((k, v) for k, v in (cfg.llm or {}).items() if v is not None))
    return _load_reader(name, _stamp(name), cfg.device, cfg.max_length, cfg.batch_size,
                        cfg.reader_kind, llm, getattr(cfg, "reader_backend", "torch"))


def apply_stacker(name: str, probs: np.ndarray, prompts: Sequence[str],
                  options: Sequence[Sequence[str]], contexts: Sequence[str], embedder: Embedder,
                  evidence: dict[str, np.ndarray] | None = None,
                  progress: bool = False) -> tuple[np.ndarray, dict | None]:
    """Combine reader ``name``'s probabilities ``(n, 5)`` with its stacker, if it has one.

    Returns (probabilities ``(n, 5)``, the stacker's description or None when the folder has
    no ``openbook_stack.json``). ``evidence`` caches the context features between readers.
    """
    from pipeline.readers.stacking import Stacker, context_features, reader_feature

    stacker = Stacker.load(name)
    if stacker is None:
        return probs, None
    evidence = {} if evidence is None else evidence
    want = [f for f in stacker.features if f != "reader" and f not in evidence]
    evidence.update(context_features(want, prompts, options, contexts, embedder, progress=progress))
    fitted_with = stacker.info.get("embedder")
    if fitted_with and fitted_with != embedder.name and {"dense", "consensus"} & set(stacker.features):
        log.warning("the stacker of %s was fitted with embedder %s, this index uses %s: "
                    "its dense/consensus features may be off", name, fitted_with, embedder.name)
    log.info("%s: reader combined with %s", name,
             ", ".join(f for f in stacker.features if f != "reader"))
    scores = stacker.score({"reader": reader_feature(probs), **evidence})
    return softmax(scores), stacker.describe()


def score_readers(cfg, readers: Sequence[str], questions: Sequence[Question],
                  contexts: Sequence[Contexts], embedder: Embedder,
                  evidence: dict[str, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, str, list[dict]]:
    """Mean probability ``(n, 5)`` of ``readers`` (each through its stacker), its label and
    one description per reader; with no reader, the zero-shot baseline's scores.
    ``evidence`` (stacker features ``(n, 5)`` by name) is filled in and reused.
    ``--reader-backend openvino-recheck`` scores in bf16 and the near ties again in fp32
    (:mod:`pipeline.answering.recheck`)."""
    if readers and getattr(cfg, "reader_backend", "torch") == RECHECK:
        return score_with_recheck(cfg, readers, questions, contexts, embedder, score_readers,
                                  evidence)
    prompts = [q.prompt for q in questions]
    options = [list(q.options) for q in questions]
    ctx = [c.joined() for c in contexts]
    rows = [q.row for q in questions]
    if not readers:
        from pipeline.readers.zeroshot import ZeroShotScorer

        scorer = ZeroShotScorer(embedder)
        log.info("no --reader given: using the %s", scorer.name)
        return scorer.score(prompts, options, ctx, rows, progress=cfg.progress), \
            scorer.name, [scorer.describe()]
    probs, described = [], []
    evidence = {} if evidence is None else evidence  # stacker features: once for all readers
    for name in readers:
        reader = reader_for(cfg, name)
        p = reader.probabilities(prompts, options, ctx, rows, progress=cfg.progress)
        info = {"type": "reader", "name": name, "max_length": reader.max_length}
        if hasattr(reader, "describe"):
            info.update({k: v for k, v in reader.describe().items() if k not in info})
        p, stacked = apply_stacker(name, p, prompts, options, ctx, embedder, evidence,
                                   progress=cfg.progress)
        if stacked:
            info["stacker"] = stacked
        probs.append(p)
        described.append(info)
    label = "reader " + readers[0] if len(readers) == 1 else \
        f"ensemble of {len(readers)} readers (mean probability)"
    return np.mean(probs, axis=0), label, described


def cascade_label(cfg) -> str:
    """How the cascade routes, for names and reports: ``30% least confident`` or ``margin < 0.2``."""
    if cfg.cascade_margin is not None:
        return f"margin < {cfg.cascade_margin:g}"
    return f"{cfg.cascade_fraction if cfg.cascade_fraction is not None else 0.3:.0%} least confident"


def cascade_outcome(cfg, first: np.ndarray, second: np.ndarray | None, sent: np.ndarray, *,
                    first_label: str, second_label: str | None, second_desc: list[dict],
                    seconds_first: float, seconds_second: float) -> tuple[np.ndarray, str, dict]:
    """(final probabilities ``(n, 5)``, scorer name, the cascade's description) from the first
    stage's probabilities ``first`` ``(n, 5)``, the routing mask ``sent`` ``(n,)`` and the
    second stage's probabilities ``second`` (``(sent.sum(), 5)`` or ``(n, 5)``; None when
    nothing was sent)."""
    final = first if second is None else C.combine(first, C.as_probabilities(second), sent,
                                                   cfg.cascade_combine)
    m = margins(first)
    idx = np.flatnonzero(sent)
    info = {"type": "cascade", "readers": list(cfg.cascade), "route": cascade_label(cfg),
            "fraction": cfg.cascade_fraction, "margin": cfg.cascade_margin,
            "combine": cfg.cascade_combine, "sent": int(len(idx)), "of": int(len(first)),
            "max_margin_sent": round(float(m[idx].max()), 5) if len(idx) else None,
            "seconds_first": round(seconds_first, 3), "seconds_second": round(seconds_second, 3),
            "second_stage": second_label, "second_scorers": second_desc}
    name = f"{first_label}, cascade to {' + '.join(cfg.cascade)} ({cascade_label(cfg)})"
    return final, name, info


def score_options(cfg, questions: Sequence[Question], contexts: Sequence[Contexts],
                  embedder: Embedder, *, cascade: bool = True) -> tuple[np.ndarray, str, list[dict]]:
    """(scores ``(n, 5)``, scorer name, scorer descriptions) of ``cfg``'s scorer (see the module
    docstring); ``cascade=False`` scores with the first stage only. With a cascade the
    scores are probabilities, and the last description (``"type": "cascade"``) says how many
    questions went on and what each stage cost."""
    t0 = time.perf_counter()
    scores, label, described = score_readers(cfg, cfg.readers, questions, contexts, embedder)
    if not (cascade and getattr(cfg, "cascade", None)) or not len(questions):
        return scores, label, described
    first = C.as_probabilities(scores)
    seconds_first = time.perf_counter() - t0
    sent = C.route(first, fraction=cfg.cascade_fraction, margin=cfg.cascade_margin)
    idx = np.flatnonzero(sent)
    log.info("cascade: %d of %d questions (%s) go on to %s", len(idx), len(questions),
             cascade_label(cfg), " + ".join(cfg.cascade))
    t1 = time.perf_counter()
    second, second_label, second_desc = None, None, []
    if len(idx):
        second, second_label, second_desc = score_readers(
            cfg, cfg.cascade, [questions[i] for i in idx], [contexts[i] for i in idx], embedder)
    final, name, info = cascade_outcome(
        cfg, first, second, sent, first_label=label, second_label=second_label,
        second_desc=second_desc, seconds_first=seconds_first,
        seconds_second=time.perf_counter() - t1)
    return final, name, described + [info]
