"""Fine-tune a cross-encoder reranker: the library behind ``python -m pipeline.train_reranker``.

Questions whose source passage is known (a ``context`` cell, or ``source_title`` /
``source_id``: the one source rule of ``sources.py``) become ranking lists:

* the **query** is the question with its options (:func:`~pipeline.retrieval.retriever.make_query`),
  as :class:`~pipeline.retrieval.rerank.Reranker` will score it;
* **candidates**: the top ``candidates`` passages retrieved from ``--index`` (hybrid = dense +
  BM25 fused when the index has BM25, else dense), each as ``"Title. text"``;
* the **positive** is the first candidate that is the source, else the ``context`` text;
  the **hard negatives** are the best ``negatives`` candidates that are not the source.

Training is sentence-transformers' own ``CrossEncoderTrainer`` (HF Trainer: schedule,
checkpoints, ``resume_from_checkpoint``) with ``ListNetLoss`` by default: a softmax
cross-entropy over each question's list, i.e. the choice the reranker makes at inference
(which of *this question's* candidates comes first), with no class weighting to tune;
``loss="bce"`` is the pointwise ``BinaryCrossEntropyLoss`` (``pos_weight = negatives``).
Held-out questions (``valid`` file, or a seeded ``valid_fraction``) are never trained on:
recall@1/3 of their source among their candidates is recorded for the retrieval order, the
base model (as a cross-encoder, new head) and the trained one.

``OUT`` after a run (written in ``.OUT.partial/``, renamed into place when complete)::

    config.json, model.safetensors, tokenizer files   the CrossEncoder (``--rerank OUT``)
    openbook_reranker.json   kind, base model, data files + sha256, settings, loss, mined-data
                             counts, held-out recall before/after, training, library versions
    train_lists.jsonl        every list trained on / evaluated: query, passage ids, texts, labels
    checkpoints/checkpoint-N the trainer's last checkpoint (``--resume``; dropped by
                             ``keep_checkpoint=False``)

Example::

    >>> cfg = RerankerConfig(questions=["train.csv"], index="index/demo", out="runs/rr")  # doctest: +SKIP
    >>> train_reranker(cfg)["held_out"]["after"]                                      # doctest: +SKIP
    {'recall@1': 0.91, 'recall@3': 0.99}
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from transformers import TrainerCallback

from pipeline.device import pick_device
from pipeline.errors import OpenbookError
from pipeline.fileio import check_output_dir, publish_dir, sha256_file, write_json_atomic
from pipeline.retrieval.rerank import RECORD_FILE, RECORD_KIND, Reranker, local_model_folder

from pipeline.training.reranker_data import load_labelled, mine, source_recall, split_questions

log = logging.getLogger(__name__)

DATA_FILE, CHECKPOINTS = "train_lists.jsonl", "checkpoints"
FORMAT_VERSION = 1
LOSSES = ("listnet", "bce")
RETRIEVERS = ("auto", "dense", "bm25", "hybrid")
#: Fields that only steer a run: they may differ on --resume; all others are the recipe.
RUN_FIELDS = frozenset({"out", "epochs", "max_steps", "save_steps", "keep_checkpoint", "device",
                        "overwrite", "resume", "progress", "index", "eval_batch_size"})


@dataclass
class RerankerConfig:
    """Everything a run depends on (saved in ``openbook_reranker.json``); see the CLI's --help."""

    questions: list[str]
    out: str
    index: str | None = None
    model: str = "minilm"
    negatives: int = 7
    candidates: int = 20
    retriever: str = "auto"
    loss: str = "listnet"
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 2e-5
    warmup: float = 0.1
    max_length: int = 256
    valid: str | None = None
    valid_fraction: float = 0.1
    seed: int = 0
    max_steps: int | None = None
    save_steps: int = 500
    eval_batch_size: int = 32
    keep_checkpoint: bool = True
    device: str | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.questions = [str(p) for p in ([self.questions] if isinstance(self.questions, str)
                                           else self.questions)]
        one_of = lambda xs: f"must be one of {', '.join(xs)}"  # noqa: E731
        checks = [("--negatives", self.negatives >= 1, "must be >= 1"),
                  ("--candidates", self.candidates > self.negatives, "must exceed --negatives"),
                  ("--epochs", self.epochs > 0, "must be > 0"), ("--lr", self.lr > 0, "must be > 0"),
                  ("--batch-size", self.batch_size >= 1, "must be >= 1"),
                  ("--warmup", 0 <= self.warmup < 1, "must be in [0, 1)"),
                  ("--max-length", self.max_length >= 16, "must be >= 16"),
                  ("--valid-fraction", 0 <= self.valid_fraction < 1, "must be in [0, 1)"),
                  ("--max-steps", (self.max_steps or 1) >= 1, "must be >= 1"),
                  ("--save-steps", self.save_steps >= 1, "must be >= 1"),
                  ("--loss", self.loss in LOSSES, one_of(LOSSES)),
                  ("--retriever", self.retriever in RETRIEVERS, one_of(RETRIEVERS))]
        for flag, ok, why in checks:
            if not ok:
                raise OpenbookError(f"{flag} {getattr(self, flag[2:].replace('-', '_'))!r}: {why}")

    def recipe(self) -> dict:
        """The fields that define the trained model (paths resolved)."""
        d = {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS}
        d["questions"] = [str(Path(p).resolve()) for p in self.questions]
        d["valid"] = str(Path(self.valid).resolve()) if self.valid else None
        return d


