"""Scaling-curve plots: accuracy versus k on a log2 axis, with shaded 95% intervals and a greedy line.

`plot_curves` draws one line per distinct label of the rows: by default the method; to overlay
runs, give each row a "run" key and pass label_key=("run", "method") (or "run" for one method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def method_label(method: str) -> str:
    """A method's display name: weighted_maj -> 'weighted maj@k'."""
    return method.replace("_", " ") + "@k"


def _label(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The legend label of a row: its values under `keys`, a method by its display name."""
    return " / ".join(method_label(str(row[key])) if key == "method" else str(row[key]) for key in keys)


def plot_curves(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str,
    greedy: float | Mapping[str, float] | None = None,
    label_key: str | Sequence[str] = "method",
) -> Path:
    """Plot accuracy (%) versus k, one line per label, CIs shaded where rows have ci_low/ci_high.

    `greedy` is one accuracy (a dashed line) or one per run name (a dashed line each)."""
    keys = [label_key] if isinstance(label_key, str) else list(label_key)
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        lines.setdefault(_label(row, keys), []).append(row)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, line in lines.items():
        line = sorted(line, key=lambda r: r["k"])
        ks = [r["k"] for r in line]
        drawn = ax.plot(ks, [100 * r["accuracy"] for r in line], marker="o", label=label)
        if all("ci_low" in r and "ci_high" in r for r in line):
            low, high = [100 * r["ci_low"] for r in line], [100 * r["ci_high"] for r in line]
            ax.fill_between(ks, low, high, color=drawn[0].get_color(), alpha=0.2)
    greedy_lines = {"greedy": greedy} if isinstance(greedy, (int, float)) else dict(greedy or {})
    for name, accuracy in greedy_lines.items():
        style = {"color": "gray", "label": "greedy"} if name == "greedy" else {"label": f"greedy / {name}"}
        ax.axhline(100 * accuracy, linestyle="--", **style)

    return _save(fig, ax, "samples per problem (k)", title, path)


def plot_frontier(points: Sequence[Mapping[str, Any]], maj_rows: Sequence[Mapping[str, Any]], path: str | Path,
                  title: str) -> Path:
    """Accuracy (%) against mean samples per problem: one point per stopping rule variant (its "rule" label,
    "samples_per_problem", "accuracy"; a rule's variants joined), beside the maj@k curve ("k", "accuracy")."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    line = sorted(maj_rows, key=lambda r: r["k"])
    ax.plot([r["k"] for r in line], [100 * r["accuracy"] for r in line], marker="o", color="gray", label="maj@k")
    families: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:  # beta-0.9 and beta-0.99 are one rule's frontier
        families.setdefault(str(point["rule"]).split("-")[0], []).append(point)
    for family, mine in families.items():
        mine = sorted(mine, key=lambda p: p["samples_per_problem"])
        ax.plot([p["samples_per_problem"] for p in mine], [100 * p["accuracy"] for p in mine], marker="*",
                markersize=11, linestyle=":", label=family, zorder=3)
    return _save(fig, ax, "mean samples per problem", title, path)


def _save(fig: Any, ax: Any, xlabel: str, title: str, path: str | Path) -> Path:
    """Label an accuracy plot on a log2 x axis, save it as a PNG at `path` and close it."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
