"""Accuracy plots as matplotlib figures: the scaling curves (accuracy versus k on a log2 axis, shaded 95%
intervals, a greedy line), accuracy versus tokens per problem, and the adaptive-stopping frontier.

Each `*_figure` function returns the figure; `save_figure` writes it as a PNG and releases pyplot's hold
on it (the figure can still be saved again, e.g. logged to MLflow). Every curve is named `<method>@k`, as
in the summary table and the MLflow metric `accuracy/<method>`. `curves_figure` draws one line per
distinct label: by default the method; to overlay runs, give each row a "run" key and pass
label_key=("run", "method") (or a ready "label" key).
"""

from __future__ import annotations

import textwrap

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def method_label(method: str) -> str:
    """The display name of a curve method: `maj` -> `maj@k`, `weighted_maj_top50` -> `weighted_maj_top50@k`."""
    return f"{method}@k"


def _label(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The legend label of a row: its values under `keys`, methods by their display names."""
    return " / ".join(method_label(str(row[key])) if key == "method" else str(row[key]) for key in keys)


def _lines(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[Mapping[str, Any]]]:
    """The rows grouped by legend label, each group sorted by k."""
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        lines.setdefault(_label(row, keys), []).append(row)
    return {label: sorted(line, key=lambda r: r["k"]) for label, line in lines.items()}


def curves_figure(rows: Sequence[Mapping[str, Any]], title: str, greedy: float | Mapping[str, float] | None = None,
                  label_key: str | Sequence[str] = "method") -> Figure:
    """Accuracy (%) versus k, one line per label, CIs shaded where rows have ci_low/ci_high.

    `greedy` is one accuracy (a dashed line) or one per run name (a dashed line each)."""
    keys = [label_key] if isinstance(label_key, str) else list(label_key)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, line in _lines(rows, keys).items():
        ks = [r["k"] for r in line]
        drawn = ax.plot(ks, [100 * r["accuracy"] for r in line], marker="o", label=label)
        if all("ci_low" in r and "ci_high" in r for r in line):
            low, high = [100 * r["ci_low"] for r in line], [100 * r["ci_high"] for r in line]
            ax.fill_between(ks, low, high, color=drawn[0].get_color(), alpha=0.2)
    greedy_lines = {"greedy": greedy} if isinstance(greedy, (int, float)) else dict(greedy or {})
    for name, accuracy in greedy_lines.items():
        style = {"color": "gray", "label": "greedy"} if name == "greedy" else {"label": f"greedy / {name}"}
        ax.axhline(100 * accuracy, linestyle="--", **style)
    return _labelled(fig, ax, "samples per problem (k)", title)


def tokens_figure(rows: Sequence[Mapping[str, Any]], tokens_per_sample: float, title: str,
                  greedy: Optional[tuple[float, float]] = None) -> Figure:
    """Accuracy (%) against generated tokens per problem: each method's curve at k x `tokens_per_sample`
    (the mean cost of k samples), and greedy as one point `greedy` = (tokens per problem, accuracy)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, line in _lines(rows, ["method"]).items():
        ax.plot([r["k"] * tokens_per_sample for r in line], [100 * r["accuracy"] for r in line], marker="o", label=label)
    if greedy is not None:
        ax.plot([greedy[0]], [100 * greedy[1]], marker="D", color="gray", linestyle="none", label="greedy")
    return _labelled(fig, ax, "generated tokens per problem", title)


def frontier_figure(points: Sequence[Mapping[str, Any]], maj_rows: Sequence[Mapping[str, Any]], title: str,
                    budgets: Sequence[Mapping[str, Any]] = ()) -> Figure:
    """Accuracy (%) against mean samples per problem: one point per stopping rule variant (its "rule" label,
    "samples_per_problem", "accuracy"; a rule's variants joined), the budget-fixed allocator at each budget
    ("samples_per_problem", "accuracy") and uniform maj@k on the same orders ("uniform_k", "uniform_accuracy"),
    beside the maj@k curve ("k", "accuracy")."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    line = sorted(maj_rows, key=lambda r: r["k"])
    ax.plot([r["k"] for r in line], [100 * r["accuracy"] for r in line], marker="o", color="gray",
            label=method_label("maj"))
    families: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:  # beta-0.9 and beta-0.99 are one rule's frontier
        families.setdefault(str(point["rule"]).split("-")[0], []).append(point)
    for family, mine in families.items():
        mine = sorted(mine, key=lambda p: p["samples_per_problem"])
        ax.plot([p["samples_per_problem"] for p in mine], [100 * p["accuracy"] for p in mine], marker="*",
                markersize=11, linestyle=":", label=family, zorder=3)
    if budgets:
        mine = sorted(budgets, key=lambda b: b["samples_per_problem"])
        ax.plot([b["samples_per_problem"] for b in mine], [100 * b["accuracy"] for b in mine], marker="D",
                linestyle="--", color="black", label="fixed budget, undecided first", zorder=3)
        ax.plot([b["uniform_k"] for b in mine], [100 * b["uniform_accuracy"] for b in mine], marker="x",
                markersize=9, linestyle="none", color="black", label="uniform maj@k, the same orders", zorder=3)
    return _labelled(fig, ax, "mean samples per problem", title)


def _labelled(fig: Figure, ax: Any, xlabel: str, title: str) -> Figure:
    """Label an accuracy plot on a log2 x axis."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(textwrap.fill(title, 70), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` and close it in pyplot (the Figure object stays usable)."""
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
