"""`winback report` end to end: files in, a real MLflow run, the page opened in a real headless Chromium (console
clean, images loaded, headline = sums of the input files, every segment row present), bad inputs → exit 2."""

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from winback.cli import app

ARMS = ["reminder_email", "discount_10"]
CATALOG = """control: no_contact
outcome_value: 40.0
incentives:
- {name: reminder_email, cost: 0.05}
- {name: discount_10, cost: 0.1, redemption_cost: 6.0}
"""


def write_inputs(directory: Path, n: int = 400, seed: int = 0) -> dict[str, Path]:
    """Scores (Parquet, with reasons) and recommendations (CSV, with net values) of the same customers, shuffled
    differently; a catalogue; a campaign evaluation as `winback campaign evaluate` writes it."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{i:05d}" for i in range(n)])
    scores = pd.DataFrame({"customer_id": ids, "churn_probability": rng.random(n),
                           "risk_tier": "low", "lifecycle_stage": rng.choice(["new", "active", "at_risk", "churned"], n),
                           "value_tier": rng.choice(["low", "mid", "high"], n),
                           "value_at_risk": rng.gamma(2.0, 20.0, n).round(2),
                           "reason_1": rng.choice(["recency_days", "frequency", "tenure_days"], n)})
    net = rng.normal(-1.0, 1.0, (n, 2))
    best = net.argmax(axis=1)
    send = net.max(axis=1) > 0
    recs = pd.DataFrame({"customer_id": ids, "incentive": np.where(send, np.array(ARMS)[best], "no_contact"),
                         "expected_net_value": np.where(send, net.max(axis=1), 0.0),
                         **{f"uplift:{a}": rng.normal(0.01, 0.03, n) for a in ARMS},
                         **{f"net_value:{a}": net[:, j] for j, a in enumerate(ARMS)}})
    paths = {"scores": directory / "scores.parquet", "recommendations": directory / "recs.csv",
             "catalog": directory / "incentives.yaml", "campaign": directory / "campaign.json"}
    scores.to_parquet(paths["scores"], index=False)
    recs.sample(frac=1, random_state=1).to_csv(paths["recommendations"], index=False)
    paths["catalog"].write_text(CATALOG)
    paths["campaign"].write_text(json.dumps({"campaign_id": "winback-2", "customers": n, "policy": {
        "incremental_value": 0.42, "ci_low": -0.05, "ci_high": 0.89, "n_model": 300, "n_holdout": 40}}))
    return paths


def run_report(tmp_path, paths, *extra):
    args = ["report", "--scores", str(paths["scores"]), "--recommendations", str(paths["recommendations"]),
            "--html-out", str(tmp_path / "report.html"), "--json-out", str(tmp_path / "report.json"), *extra]
    return CliRunner().invoke(app, args)


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.fixture
def report(tracked):
    paths = write_inputs(tracked)
    result = run_report(tracked, paths, "--catalog", str(paths["catalog"]), "--campaign-eval", str(paths["campaign"]))
    assert result.exit_code == 0, result.output
    return tracked, paths


def expected_headline(paths) -> dict:
    """The headline, computed here from the input files with pandas."""
    scores = pd.read_parquet(paths["scores"])
    recs = pd.read_csv(paths["recommendations"])
    sent = recs[recs["incentive"] != "no_contact"]
    return {"customers": len(scores), "expected_churners": scores["churn_probability"].sum(),
            "value_at_risk": scores["value_at_risk"].sum(), "sends": len(sent),
            "send_cost": sent["incentive"].map({"reminder_email": 0.05, "discount_10": 0.1}).sum(),
            "expected_net_value": sent["expected_net_value"].sum(), "campaign_return": 0.42 * 300}


def test_report_json_and_mlflow_run_hold_the_headline_of_the_input_files(report):
    tmp_path, paths = report
    doc = json.loads((tmp_path / "report.json").read_text())
    expected = expected_headline(paths)
    for key in ("customers", "expected_churners", "value_at_risk", "sends", "send_cost", "expected_net_value"):
        assert doc["headline"][key] == pytest.approx(expected[key]), key
    assert doc["headline"]["campaign"]["total_incremental_value"] == pytest.approx(expected["campaign_return"])
    assert doc["budget_curve"]["ranked"] == "every customer's best arm"
    curve = doc["budget_curve"]  # most best arms lose money: past the peak the curve falls below 0
    assert curve["break_even_budget"] is not None and curve["break_even_budget"] > curve["peak_budget"]
    assert doc["provenance"]["scores"]["sha256"] == __import__("hashlib").sha256(
        paths["scores"].read_bytes()).hexdigest()
    run = mlflow.get_run(doc["mlflow_run_id"])
    assert run.info.run_name == "report" and run.data.tags["command"] == "report"
    assert run.data.metrics["expected_net_value"] == pytest.approx(expected["expected_net_value"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(doc["mlflow_run_id"])}
    assert artifacts == {"report.html", "report.json"}


@pytest.mark.parametrize("change, message", [
    (lambda p: pd.read_csv(p["recommendations"]).head(399).to_csv(p["recommendations"], index=False),
     r"\(400 customers\) and --recommendations \(399\)"),
    (lambda p: pd.read_parquet(p["scores"]).drop(columns="churn_probability").to_parquet(p["scores"]),
     "column 'churn_probability' is missing"),
    (lambda p: p["campaign"].write_text("{broken"), "--campaign-eval"),
])
def test_bad_input_exits_2_with_the_reason(tracked, change, message):
    paths = write_inputs(tracked)
    change(paths)
    result = run_report(tracked, paths, "--campaign-eval", str(paths["campaign"]))
    assert result.exit_code == 2
    assert __import__("re").search(message, " ".join(result.output.split()))
    assert not (tracked / "report.html").exists()


def test_without_a_catalogue_the_send_cost_is_unknown(tracked):
    paths = write_inputs(tracked)
    result = run_report(tracked, paths)
    assert result.exit_code == 0, result.output
    doc = json.loads((tracked / "report.json").read_text())
    assert doc["headline"]["send_cost"] is None and doc["budget_curve"]["available"] is False
    assert "send cost unknown" in (tracked / "report.html").read_text()


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no system Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in the dev extra")
    return browser, driver


def open_in_chromium(page: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.get(page.resolve().as_uri())
    return session


def test_the_page_in_a_headless_browser_shows_the_input_files_sums(report):
    tmp_path, paths = report
    _chromium()
    session = open_in_chromium(tmp_path / "report.html")
    try:
        errors = [e for e in session.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        images = session.execute_script(
            "return Array.from(document.images).map(i => [i.id, i.complete && i.naturalWidth])")
        assert {i for i, _ in images} == {"segment-chart", "budget-chart"} and all(w > 0 for _, w in images)
        shown = session.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('#headline [data-value]'))"
            ".map(e => [e.id, Number(e.dataset.value)]))")
        for key, value in expected_headline(paths).items():
            assert shown[f"headline-{key}"] == pytest.approx(value), key
        rows = session.execute_script(
            "return Array.from(document.querySelectorAll('#segments tr.segment')).map(r => r.dataset.segment)")
        scores = pd.read_parquet(paths["scores"])
        segments = set(scores["lifecycle_stage"] + "|" + scores["value_tier"])
        assert len(rows) == len(segments) and set(rows) == segments
        assert session.execute_script("return document.querySelectorAll('#actions li').length") == len(segments)
        assert "recency_days" in session.find_element("id", "reasons").text
        session.save_screenshot(str(tmp_path / "report.png"))
    finally:
        session.quit()
