"""The monitoring report: one self-contained HTML file (inline PNGs), a table sorted by PSI and reference
vs current histograms for the most drifted features and the model's output."""

from __future__ import annotations

import html

import numpy as np

from serving.figures import png_base64
from serving.monitoring.drift import bin_shares

TOP_FEATURES = 6


def _bins(summary: dict, values) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels, reference shares and current shares over the reference's bins (missing last)."""
    reference, current = bin_shares(summary, values)
    if summary["kind"] == "numeric":
        bounds = [-np.inf, *summary["edges"], np.inf]
        labels = [f"≤{bounds[1]:.3g}"] + [f">{bounds[i]:.3g}" for i in range(1, len(bounds) - 1)]
    else:
        labels = [*summary["levels"], "other/unseen"]
    return labels + ["missing"], reference, current


def _histogram(name: str, summary: dict, values, figures: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, reference, current = _bins(summary, values)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.bar(x - 0.2, reference, 0.4, label="reference (validation rows)")
    ax.bar(x + 0.2, current, 0.4, label="current")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(f"{name}: PSI {figures['psi']:.3f} ({figures['status']})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{png_base64(fig, dpi=90)}">'


def _number(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def render(doc: dict, context: dict) -> str:
    reference, features, outputs = context["reference"], context["features"], context["outputs"]
    rows = "".join(
        f"<tr class='{f['status']}'><td>{html.escape(name)}</td><td>{_number(f['psi'])}</td><td>{_number(f['ks'])}</td>"
        f"<td>{_number(f['missing_delta'])}</td><td>{_number(f['unseen_share'])}</td><td>{f['status']}</td></tr>"
        for name, f in doc["features"].items())
    charts = [_histogram(f"output: {name}", reference["output"][name], outputs[name], f)
              for name, f in doc["output"]["details"].items()]
    charts += [_histogram(name, reference["features"][name], features[name], f)
               for name, f in list(doc["features"].items())[:TOP_FEATURES]]
    performance = ""
    if "performance" in doc:
        p = doc["performance"]
        calibration = "".join(f"<tr><td>{c['decile']}</td><td>{c['expected']:.3f}</td><td>{c['observed']:.3f}</td>"
                              f"<td>{c['n']}</td></tr>" for c in p["calibration"])
        performance = (f"<h2>Realised outcomes ({p['rows']:,} customers): {p['status']}</h2>"
                       f"<p>AUC {p['auc']:.4f} (at training {_number(p['training_auc'])}), log loss "
                       f"{p['log_loss']:.4f} (at training {_number(p['training_log_loss'])}).</p>"
                       f"<table><tr><th>decile</th><th>expected</th><th>observed</th><th>n</th></tr>{calibration}</table>")
    m = doc["model"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>winback monitoring: {doc['status']}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}tr.alert{{background:#fdd}}tr.warn{{background:#ffe9b3}}
img{{margin:4px}}</style></head><body>
<h1>Status: {doc['status']}</h1>
<p>Model {html.escape(str(m['uri']))} ({m['kind']}, version {html.escape(str(m['version']))}, run {html.escape(str(m['run_id']))}):
{doc['rows']:,} customers now against {doc['reference_rows']:,} reference rows. PSI warn at {doc['thresholds']['psi_warn']},
alert at {doc['thresholds']['psi_alert']}. Output PSI {doc['output']['psi']:.4f} ({doc['output']['status']}).</p>
{performance}
<h2>Features, most drifted first</h2>
<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>Δ missing</th><th>unseen levels</th><th>status</th></tr>{rows}</table>
<h2>Reference vs current</h2>
{''.join(charts)}
</body></html>
"""
