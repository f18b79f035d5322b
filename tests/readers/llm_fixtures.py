"""Tiny tokenizers and causal LMs for the LLM reader tests (no network, no downloaded weights).

Three tokenizer families, each trained with the ``tokenizers`` library on
:data:`SENTENCES` and wrapped in ``PreTrainedTokenizerFast``:

* ``wordpiece``: BERT-style WordPiece (cased), ``[CLS] ... [SEP]`` post-processor;
* ``bytelevel``: GPT-2 / Llama-3-style byte-level BPE (``ĠA``), no special tokens added;
* ``metaspace``: SentencePiece-style Unigram with ``▁`` and a ``<s>`` BOS post-processor (Llama-2 style).

:func:`save_tiny_lm` builds a random Llama / Mistral / Qwen2 model (hidden 32, 2 layers)
whose vocabulary matches the tokenizer and saves both with ``save_pretrained``.

Example::

    >>> tok = make_tokenizer("bytelevel")             # doctest: +SKIP
    >>> path = save_tiny_lm(tmp_path / "llama", tok, "llama")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

SENTENCES = [
    "Read the context and answer the question with the letter of the correct option.",
    "Context: Mars is the fourth planet from the Sun. Photosynthesis releases oxygen.",
    "The coulomb is the unit of electric charge. Einstein published general relativity in 1915.",
    "Question: Which planet is known as the red planet? Options: A. Mars B. Venus C. Jupiter",
    "D. Saturn E. Mercury Answer: A Answer: B Answer: C Answer: D Answer: E",
    "What does photosynthesis produce? oxygen and glucose, carbon dioxide, nitrogen, water.",
    "Is the answer correct? Answer yes or no: yes no yes no",
    "The mitochondrion is the powerhouse of the cell; the nucleus holds the genes.",
    "Water boils at 100 degrees Celsius at sea level and freezes at 0 degrees.",
]
#: Words the property tests draw from (all seen in training, so nothing is unknown).
WORDS = sorted({w.strip(".,;:?") for s in SENTENCES for w in s.split()} - {""})

FAMILIES = ("wordpiece", "bytelevel", "metaspace")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)


@lru_cache(maxsize=None)
def make_tokenizer(family: str, vocab_size: int = 400):
    """A ``PreTrainedTokenizerFast`` of ``family`` (see module docstring), trained on SENTENCES."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = SENTENCES * 3
    if family == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                  special_tokens=specials))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", eos_token="[EOS]")
    if family == "bytelevel":
        specials = ["<|endoftext|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        # no pad token on purpose: the reader must fall back to eos
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                       bos_token="<|endoftext|>")
    if family == "metaspace":
        specials = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        tok.train_from_iterator(corpus, trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>"))
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                       eos_token="</s>")
    raise ValueError(family)


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A 2-layer, hidden-32 config of ``arch`` in {"llama", "mistral", "qwen2"}."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    return cls(vocab_size=vocab_size, **{**TINY, **overrides})


def tiny_lm(arch: str, tokenizer, seed: int = 0, **overrides):
    """A random ``*ForCausalLM`` with ``len(tokenizer)`` embeddings, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer), **overrides))
    with torch.no_grad():  # bigger output weights than the 0.02 init, so scores differ visibly
        model.get_output_embeddings().weight.mul_(50)
    return model.eval()


def save_tiny_lm(directory: Path, tokenizer, arch: str = "llama", *, model=None,
                 record: dict | None = None, seed: int = 0) -> str:
    """Save a tiny causal LM (built unless given) + tokenizer (+ ``openbook_reader.json``)."""
    model = model if model is not None else tiny_lm(arch, tokenizer, seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if record is not None:
        (directory / "openbook_reader.json").write_text(json.dumps(record))
    return str(directory)


QUESTIONS = [
    "Which planet is known as the red planet?",
    "What does photosynthesis produce?",
    "What is the unit of electric charge?",
    "Where is the powerhouse of the cell?",
]
OPTIONS = [
    ["Mars", "Venus", "Jupiter", "Saturn", "Mercury"],
    ["oxygen and glucose", "carbon dioxide", "nitrogen", "water", "the nucleus holds the genes"],
    ["coulomb", "the Sun", "water", "Einstein", "oxygen"],
    ["mitochondrion", "nucleus", "Mars", "genes", "the fourth planet from the Sun"],
]
CONTEXTS = [
    "Mars is the fourth planet from the Sun. " * 3,
    "",
    "The coulomb is the unit of electric charge. " * 30,
    "The mitochondrion is the powerhouse of the cell.",
]
