"""LoRA adapters on a causal LM, trained on the letter loss: the causal-LM side of ``pipeline.train``.

:func:`llm_trainee` gives :func:`pipeline.training.loop.train` a
:class:`~pipeline.training.model.Trainee` for a causal LM (any ``*ForCausalLM``: Llama,
Mistral, Qwen2, ...): the base model loaded by
:func:`~pipeline.readers.llm_loading.load_causal_lm` (bf16 on CUDA, fp32 on CPU) and
frozen, peft LoRA adapters on it (``--lora-r``, ``--lora-alpha``, ``--lora-dropout``,
``--lora-target-modules``: peft's default modules for the architecture, else
``all-linear``), kept in fp32 (peft casts adapters up when the base is half precision),
gradient checkpointing on CUDA (``--gradient-checkpointing``). The loss is the
cross-entropy over the five letter log-probs after the answer cue, computed by the
reader :class:`~pipeline.readers.llm.CausalLMReader` itself
(:meth:`~pipeline.readers.llm.CausalLMReader.encode` +
:meth:`~pipeline.readers.llm.CausalLMReader.letter_log_probs`), so training sees the
prompts ``predict`` scores.

The saved reader (``OUT``) is the adapter (``adapter_config.json`` +
``adapter_model.safetensors``, fp32) with the tokenizer and ``openbook_reader.json``:
``kind: "llm"``, ``base_model`` (an absolute path for a local base),
``base_architecture``, ``vocab_size`` (checked when loaded), ``max_length``, ``llm``
(scoring ``letter``, template, chat template) and ``lora``; the loop adds ``retrieval``,
``training``, ``validation``. ``predict --reader OUT`` /
:func:`pipeline.readers.kinds.load_reader` load base + adapter and refuse a missing or
different base with a message.

Example::

    >>> from pipeline.training.config import TrainConfig
    >>> from pipeline.training.loop import train
    >>> cfg = TrainConfig(train="train.csv", out="readers/qwen-lora", model="models/qwen2-0.5b",
    ...                   use_context_column=True, max_length=512, lora_r=16)   # doctest: +SKIP
    >>> train(cfg).best                                                          # doctest: +SKIP
    {'step': ..., 'map@3': ..., 'accuracy@1': ..., 'loss': ...}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import OpenbookError
from pipeline.questions import LETTERS
from pipeline.readers.llm import CausalLMReader
from pipeline.readers.llm_loading import ADAPTER_CONFIG, load_causal_lm
from pipeline.readers.prompting import TEMPLATES
from pipeline.readers.record import ReaderError
from pipeline.training.config import LAST_DIR, TrainConfig
from pipeline.training.model import Trainee, shown_options

log = logging.getLogger(__name__)

#: ``--lr`` default for LoRA adapters (the usual LoRA rate; the base model does not move).
LORA_LR = 2e-4
ALL_LINEAR = "all-linear"


def base_source(model: str | None) -> str:
    """``--model`` as the base to record: an absolute path for a local folder, else the hub name.

    Raises ReaderError naming ``--model`` when it is missing or is itself an adapter.
    """
    if not model:
        raise ReaderError("--reader-kind llm needs --model: pass a causal-LM folder or hub name")
    path = Path(model).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        raise ReaderError(f"--model {model} is a LoRA adapter; training makes a new one. Fix: "
                          "pass its base model as --model")
    return str(path.resolve()) if path.exists() else model


def target_modules(spec: str | None) -> list[str] | str | None:
    """``--lora-target-modules`` for ``LoraConfig``: None (peft's default), ``"all-linear"``
    or the list of module names.

    >>> target_modules("q_proj, v_proj"), target_modules("all-linear"), target_modules(None)
    (['q_proj', 'v_proj'], 'all-linear', None)
    """
    if not spec:
        return None
    if spec.strip() == ALL_LINEAR:
        return ALL_LINEAR
    return [m.strip() for m in spec.split(",") if m.strip()]


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """``get_peft_model`` with the run's LoRA settings. Without ``--lora-target-modules``:
    peft's modules for the architecture, or ``all-linear`` when peft knows none."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules(cfg.lora_target_modules)

    def lora(t):
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=t, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora(targets))
    except ValueError as e:
        if targets is not None:
            raise OpenbookError(f"--lora-target-modules {cfg.lora_target_modules}: "
                                f"{str(e).splitlines()[0]}. Fix: name linear layers of the model "
                                f"(e.g. q_proj,v_proj) or pass {ALL_LINEAR}") from e
        log.info("peft has no default LoRA modules for %s: using %s",
                 getattr(model.config, "model_type", "this model"), ALL_LINEAR)
        return get_peft_model(model, lora(ALL_LINEAR))


