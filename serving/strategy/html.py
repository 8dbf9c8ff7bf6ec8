"""The retention strategy page: one self-contained HTML file (inline CSS, PNG charts as data URIs, no script)
that reads on a laptop and prints on A4. Figures the browser test checks carry ids and `data-value`."""

from __future__ import annotations

import html

import numpy as np

from serving.figures import png_base64
from serving.strategy.tables import segment_name

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222;line-height:1.35}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{border:1px solid #ccc;border-radius:4px;padding:.4em .8em;min-width:10em}
.card .label{font-size:.8em;color:#555}.card .figure{font-size:1.3em;font-weight:600}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td:first-child,th:first-child,td.text{text-align:left}tr.total{font-weight:600;background:#f3f3f3}
td code{word-break:break-all}.neg{color:#a00}.note{color:#555;font-size:.9em}img{max-width:100%;height:auto}code{font-size:.9em}
@page{size:A4;margin:12mm}
@media print{body{margin:0;max-width:none;font-size:9.5pt}section{break-inside:avoid}h2{break-after:avoid}
.card{border-color:#888}a{color:inherit;text-decoration:none}}
"""


def _money(x) -> str:
    return "unknown" if x is None else f"{x:,.2f}"


def _signed(x) -> str:
    return "unknown" if x is None else f"{x:+,.2f}"


def _figure(key: str, label: str, value, shown: str) -> str:
    data = "" if value is None else f' data-value="{value!r}"'
    return (f'<div class="card"><div class="label">{html.escape(label)}</div>'
            f'<div class="figure" id="headline-{key}"{data}>{html.escape(shown)}</div></div>')


def _png(fig) -> str:
    return png_base64(fig, dpi=100)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_chart(curve: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.plot(curve["cost"], curve["net_value"], lw=1.8, label="expected net value")
    ax.axhline(0, color="#888", lw=.8)
    ax.scatter([curve["chosen_budget"]], [curve["chosen_net_value"]], color="C3", zorder=3,
               label=f"plan: budget {curve['chosen_budget']:,.2f}")
    ax.scatter([curve["peak_budget"]], [curve["peak_net_value"]], color="C2", marker="^", zorder=3,
               label=f"peak: budget {curve['peak_budget']:,.2f}")
    if curve["break_even_budget"] is not None:
        ax.axvline(curve["break_even_budget"], color="C1", ls="--", lw=1,
                   label=f"break-even: budget {curve['break_even_budget']:,.2f}")
    ax.set_xlabel("send budget (cumulative send cost)")
    ax.set_ylabel("expected net value")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def segment_chart(segments: list[dict]) -> str:
    plt = _pyplot()
    names = [segment_name(s["lifecycle_stage"], s["value_tier"]) for s in segments][::-1]
    y = np.arange(len(names))
    fig, (risk, net) = plt.subplots(1, 2, sharey=True, figsize=(8.5, 0.25 * len(names) + 1.3))
    risk.barh(y, [s["value_at_risk"] for s in segments][::-1], color="C0")
    risk.set_title("value at risk", fontsize=9)
    values = [s["expected_net_value"] for s in segments][::-1]
    net.barh(y, values, color=["C2" if v >= 0 else "C3" for v in values])
    net.axvline(0, color="#888", lw=.8)
    net.set_title("expected net value of the plan", fontsize=9)
    risk.set_yticks(y, names, fontsize=8)
    for ax in (risk, net):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return _png(fig)


def _image(alt: str, data: str, key: str) -> str:
    return f'<img id="{key}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _headline(doc: dict) -> str:
    h = doc["headline"]
    cards = [_figure("customers", "customers scored", h["customers"], f"{h['customers']:,}"),
             _figure("expected_churners", "expected churners over the horizon", h["expected_churners"],
                     f"{h['expected_churners']:,.1f}"),
             _figure("value_at_risk", "total value at risk", h["value_at_risk"], _money(h["value_at_risk"])),
             _figure("sends", "recommended sends", h["sends"], f"{h['sends']:,}"),
             _figure("send_cost", "their send cost", h["send_cost"], _money(h["send_cost"])),
             _figure("expected_net_value", "expected net value of the plan", h["expected_net_value"],
                     _signed(h["expected_net_value"]))]
    c = h.get("campaign")
    if c is not None:
        if c["incremental_value_per_customer"] is None:
            shown = "not measurable (no holdout)"
            cards.append(_figure("campaign_return", f"last campaign {c['campaign_id']}", None, shown))
        else:
            shown = (f"{c['total_incremental_value']:+,.2f} (95 % CI {c['total_ci_low']:+,.2f} to "
                     f"{c['total_ci_high']:+,.2f})")
            cards.append(_figure("campaign_return", f"last campaign {c['campaign_id']} really returned "
                                 f"({c['n_model']:,} customers vs {c['n_holdout']:,} held out)",
                                 c["total_incremental_value"], shown))
    mix = ", ".join(f"{k} {v:,}" for k, v in h["sends_by_incentive"].items()) or "none"
    cost = ("send costs from " + doc["cost_source"]) if doc["cost_source"] else "send cost unknown (no catalogue)"
    return (f'<section id="headline"><div class="cards">{"".join(cards)}</div><p class="note">Sends: {mix}; '
            f'{h["do_not_disturb"]:,} customers do not disturb; {html.escape(cost)}.</p></section>')


def _mix(row: dict, doc: dict) -> str:
    parts = [(row[f"share:{a}"], a) for a in [*doc["arms"], doc["control"]] if row[f"share:{a}"] > 0]
    return ", ".join(f"{html.escape(a)}&nbsp;{100 * s:.0f}&nbsp;%" for s, a in sorted(parts, reverse=True))


def _segments(doc: dict) -> str:
    head = ("<tr><th>segment</th><th>customers</th><th>mean churn probability</th><th>expected churners</th>"
            "<th>value at risk</th><th>sends</th><th>send cost</th><th>incentive mix</th><th>expected net value</th>"
            "<th>do not disturb</th></tr>")
    rows = []
    for s in doc["segments"]:
        key = html.escape(f"{s['lifecycle_stage']}|{s['value_tier']}")
        rows.append(f'<tr class="segment" data-segment="{key}"><td>{html.escape(segment_name(s["lifecycle_stage"], s["value_tier"]))}</td>'
                    f"<td>{s['customers']:,}</td><td>{s['mean_churn_probability']:.3f}</td>"
                    f"<td>{s['expected_churners']:,.1f}</td><td>{_money(s['value_at_risk'])}</td><td>{s['sends']:,}</td>"
                    f"<td>{_money(s['send_cost'])}</td><td class='text'>{_mix(s, doc)}</td>"
                    f"<td>{_signed(s['expected_net_value'])}</td><td>{s['do_not_disturb']:,}</td></tr>")
    h = doc["headline"]
    rows.append(f"<tr class='total'><td>all customers</td><td>{h['customers']:,}</td><td>{h['mean_churn_probability']:.3f}</td>"
                f"<td>{h['expected_churners']:,.1f}</td><td>{_money(h['value_at_risk'])}</td><td>{h['sends']:,}</td>"
                f"<td>{_money(h['send_cost'])}</td><td></td><td>{_signed(h['expected_net_value'])}</td>"
                f"<td>{h['do_not_disturb']:,}</td></tr>")
    chart = _image("value at risk and expected net value by segment", segment_chart(doc["segments"]), "segment-chart")
    return (f'<section id="segments"><h2>Segments: lifecycle stage × value tier, largest value at risk first</h2>'
            f"<table>{head}{''.join(rows)}</table><p>{chart}</p></section>")


def _actions(doc: dict) -> str:
    items = "".join(f'<li data-segment="{html.escape(a["lifecycle_stage"])}|{html.escape(a["value_tier"])}" '
                    f'data-action="{a["action"]}">{html.escape(a["line"])}</li>' for a in doc["actions"])
    return f'<section id="actions"><h2>What to do per segment</h2><ul>{items}</ul></section>'


def _curve(doc: dict) -> str:
    c = doc["budget_curve"]
    if not c["available"]:
        return f'<section id="budget"><h2>Budget curve</h2><p class="note">{html.escape(c["reason"])}</p></section>'
    even = (f"no break-even: even every candidate sent keeps {c['total_net_value']:+,.2f} (at a budget of "
            f"{c['total_budget']:,.2f}), though each send past the peak loses money" if c["break_even_budget"] is None
            else f"past the peak each send loses money, and at a budget of {c['break_even_budget']:,.2f} the plan "
                 f"breaks even")
    text = (f"Ranked: {html.escape(c['ranked'])} ({c['candidates']:,}), best net value per unit of cost first. The plan "
            f"spends {c['chosen_budget']:,.2f} for {c['chosen_net_value']:+,.2f}; the curve peaks at a budget of "
            f"{c['peak_budget']:,.2f} ({c['peak_net_value']:+,.2f}); {even}.")
    return (f'<section id="budget"><h2>Budget curve</h2><p id="budget-summary" data-break-even="{c["break_even_budget"]}">'
            f'{text}</p>{_image("expected net value against send budget", curve_chart(c), "budget-chart")}</section>')


def _reasons(doc: dict, descriptions: dict) -> str:
    r = doc["reasons"]
    if not r["available"]:
        return f'<section id="reasons"><h2>Why customers leave</h2><p class="note">{html.escape(r["note"])}</p></section>'
    rows = "".join(
        f"<tr><td>{html.escape(segment_name(x['lifecycle_stage'], x['value_tier']))}</td><td>{x['rank']}</td>"
        f"<td class='text'><code>{html.escape(x['reason'])}</code> {html.escape(descriptions.get(x['reason'], ''))}</td>"
        f"<td>{x['customers']:,}</td><td>{100 * x['share']:.0f} %</td></tr>" for x in r["rows"])
    return ('<section id="reasons"><h2>Why customers leave</h2><p class="note">The feature raising each customer\'s '
            'churn risk most (TreeSHAP, <code>reason_1</code>), most frequent first, as a share of the segment.</p>'
            f"<table><tr><th>segment</th><th>#</th><th>top reason</th><th>customers</th><th>share</th></tr>{rows}</table>"
            "</section>")


def _model(written_by: dict) -> str:
    """'models:/name@alias name vN', or 'not recorded' (a CSV file, or one written before provenance existed)."""
    uri, name = written_by.get("model_uri"), written_by.get("model_name")
    parts = [str(uri) if uri else "", f"{name} v{written_by.get('model_version')}" if name else ""]
    return " ".join(p for p in parts if p) or "not recorded"


def _provenance(doc: dict) -> str:
    rows = []
    for role, p in doc["provenance"].items():
        if p is None:
            continue
        w = p.get("written_by") or {}
        count = "" if p["rows"] is None else f"{p['rows']:,}"
        cells = [html.escape(p["path"]), f"<code>{p['sha256']}</code>", html.escape(_model(w)),
                 html.escape(str(w.get("run_id") or "")), html.escape(str(w.get("as_of") or ""))]
        rows.append(f"<tr><td>{html.escape(role)}</td><td class='text'>{cells[0]}</td><td class='text'>{cells[1]}</td>"
                    f"<td>{count}</td>" + "".join(f"<td class='text'>{c}</td>" for c in cells[2:]) + "</tr>")
    return ('<section id="provenance"><h2>Data and model provenance</h2><table><tr><th>input</th><th>file</th>'
            '<th>sha256</th><th>rows</th><th>model</th><th>training run</th><th>as of</th></tr>'
            f"{''.join(rows)}</table></section>")


def render(doc: dict) -> str:
    from features.build import FEATURE_DESCRIPTIONS

    as_of = (doc["provenance"].get("scores") or {}).get("written_by") or {}
    when = f" as of {as_of['as_of']}" if as_of.get("as_of") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>winback retention strategy{html.escape(when)}</title><style>{CSS}</style></head><body>
<h1>Retention strategy{html.escape(when)}</h1>
<p class="note">Segment → analyse → personalise → implement → evaluate: who is slipping away, what it is worth, what
to send to whom, and what it costs and returns. All figures are expectations from the models unless marked measured.</p>
{_headline(doc)}
{_segments(doc)}
{_actions(doc)}
{_curve(doc)}
{_reasons(doc, FEATURE_DESCRIPTIONS)}
{_provenance(doc)}
</body></html>
"""