# ---------------------------------------------------------------- run folder
def _files(paths: Sequence[str]) -> list[dict]:
    return [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in paths]


def _is_run(folder: Path) -> bool:
    try:
        return json.loads((folder / RECORD_FILE).read_text(encoding="utf-8")).get("kind") \
            == RECORD_KIND
    except (OSError, ValueError, AttributeError):
        return False


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ck = folder / CHECKPOINTS
    return get_last_checkpoint(str(ck)) if ck.is_dir() and _is_run(folder) else None


def versions() -> dict:
    """Versions of what the run used."""
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"python": sys.version.split()[0], **{p: version(p) for p in (
        "openbook", "torch", "transformers", "sentence-transformers", "datasets", "accelerate")}}


def _check_resume(rec: dict, cfg: RerankerConfig) -> None:
    saved, given = rec["settings"], cfg.recipe()
    for k, v in given.items():
        if saved.get(k) != v:
            flag = "QUESTIONS.csv" if k == "questions" else f"--{k.replace('_', '-')}"
            raise OpenbookError(f"--resume: {flag} {v} differs from the run's {saved.get(k)}; "
                                "drop it, or start a new run with --overwrite")
    for f in rec["data"]["questions"] + ([rec["data"]["valid"]] if rec["data"]["valid"] else []):
        if Path(f["path"]).is_file() and sha256_file(f["path"]) != f["sha256"]:
            raise OpenbookError(f"--resume: {f['path']} changed since the run started (sha256 "
                                "differs); start a new run with --overwrite")


