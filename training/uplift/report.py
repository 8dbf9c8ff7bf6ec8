"""Validation plots for the uplift model (PNG, matplotlib Agg): Qini curves, uplift by decile, policy values.

scikit-uplift's own plotting module does not import with current scikit-learn, so curves come from
`sklift.metrics.qini_curve` and the rest is drawn here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklift.metrics import qini_curve

from training.uplift.evaluate import arm_rows, quiet


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def uplift_by_decile(y: np.ndarray, uplift: np.ndarray, treatment: np.ndarray, bins: int = 10) -> np.ndarray:
    """Observed uplift (treated rate − control rate) per decile of predicted uplift, highest first.

    Deciles are cut over all rows (treated and control) ranked by predicted uplift; a decile without
    treated or control rows gives NaN.
    """
    order = np.argsort(-uplift, kind="stable")
    out = np.full(bins, np.nan)
    for b, idx in enumerate(np.array_split(order, bins)):
        t, yy = treatment[idx], y[idx]
        if t.sum() and (1 - t).sum():
            out[b] = yy[t == 1].mean() - yy[t == 0].mean()
    return out


def plot_qini(y: np.ndarray, arm: np.ndarray, uplift: np.ndarray, arms: list[str],
              qini_auc: Mapping[str, float], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4), squeeze=False)
    for j, name in enumerate(arms):
        rows, treatment = arm_rows(arm, j)
        x, q = quiet(qini_curve, y[rows], uplift[rows, j], treatment)
        ax = axes[0, j]
        ax.plot(x, q, label=f"model (Qini AUC {qini_auc[name]:.4f})")
        ax.plot([0, x[-1]], [0, q[-1]], linestyle="--", color="grey", label="random")
        ax.set_title(name)
        ax.set_xlabel("customers targeted")
        ax.set_ylabel("incremental outcomes")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_deciles(y: np.ndarray, arm: np.ndarray, uplift: np.ndarray, arms: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4), squeeze=False)
    for j, name in enumerate(arms):
        rows, treatment = arm_rows(arm, j)
        observed = uplift_by_decile(y[rows], uplift[rows, j], treatment)
        ax = axes[0, j]
        ax.bar(np.arange(1, len(observed) + 1), np.nan_to_num(observed))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel("decile of predicted uplift (1 = highest)")
        ax.set_ylabel("observed uplift")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_policy_values(policy_value: Mapping[str, float], net_policy_value: Mapping[str, float],
                       path: Path) -> Path:
    plt = _pyplot()
    names = list(policy_value)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 2))
    for ax, values, title in ((axes[0], policy_value, "expected outcome per customer"),
                              (axes[1], net_policy_value, "net value per customer vs. control")):
        ax.barh(names, [values[n] for n in names], color=["tab:orange" if n == "model" else "tab:blue"
                                                           for n in names])
        ax.invert_yaxis()
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
