"""The pictures of an evaluation report, and the ``report.md`` page that shows them.

matplotlib with the Agg backend: files only, no display needed (servers, CI).
Every function takes plain numbers (what ``metrics.json`` holds) and writes
one small PNG:

* :func:`plot_context_curve`: MAP@3 and accuracy@1 vs the number of passages given;
* :func:`plot_margins`: histogram of score margins (top minus runner-up), right vs wrong;
* :func:`plot_recall`: recall@k of the source passage, one line per retriever.

Example::

    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> plot_margins(np.array([0.5, 0.1, 0.9]), np.array([True, False, True]), d / "m.png").name
    'm.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

#: MAP@3 of guessing (5 options, 3 guesses): (1 + 1/2 + 1/3) / 5.
RANDOM_MAP3 = (1 + 1 / 2 + 1 / 3) / 5
RIGHT, WRONG = "#1a9850", "#d73027"
LINE_COLORS = {"dense": "#3366cc", "bm25": "#ff9900", "hybrid": "#109618"}
DPI = 100

FILES = {"curve": "map_vs_contexts.png", "margins": "margins.png", "recall": "recall_at_k.png",
         "cascade": "cascade.png"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_context_curve(curve: Sequence[dict], top_k: int, path: Path, title: str = "") -> Path:
    """``curve`` = ``[{"k", "map@3", "accuracy@1"}]``; the ``top_k`` used for the headline marked."""
    ks = [c["k"] for c in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(ks, [c["map@3"] for c in curve], "o-", color="#3366cc", lw=2.2, label="MAP@3")
    ax.plot(ks, [c["accuracy@1"] for c in curve], "s--", color="#888888", lw=1.4,
            label="accuracy@1")
    for c in curve:
        ax.annotate(f"{c['map@3']:.3f}", (c["k"], c["map@3"]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8, color="#3366cc")
    ax.axhline(RANDOM_MAP3, color="#cc3333", lw=1, ls=":", label=f"random MAP@3 ({RANDOM_MAP3:.3f})")
    ax.axvline(top_k, color="#555555", lw=1, ls=":")
    ax.set_xticks(ks)
    ax.set_xticklabels([f"{k}\n(used)" if k == top_k else str(k) for k in ks])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("passages given to the scorer (first k retrieved)")
    ax.set_ylabel("score")
    ax.set_title(title or "MAP@3 vs number of contexts", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_margins(margins: np.ndarray, correct: np.ndarray, path: Path, title: str = "") -> Path:
    """Histogram of ``margins`` ``(n,)`` for right (``correct`` True) and wrong top-1 answers."""
    margins, correct = np.asarray(margins, dtype=float), np.asarray(correct, dtype=bool)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    hi = float(margins.max()) if margins.size else 1.0
    bins = np.linspace(0.0, hi if hi > 0 else 1.0, 21)
    for mask, color, label in ((correct, RIGHT, "right"), (~correct, WRONG, "wrong")):
        vals = margins[mask]
        if not vals.size:
            continue
        ax.hist(vals, bins=bins, color=color, alpha=0.55, edgecolor=color,
                label=f"{label} top-1: {vals.size} (median margin {np.median(vals):.3g})")
        ax.axvline(float(np.median(vals)), color=color, lw=1.5, ls="--")
    ax.set_xlabel("score margin: top option's score minus the runner-up's")
    ax.set_ylabel("questions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title or "How sure is the scorer when it is right, and when wrong?", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_recall(recall: dict, path: Path, title: str = "") -> Path:
    """``recall`` = ``{retriever: {"n", "recall@k": {"k": value}}}``: one line per retriever."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ks_all: set[int] = set()
    for name, r in recall.items():
        ks = sorted(int(k) for k in r["recall@k"])
        ks_all.update(ks)
        vals = [r["recall@k"][str(k)] for k in ks]
        label = f"{name}: " + ", ".join(f"R@{k} {r['recall@k'][str(k)]:.2f}"
                                        for k in dict.fromkeys([ks[0], *(k for k in ks if k == 5),
                                                                ks[-1]]))
        style = "o--" if name.endswith("+rerank") else "o-"
        ax.plot(ks, vals, style, lw=2, color=LINE_COLORS.get(name.removesuffix("+rerank")),
                label=label)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ks_all))
    ax.set_xticklabels([str(k) for k in sorted(ks_all)])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    n = next(iter(recall.values()))["n"] if recall else 0
    ax.set_xlabel("k (passages retrieved)")
    ax.set_ylabel("recall@k of the source passage")
    ax.set_title(title or f"Is the source passage retrieved? ({n} questions)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_cascade(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """``rows`` of :func:`pipeline.readers.cascade.curve` (``fraction``, ``map@3``,
    ``seconds``): MAP@3 and the projected seconds against the fraction sent on."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    fr = [r["fraction"] for r in rows]
    ax.plot(fr, [r["map@3"] for r in rows], "o-", lw=2, color="#1f77b4", label="MAP@3")
    ax.set_xlabel("fraction of the questions sent to the second stage (least confident first)")
    ax.set_ylabel("MAP@3", color="#1f77b4")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(fr, [r["seconds"] for r in rows], "s--", lw=1.5, color="#d62728", label="seconds")
    ax2.set_ylabel("seconds (both stages, projected)", color="#d62728")
    ax.set_title(title or "Confidence cascade: quality against cost", fontsize=11)
    return _save(fig, path)


def write_all(folder: Path, *, curve, top_k: int, margins, correct, recall: dict | None,
              scorer: str = "", cascade: Sequence[dict] | None = None) -> dict[str, str]:
    """Write every plot there is data for into ``folder``; ``{kind: file name}``."""
    folder = Path(folder)
    out = {}
    if len(curve) > 1:
        plot_context_curve(curve, top_k, folder / FILES["curve"])
        out["curve"] = FILES["curve"]
    plot_margins(margins, correct, folder / FILES["margins"])
    out["margins"] = FILES["margins"]
    if recall:
        plot_recall(recall, folder / FILES["recall"])
        out["recall"] = FILES["recall"]
    if cascade:
        plot_cascade(cascade, folder / FILES["cascade"])
        out["cascade"] = FILES["cascade"]
    return out


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def report_markdown(m: dict, images: dict[str, str]) -> str:
    """The short ``report.md`` for ``metrics.json`` content ``m`` and the plots in ``images``."""
    r = m["retrieval"]
    how = (f"{r['retriever']}, top-k {r['top_k']}, query {r['query']}"
           + (", per-option queries" if r.get("per_option") else ""))
    lines = [
        f"# Evaluation of `{m['questions']}`", "",
        f"Index `{m['index']}` (embedder `{m['embedder']}`). Scorer: {m['scorer']}"
        + (" (**a baseline**, no trained reader)." if m.get("baseline") else "."), "",
        "| MAP@3 | accuracy@1 | n | scorer | retrieval | seconds |",
        "|---|---|---|---|---|---|",
        f"| **{_fmt(m['map@3'])}** | {_fmt(m['accuracy@1'])} | {m['n']} | {m['scorer']} | {how} "
        f"| {m['seconds_headline']} (all: {m['seconds']}) |", "",
        "Seconds: retrieval and scoring as `predict` does them, model loading included; "
        "*all* adds the extra scoring for the curve, the recall runs and the plots.", "",
    ]
    curve = m["map@3_vs_contexts"]
    if len(curve) > 1:
        lines += ["## MAP@3 vs number of contexts", ""]
        if "curve" in images:
            lines += [f"![MAP@3 vs number of contexts]({images['curve']})", ""]
        lines += ["| k | " + " | ".join(str(c["k"]) for c in curve) + " |",
                  "|---|" + "---|" * len(curve),
                  "| MAP@3 | " + " | ".join(_fmt(c["map@3"]) for c in curve) + " |",
                  "| accuracy@1 | " + " | ".join(_fmt(c["accuracy@1"]) for c in curve) + " |", ""]
    if m.get("cascade_curve"):
        c = m["cascade"]
        lines += ["## Confidence cascade", "",
                  f"{c['sent']} of {c['of']} questions ({c['route']}) went on to "
                  f"{' + '.join(c['readers'])} ({c['combine']}); first stage "
                  f"{c['seconds_first']} s, second stage on all questions "
                  f"{c.get('seconds_second_all')} s.", ""]
        if "cascade" in images:
            lines += [f"![cascade: MAP@3 and seconds]({images['cascade']})", ""]
        lines += ["| fraction sent | questions | MAP@3 | seconds |", "|---|---|---|---|"]
        lines += [f"| {r['fraction']} | {r['sent']} | {_fmt(r['map@3'])} | {r['seconds']} |"
                  for r in m["cascade_curve"]]
        lines += ["", "Seconds: the first stage on every question plus the second stage's "
                  "measured rate times the questions sent on.", ""]
    lines += ["## Score margins", ""]
    if "margins" in images:
        lines += [f"![score margins, right vs wrong]({images['margins']})", ""]
    mg = m["margin"]
    lines += [f"Median margin (top score minus runner-up): right answers {_fmt(mg['right_median'])}, "
              f"wrong answers {_fmt(mg['wrong_median'])}. A wide gap means the margin tells "
              "when to trust an answer.", ""]
    if m.get("recall"):
        ks = list(next(iter(m["recall"].values()))["recall@k"])
        lines += ["## Recall@k of the source passage", ""]
        if "recall" in images:
            lines += [f"![recall@k per retriever]({images['recall']})", ""]
        lines += ["| retriever | n | " + " | ".join(f"R@{k}" for k in ks) + " |",
                  "|---|---|" + "---|" * len(ks)]
        for name, rec in m["recall"].items():
            lines.append(f"| {name} | {rec['n']} | "
                         + " | ".join(_fmt(rec["recall@k"][k]) for k in ks) + " |")
        if list(m["recall"]) == ["dense"]:
            lines += ["", "Only dense: the index has no BM25 (`python -m pipeline.bm25 --index "
                      "DIR` adds it; then bm25 and hybrid are measured too)."]
        lines += ["", f"Rule: {m['source_rule']}.", ""]
    else:
        lines += ["No recall@k: the questions have no `context`, `source_title` or `source_id` "
                  "column saying where they come from.", ""]
    lines += ["Files: `metrics.json` (every number and the settings), `per_question.csv` (per "
              "question: ranking, right or not, AP@3, margin, option scores, passage ids, rank of "
              "the source passage).", ""]
    return "\n".join(lines)
