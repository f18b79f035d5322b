"""Combine a reader's scores with cheap evidence: a small learned linear stacker.

A small cross-encoder (MiniLM, MPNet) fine-tuned on ~1,000 questions is a
weak reader on its own; word overlap between an option and the retrieved
context, the embedding similarity of ``prompt + option`` to the context's
sentences, and even the option's length each carry signal it misses. The
stacker standardises every feature across a question's options (z-score),
weights them, and adds them up::

    score[i, k] = sum_f  w_f * z(feature_f[i, :])[k]

**Gated evidence.** The context features only say something when the retrieved
passages are about the question. With ``gated`` features the stacker also adds
each of them multiplied by the question's *evidence confidence*, the best cosine
between ``prompt + option`` (any option) and a context sentence (the raw,
un-standardised ``dense`` feature, see :func:`evidence_confidence`)::

    score[i, k] += sum_g  v_g * conf[i] * z(feature_g[i, :])[k]

so the fitted weight of the evidence grows with how well the contexts match the
question, and a question whose passages miss leans on the reader. Why gating and
the content features are the default: docs/results.md, "Stacker transfer".

The weights are fitted by ``pipeline.train`` on the validation questions
(conditional logit: softmax over the five options, cross-entropy, L2), saved
as ``openbook_stack.json`` in the reader folder, and applied by ``predict``
whenever a reader folder has one. Features (each ``(n_questions, n_options)``):

* ``reader``: the reader's log-probabilities;
* ``lexical``: option-distinctive word and word-pair overlap with the
  context (:func:`pipeline.readers.zeroshot.lexical_scores`);
* ``coverage``: the fraction of the option's words found in the context;
* ``dense``: best cosine of ``prompt + option`` with a context sentence;
* ``length``: the option's length in characters;
* ``consensus``: the option's mean cosine with the other options (question
  writers build distractors by editing the right answer, so it tends to sit
  in the middle of them).

``pipeline.train`` stacks :data:`CONTENT_FEATURES` (``lexical``, ``coverage``, ``dense``),
gated; ``length`` and ``consensus`` describe the question writer, and their weights
did not transfer from one writer's questions to another's.

Example::

    >>> import numpy as np
    >>> feats = {"reader": np.log([[0.1, 0.6, 0.1, 0.1, 0.1]]),
    ...          "length": np.array([[10., 30., 12., 11., 9.]])}
    >>> s = Stacker.fit(feats, np.array([1]), l2=1.0)
    >>> s.score(feats).argmax(axis=1).tolist()
    [1]
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.errors import OpenbookError
from pipeline.fileio import write_json_atomic
from pipeline.readers.zeroshot import ZeroShotScorer, lexical_scores, words, zscore

log = logging.getLogger(__name__)

STACK_FILE = "openbook_stack.json"
#: Every feature :func:`context_features` can compute (``reader`` comes from the reader).
CONTEXT_FEATURES = ("lexical", "coverage", "dense", "length", "consensus")
FEATURES = ("reader",) + CONTEXT_FEATURES
#: What the contexts say about each option: ``pipeline.train`` stacks these by default and
#: gates them by the evidence confidence. ``length`` and ``consensus`` describe how the
#: question writer built the options; their weights, fitted on one question generator's
#: validation questions, hurt on another's (docs/results.md, "Stacker transfer").
CONTENT_FEATURES = ("lexical", "coverage", "dense")


def gated_features(features: Sequence[str], gate: bool = True) -> list[str]:
    """The features of ``features`` that ``pipeline.train`` gates: its content features, when
    ``gate`` and ``dense`` (which gives the confidence) is among them.

    >>> gated_features(["lexical", "dense", "length"]), gated_features(["lexical", "length"])
    (['lexical', 'dense'], [])
    """
    return [f for f in CONTENT_FEATURES if f in features] if gate and "dense" in features else []


def evidence_confidence(feats: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 1)``: the question's best ``dense`` cosine over its options (see the docstring)."""
    if "dense" not in feats:
        raise OpenbookError("stacker: gated features need the 'dense' feature (the evidence "
                            "confidence is its best cosine)")
    return np.asarray(feats["dense"], dtype=np.float64).max(axis=-1, keepdims=True)


def reader_feature(probs: np.ndarray) -> np.ndarray:
    """The ``reader`` feature: log-probabilities ``(n, n_options)`` (floored at 1e-12)."""
    return np.log(np.clip(probs, 1e-12, None))


def center(x: np.ndarray) -> np.ndarray:
    """Subtract each row's (question's) mean across its options."""
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def coverage_scores(options: Sequence[str], context: str) -> np.ndarray:
    """Fraction of each option's (non-stop) words present in ``context`` -> ``(n_options,)``."""
    ctx = set(words(context))
    out = np.zeros(len(options), dtype=np.float32)
    for k, o in enumerate(options):
        w = words(o)
        out[k] = sum(x in ctx for x in w) / len(w) if w else 0.0
    return out