def _refuse_encoder_flags(cfg: TrainConfig) -> None:
    for flag, value in (("--freeze-layers", cfg.freeze_layers),
                        ("--freeze-embeddings", cfg.freeze_embeddings)):
        if value:
            raise OpenbookError(f"{flag} applies to encoder readers; a causal LM trains LoRA "
                                f"adapters on a frozen base. Fix: drop {flag}")


def llm_trainee(cfg: TrainConfig, out: Path, state: dict, device: str,
                amp_dtype: torch.dtype | None) -> Trainee:
    """A causal LM with trainable LoRA adapters (``OUT/last``'s on ``--resume``), as a Trainee.

    The base is loaded in ``amp_dtype`` (bf16/fp16 on CUDA) or fp32, frozen; adapters fp32.
    Sets ``cfg.lr`` when None (:data:`LORA_LR`). The batch loss: mean cross-entropy over the
    letter log-probs ``(batch, 5)`` of :meth:`CausalLMReader.letter_log_probs`.
    """
    _refuse_encoder_flags(cfg)
    base = state.get("base_model") or base_source(cfg.model)
    lm = load_causal_lm(base, device=device, dtype=amp_dtype or torch.float32)
    model = lm.model
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device.startswith("cuda")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.resume:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(out / LAST_DIR), is_trainable=True)
    else:
        model = add_lora(model, cfg)
    if cfg.lr is None:
        cfg.lr = LORA_LR
    reader = CausalLMReader(model, lm.tokenizer, name=base, max_length=cfg.max_length,
                            batch_size=cfg.eval_batch_size, device=lm.device, scoring="letter",
                            template=cfg.template, use_chat_template=cfg.use_chat_template)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "head": False}]

    def loss(qs, contexts, idx, perms):
        options, labels = shown_options(qs, idx, perms)
        ids = reader.encode([qs[i].prompt for i in idx], options, [contexts[i] for i in idx],
                            [qs[i].row for i in idx])
        logp = reader.letter_log_probs(ids, len(LETTERS))
        return torch.nn.functional.cross_entropy(logp, torch.tensor(labels, device=logp.device))

    archs = list(getattr(lm.config, "architectures", None) or [])
    lora_cfg = model.peft_config["default"]
    targets = lora_cfg.target_modules
    record = {"kind": "llm", "max_length": cfg.max_length, "base_model": base,
              "base_architecture": archs[0] if archs else None,
              "vocab_size": getattr(lm.config, "vocab_size", None),
              "llm": {"scoring": "letter", "use_chat_template": reader.use_chat_template,
                      "template": reader.template_name if reader.template_name in TEMPLATES
                      else reader.template},
              "lora": {"r": lora_cfg.r, "alpha": lora_cfg.lora_alpha,
                       "dropout": lora_cfg.lora_dropout,
                       "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple))
                       else targets, "gradient_checkpointing": bool(checkpointing)}}
    n = sum(p.numel() for p in params)
    log.info("LoRA r=%d alpha=%g on %s of %s: %.2fM trainable parameters (%s), base %s%s",
             lora_cfg.r, lora_cfg.lora_alpha, record["lora"]["target_modules"], base, n / 1e6,
             params[0].dtype if params else "-", lm.info["dtype"],
             ", gradient checkpointing" if checkpointing else "")
    return Trainee("llm", model, lm.tokenizer, reader, base, groups, loss, record)
