"""Fine-tune a reader: the library behind ``python -m pipeline.train``.

A plain PyTorch loop (nanoGPT style), for anything ``AutoModelForMultipleChoice``
loads (BERT/MiniLM, MPNet, DeBERTa-v3, Longformer, ...), or LoRA adapters on a causal
LM (:mod:`pipeline.training.llm`: Llama, Mistral, Qwen2, ..., when ``--model`` is one or
``--reader-kind llm``; same splits, contexts, validation, checkpoints, resume and
stacker; the saved reader is the adapter). Encoder questions are encoded
by the reader's own :meth:`~pipeline.readers.multiple_choice.MultipleChoiceReader.encode`
(i.e. :func:`~pipeline.readers.encoding.encode_question`) and batched by its
:class:`~pipeline.readers.encoding.MultipleChoiceCollator`, so training sees exactly
the token layout ``predict`` sees. Contexts come from the CSV's ``context``
column or from :func:`pipeline.retrieval.retriever.retrieve` against an index, computed
once and cached in ``OUT/contexts.jsonl``.

``OUT`` after a run::

    config.json, model.safetensors, tokenizer files   best checkpoint (by valid MAP@3, else last)
                           (causal LM: adapter_config.json, adapter_model.safetensors)
    openbook_reader.json   max_length, retrieval settings, training config, validation history
    log.jsonl              {"step", "epoch", "loss", "lr", "head_lr"} every --log-every steps
                           (+ {"step", "valid": {...}} after each validation): the learning curve
    contexts.jsonl         the contexts used (a cache: a resumed run does not retrieve again)
    last/                  model + state.pt (optimizer, scheduler, RNG) + trainer_state.json

The run's parts: :mod:`~pipeline.training.config` (the recipe, the output folder,
resume), :mod:`~pipeline.training.data` (held-out split, contexts),
:mod:`~pipeline.training.model` (backbone, head, optimizer groups, schedule), this
module (the loop, validation, checkpoints, the log) and
:mod:`~pipeline.training.stacker` (the stacker fitted at the end).

Example::

    >>> from pipeline.training.config import TrainConfig
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.device import pick_device
from pipeline.fileio import write_dir_atomic, write_json_atomic
from pipeline.metrics import accuracy_at_1, map_at_3, rank_letters, softmax
from pipeline.questions import LETTERS, Question, load_question_files, load_questions
from pipeline.readers.kinds import reader_kind
from pipeline.readers.record import READER_CONFIG
from pipeline.readers.stacking import STACK_FILE, reader_feature
from pipeline.training.config import (HOLDOUT_FILE, LAST_DIR, LOG_FILE, TrainConfig, _clear_run,
                                      check_out_dir, default_model)
from pipeline.training.data import held_out_splits, load_contexts
from pipeline.training.llm import llm_trainee
from pipeline.training.model import make_batch, lr_factor, mc_trainee  # noqa: F401 (make_batch: API)
from pipeline.training.stacker import fit_stacker

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out: Path
    step: int
    best: dict | None
    history: list[dict] = field(default_factory=list)
    reader: Any = None  # the reader with the final weights (OUT holds the best ones)


# ---------------------------------------------------------------- batches, validation
def epoch_plan(n: int, epoch: int, cfg: TrainConfig) -> tuple[list[list[int]], np.ndarray]:
    """Deterministic per (seed, epoch): the micro-batches and each question's option order."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(n)
    perms = np.argsort(rng.random((n, len(LETTERS))), axis=1)
    if not cfg.shuffle_options:
        perms = np.tile(np.arange(len(LETTERS)), (n, 1))
    return [order[i:i + cfg.batch_size].tolist() for i in range(0, n, cfg.batch_size)], perms


def evaluate(reader, qs: Sequence[Question], contexts: Sequence[str]) -> dict:
    """MAP@3, accuracy@1 and loss (mean negative log-likelihood of the right option)
    through the reader's own scoring path (as predict)."""
    reader.model.eval()  # no dropout (the causal-LM reader does not switch it off itself)
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

    precision = cfg.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") \
            if device.startswith("cuda") else "fp32"
    if precision != "fp32" and not device.startswith("cuda"):
        log.warning("--precision %s needs CUDA; training in fp32 on %s", precision, device)
        precision = "fp32"
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    amp_device = "cuda" if device.startswith("cuda") else "cpu"

    torch.manual_seed(cfg.seed)
    kind = state.get("kind") or reader_kind(cfg.model or default_model(), cfg.reader_kind)
    trainee = llm_trainee(cfg, out, state, device, amp_dtype) if kind == "llm" \
        else mc_trainee(cfg, out, state, device)
    model, tokenizer, reader, groups = trainee.model, trainee.tokenizer, trainee.reader, trainee.groups
    base_name = trainee.base_name
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

    scaler = torch.amp.GradScaler(amp_device, enabled=precision == "fp16")
    n_train = sum(p.numel() for g in groups for p in g["params"])
    log.info("training %s on %d questions (%d valid): %d steps (%d/epoch, batch %d x %d), "
             "%.1fM trainable parameters, lr %g%s, %s on %s", base_name, len(train_qs),
             len(splits.get("valid", [])), total, steps_per_epoch, cfg.batch_size,
             cfg.grad_accum, n_train / 1e6, cfg.lr,
             f" (head {cfg.head_lr:g})" if kind == "mc" else " (LoRA)", precision, device)

    def reader_meta() -> dict:  # "step": the step of the weights in OUT (the best one)
        return {**trainee.record, "retrieval": retrieval,
                "training": asdict(cfg), "step": best["step"], "epoch": best["epoch"],
                "validation": history, "best": best, "created_by": "pipeline.train"}

    def checkpoint() -> None:
        save_last(out, model, tokenizer, opt, sched, {
            "step": step, "epoch": epoch, "batches_done": done, "history": history, "best": best,
            "base_model": base_name, "kind": kind, "config": asdict(cfg)})

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
                with torch.autocast(amp_device, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = trainee.loss(train_qs, contexts["train"], idx, perms) / len(group)
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
            if epoch_end:
                break  # the next epoch's order: epoch_plan again
    bar.close()
    if cfg.stack and "valid" in splits:
        fit_stacker(cfg, out, splits["valid"], contexts["valid"], device)
    log.info("done: %d steps; best %s; reader in %s", step, best, out)
    model.eval()
    return TrainResult(out=out, step=step, best=best, history=history, reader=reader)


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