def context_features(names: Sequence[str], prompts: Sequence[str],
                     options: Sequence[Sequence[str]], contexts: Sequence[str], embedder=None,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """The named :data:`CONTEXT_FEATURES`, each ``(n_questions, n_options)``.

    ``embedder`` (a :class:`pipeline.index.embedding.Embedder`) is needed for ``dense``
    and ``consensus`` only.
    """
    unknown = sorted(set(names) - set(CONTEXT_FEATURES))
    if unknown:
        raise OpenbookError(f"unknown stacker feature(s) {unknown}; known: {list(CONTEXT_FEATURES)}")
    n_opt = max((len(o) for o in options), default=5)
    if any(len(o) != n_opt for o in options):
        raise OpenbookError("every question needs the same number of options to be stacked")
    out: dict[str, np.ndarray] = {}
    if "lexical" in names:
        out["lexical"] = np.stack([lexical_scores(o, c) for o, c in zip(options, contexts)])
    if "coverage" in names:
        out["coverage"] = np.stack([coverage_scores(o, c) for o, c in zip(options, contexts)])
    if "length" in names:
        out["length"] = np.array([[len(x) for x in o] for o in options], dtype=np.float32)
    if ("dense" in names or "consensus" in names) and embedder is None:
        raise OpenbookError("stacker features 'dense' and 'consensus' need an embedder")
    if "dense" in names:
        out["dense"] = ZeroShotScorer(embedder).dense_scores(prompts, options, contexts, progress)
    if "consensus" in names:
        flat = [x for o in options for x in o]
        v = embedder.encode(flat, progress=progress).reshape(len(options), n_opt, -1)
        sim = np.einsum("nid,njd->nij", v, v)
        out["consensus"] = (sim.sum(-1) - np.einsum("nii->ni", sim)) / max(1, n_opt - 1)
    for k in out:
        out[k] = out[k].reshape(len(options), n_opt).astype(np.float32)
    return out


@dataclass
class Stacker:
    """Linear weights over z-scored features. See the module docstring."""

    features: list[str]
    weights: list[float]
    info: dict = field(default_factory=dict)
    #: features only centred per question, not scaled: a reader's log-probabilities keep
    #: how sure it is (z-scoring makes a 0.99 and a 0.30 favourite look alike).
    centered: list[str] = field(default_factory=list)
    #: features that also enter multiplied by :func:`evidence_confidence`, with ``gate_weights``.
    gated: list[str] = field(default_factory=list)
    gate_weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.weights):
            raise OpenbookError("stacker: one weight per feature expected")
        if len(self.gated) != len(self.gate_weights):
            raise OpenbookError("stacker: one gate weight per gated feature expected")
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise OpenbookError(f"stacker: unknown feature(s) {unknown}; known: {list(FEATURES)}")
        if not set(self.gated) <= set(self.features) - {"reader"}:
            raise OpenbookError(f"stacker: gated features {self.gated} must be context features "
                                f"among {self.features}")
        if self.gated and "dense" not in self.features:
            raise OpenbookError("stacker: gated features need 'dense' among the features")

    @staticmethod
    def matrix(feats: Mapping[str, np.ndarray], names: Sequence[str],
               centered: Sequence[str] = (), gated: Sequence[str] = ()) -> np.ndarray:
        """``(n, n_options, n_features + n_gated)`` of z-scored (or, for ``centered``,
        centred) features, then the ``gated`` ones times :func:`evidence_confidence`;
        names a missing one."""
        missing = [f for f in [*names, *gated] if f not in feats]
        if missing:
            raise OpenbookError(f"stacker: feature(s) {missing} were not computed")
        cols = [center(feats[f]) if f in centered else zscore(feats[f]) for f in names]
        if gated:
            conf = evidence_confidence(feats)
            cols += [conf * zscore(feats[f]) for f in gated]
        return np.stack(cols, axis=-1)

    def score(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores ``(n_questions, n_options)``; higher is better."""
        return (self.matrix(feats, self.features, self.centered, self.gated)
                @ np.asarray([*self.weights, *self.gate_weights])).astype(np.float32)

    @classmethod
    def fit(cls, feats: Mapping[str, np.ndarray], answers: np.ndarray,
            names: Sequence[str] | None = None, l2: float = 1e-2,
            centered: Sequence[str] = (), gated: Sequence[str] = ()) -> "Stacker":
        """Conditional-logit fit: ``answers`` are option indices ``(n,)``."""
        import torch

        names = list(names or [f for f in FEATURES if f in feats])
        centered = [f for f in centered if f in names]
        gated = [f for f in gated if f in names]
        x = torch.tensor(cls.matrix(feats, names, centered, gated), dtype=torch.float64)
        y = torch.as_tensor(np.asarray(answers), dtype=torch.long)
        w = torch.zeros(x.shape[-1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w, y) + l2 * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        fitted = [round(float(v), 6) for v in w.detach()]
        return cls(names, fitted[:len(names)], {"n_questions": int(len(y)), "l2": l2}, centered,
                   gated, fitted[len(names):])

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STACK_FILE
        write_json_atomic(path, asdict(self))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Stacker | None":
        """The stacker saved in a reader folder, or ``None`` if it has none."""
        path = Path(directory).expanduser() / STACK_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(d["features"]), [float(v) for v in d["weights"]], d.get("info", {}),
                       list(d.get("centered", [])), list(d.get("gated", [])),
                       [float(v) for v in d.get("gate_weights", [])])
        except (OSError, ValueError, KeyError, TypeError, OpenbookError) as e:
            raise OpenbookError(f"{path} is not a valid stacker file ({e}); delete it to use the "
                                "reader alone, or retrain with pipeline.train") from e

    def describe(self) -> dict:
        return {"features": dict(zip(self.features, self.weights)), **self.info,
                **({"centered": list(self.centered)} if self.centered else {}),
                **({"gated": dict(zip(self.gated, self.gate_weights))} if self.gated else {})}