def prepare(cfg: RerankerConfig, out: Path, work: Path) -> tuple[dict, list[dict], str | None]:
    """``(record, lists, checkpoint)`` of the run in ``work``: a fresh run checks its inputs,
    mines its lists and creates ``work``; ``resume`` reopens the saved run."""
    if cfg.resume:
        src = work if _last_checkpoint(work) else out if _last_checkpoint(out) else None
        if src is None:
            raise OpenbookError(f"--resume: neither --out {out} nor {work} holds a trainer "
                                f"checkpoint ({CHECKPOINTS}/checkpoint-N); drop --resume to "
                                "start a new run")
        if src == out:
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(out, work)
        rec = json.loads((work / RECORD_FILE).read_text(encoding="utf-8"))
        _check_resume(rec, cfg)
        log.info("resuming %s from %s", out, _last_checkpoint(work))
        lines = (work / DATA_FILE).read_text(encoding="utf-8").splitlines()
        return rec, [json.loads(x) for x in lines], _last_checkpoint(work)
    check_output_dir(out, cfg.overwrite, ours=_is_run,
                     is_file=f"--out {out} is a file; give a folder for the reranker",
                     not_empty=f"--out {out} is not empty; pass --overwrite to replace the "
                               "reranker in it, --resume to continue its run, or choose another --out",
                     not_ours=f"--out {out} holds files that are not a reranker run; --overwrite "
                              "only replaces a previous run: choose another --out")
    if not cfg.index:
        raise OpenbookError("--index is required: the hard negatives are mined from it (give "
                            "an index built by python -m pipeline.build_index)")
    base = local_model_folder(cfg.model)
    if base is None:
        raise OpenbookError(f"--model {cfg.model}: no such folder, and no installed model of that "
                            "name (nothing is downloaded); give a local model folder, or minilm")
    items = load_labelled(cfg.questions)
    train_items, held = split_questions(cfg, items)
    from pipeline.index.bm25 import has_bm25
    from pipeline.index.embedding import Embedder
    from pipeline.index.store import load_index

    store = load_index(cfg.index)
    retriever = cfg.retriever if cfg.retriever != "auto" else (
        "hybrid" if has_bm25(store.meta) else "dense")
    embedder = None if retriever == "bm25" else Embedder(store.meta["embedder"]["name"],
                                                         device=pick_device(cfg.device))
    stats: Counter = Counter()
    rows = mine(train_items, "train", store, embedder, cfg, retriever, stats)
    rows += mine(held, "valid", store, embedder, cfg, retriever, stats) if held else []
    if not any(r["split"] == "train" for r in rows):
        raise OpenbookError(f"--index {cfg.index}: the source of none of the {len(train_items)} "
                            f"training questions is in its top {cfg.candidates} passages, and "
                            "they have no 'context' text; index their sources or raise --candidates")
    valid_rows = [r for r in rows if r["split"] == "valid"]
    rec = {"kind": RECORD_KIND, "format_version": FORMAT_VERSION, "complete": False,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "base_model": {"name": cfg.model, "path": str(base)},
           "max_length": cfg.max_length, "query": "prompt+options", "passage": "title. text",
           "settings": cfg.recipe(), "retriever": retriever,
           "data": {"questions": _files(cfg.questions),
                    "valid": _files([cfg.valid])[0] if cfg.valid else None,
                    "index": {"path": str(Path(cfg.index).resolve()),
                              "meta_sha256": sha256_file(Path(cfg.index) / "meta.json"),
                              "passages": store.size,
                              "embedder": store.meta["embedder"]["name"]},
                    "file": DATA_FILE, "questions_with_source": len(items),
                    "train_lists": len(rows) - len(valid_rows), "held_out_ids":
                        [r["id"] for r in valid_rows], **dict(sorted(stats.items()))},
           "held_out": {"questions": len(valid_rows), "candidates": cfg.candidates,
                        "retrieval": source_recall(None, valid_rows)} if valid_rows else None,
           "versions": versions()}
    if work.exists():
        log.warning("removing the unfinished run in %s (--resume continues it instead)", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    with open(work / DATA_FILE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_json_atomic(work / RECORD_FILE, rec)
    return rec, rows, None


# ---------------------------------------------------------------- training
def _dataset(rows: list[dict], loss: str):
    """listnet: columns query, docs, labels (one list a row); bce: query, passage, label."""
    from datasets import Dataset

    train = [r for r in rows if r["split"] == "train"]
    if loss == "listnet":
        return Dataset.from_dict({k: [r[k] for r in train] for k in ("query", "docs", "labels")})
    flat = [(r["query"], d, float(y)) for r in train for d, y in zip(r["docs"], r["labels"])]
    return Dataset.from_dict(dict(zip(("query", "passage", "label"), map(list, zip(*flat)))))


def train_reranker(cfg: RerankerConfig) -> dict:
    """Run (or ``resume``) one training; return the final ``openbook_reranker.json`` record."""
    from sentence_transformers.util import is_training_available

    if not is_training_available():
        raise OpenbookError("training a reranker needs the packages datasets and accelerate; "
                            "Fix: pip install 'sentence-transformers[train]'")
    import torch
    import transformers
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments, losses)

    out = Path(cfg.out)
    work = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    rec, rows, checkpoint = prepare(cfg, out, work)
    device = pick_device(cfg.device)
    if not cfg.progress:
        transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(cfg.seed)
    model = CrossEncoder(rec["base_model"]["path"], num_labels=1, max_length=cfg.max_length,
                         local_files_only=True, device=device)
    scorer = Reranker(model=model, name=cfg.model, batch_size=cfg.eval_batch_size)
    valid = [r for r in rows if r["split"] == "valid"]
    if rec["held_out"] is not None and "before" not in rec["held_out"]:
        rec["held_out"]["before"] = source_recall(scorer, valid)
        write_json_atomic(work / RECORD_FILE, rec)
    lists_per_step = max(1, cfg.batch_size // (1 + cfg.negatives))
    if cfg.loss == "listnet":
        loss = losses.ListNetLoss(model, mini_batch_size=cfg.batch_size)
    else:
        loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(cfg.negatives)))
    args = CrossEncoderTrainingArguments(
        output_dir=str(work / CHECKPOINTS), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, learning_rate=cfg.lr, warmup_steps=cfg.warmup,
        per_device_train_batch_size=lists_per_step if cfg.loss == "listnet" else cfg.batch_size,
        seed=cfg.seed, data_seed=cfg.seed, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=1, logging_steps=10, report_to="none", disable_tqdm=not cfg.progress,
        use_cpu=device == "cpu", dataloader_num_workers=0)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=_dataset(rows, cfg.loss),
                                  loss=loss, callbacks=[_SaveAtEnd(), _LogLoss()])
    trainer.remove_callback(transformers.PrinterCallback)  # our _LogLoss logs instead
    start, steps, loss_value = time.monotonic(), None, None
    if checkpoint:  # HF runs one step more when resumed at the end: a finished run is loaded
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        planned = cfg.max_steps or math.ceil(cfg.epochs * len(trainer.get_train_dataloader()))
        if state["global_step"] >= planned:
            log.info("%s is the end of the run: nothing left to train", checkpoint)
            scorer.model = model = CrossEncoder(checkpoint, max_length=cfg.max_length,
                                                local_files_only=True, device=device)
            steps = state["global_step"]
            loss_value = (rec.get("training") or {}).get("train_loss")
    if steps is None:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        steps, loss_value = int(result.global_step), float(result.training_loss)
    if rec["held_out"] is not None:
        rec["held_out"]["after"] = source_recall(scorer, valid)
    model.save_pretrained(str(work), create_model_card=False)
    if not cfg.keep_checkpoint:
        shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    rec["loss"] = {"name": type(loss).__name__, **loss.get_config_dict(),
                   "lists_per_step" if cfg.loss == "listnet" else "pairs_per_step":
                       lists_per_step if cfg.loss == "listnet" else cfg.batch_size}
    rec["training"] = {"global_step": steps, "train_loss": loss_value,
                       "epochs": cfg.epochs, "max_steps": cfg.max_steps, "device": device,
                       "seconds": round(time.monotonic() - start, 1),
                       "resumed_from": Path(checkpoint).name if checkpoint else None,
                       "checkpoint_kept": cfg.keep_checkpoint}
    rec.update(complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json_atomic(work / RECORD_FILE, rec)
    publish_dir(work, out)
    log.info("reranker written to %s", out)
    return rec


class _SaveAtEnd(TrainerCallback):
    """Save a checkpoint at the last step too, so a finished run can be resumed."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_save = True
        return control


class _LogLoss(TrainerCallback):
    """The trainer's loss lines through ``logging`` (not print)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            log.info("step %d/%d: %s", state.global_step, state.max_steps,
                     ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in logs.items()))
