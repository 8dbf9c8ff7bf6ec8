"""The BentoML service through its ASGI app (in process): routes, status codes, auth, model info.

Models are packaged into a temporary BentoML store (never ~/bentoml) with `serving.api.model_store`, the
code `winback package` runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pandas as pd
import pytest

from conftest_service import CATALOG, CHURN_FEATURES, CHURN_RUN_ID, UPLIFT_RUN_ID, feature_table, write_models
from serving.api import online
from serving.api.model_store import CHURN, UPLIFT, import_mlflow_model, load_runtime

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("service_asgi")]  # one app per process


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """Fixture models imported into a BentoML store under a temp dir, set as the process's store."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    root = tmp_path_factory.mktemp("service")
    home = root / "bentoml"
    (home / "models").mkdir(parents=True)
    overridden = [BentoMLContainer.bentoml_home, BentoMLContainer.model_store_dir, BentoMLContainer.model_store]
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store_dir.set(str(home / "models"))
    BentoMLContainer.model_store.set(ModelStore(home / "models"))
    table = feature_table()
    churn_dir, uplift_dir = write_models(root, table)
    tags = [import_mlflow_model(CHURN, str(churn_dir)).tag, import_mlflow_model(UPLIFT, str(uplift_dir)).tag]
    features = root / "features.parquet"
    table.to_parquet(features)
    yield {"tags": tags, "features": features, "table": table,
           "churn": load_runtime(CHURN, churn_dir), "uplift": load_runtime(UPLIFT, uplift_dir)}
    for provider in overridden:
        provider.reset()


@pytest.fixture(scope="module")
def app(packaged):
    """One ASGI app per module (its metrics register once per process); each client restarts it."""
    from serving.service import Winback

    return Winback.to_asgi()


@pytest.fixture
def client_with(app, monkeypatch):
    """`client_with(**env)`: a TestClient whose service instance starts with that environment."""
    from starlette.testclient import TestClient

    @contextlib.contextmanager
    def make(**env):
        monkeypatch.delenv("WINBACK_API_TOKEN", raising=False)
        for key in ("WINBACK_FEATURES", "WINBACK_ONLINE_STORE", "WINBACK_AS_OF", "WINBACK_PROFILES"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with TestClient(app) as client:
                yield client

    return make


def body(table, rows, **extra) -> dict:
    from test_service_online import record

    return {"customers": [{"customer_id": table["customer_id"].iloc[i], "features": record(table, i)} for i in rows],
            **extra}


def test_score_answers_what_the_runtime_computes(packaged, client_with):
    table = packaged["table"]
    with client_with() as client:
        response = client.post("/score", json=body(table, [0, 1, 2]))
    assert response.status_code == 200
    scores = response.json()["scores"]
    from test_service_online import customers

    expected = online.score_rows(packaged["churn"], customers(table, [0, 1, 2]))
    assert scores == expected
    assert [s["customer_id"] for s in scores] == ["c0", "c1", "c2"]
    assert all(len(s["reasons"]) == 3 for s in scores)


def test_recommend_with_max_sends_sends_at_most_that_many(packaged, client_with):
    with client_with() as client:
        free = client.post("/recommend", json=body(packaged["table"], range(40))).json()["recommendations"]
        capped = client.post("/recommend", json=body(packaged["table"], range(40), max_sends=1)).json()
    sends = [r for r in capped["recommendations"] if r["incentive"] != CATALOG.control]
    wanted = [r for r in free if r["incentive"] != CATALOG.control]
    assert len(sends) == 1 < len(wanted)
    # the one kept is the send worth most; the cap changes decisions, never the estimates
    assert sends[0] == max(wanted, key=lambda r: r["expected_net_value"])
    assert [r["uplift"] for r in capped["recommendations"]] == [r["uplift"] for r in free]


def test_customer_without_features_is_looked_up_in_the_snapshot(packaged, client_with):
    table = packaged["table"]
    with client_with(WINBACK_FEATURES=packaged["features"]) as client:
        by_id = client.post("/score", json={"customers": [{"customer_id": "c5"}, {"customer_id": "c9"}]})
        inline = client.post("/score", json=body(table, [5, 9]))
        unknown = client.post("/recommend", json={"customers": [{"customer_id": "c5"}, {"customer_id": "zz9"}]})
    assert by_id.status_code == 200
    assert by_id.json() == inline.json()
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "customers[1].customer_id"
    assert unknown.json()["error"].startswith("customers[1].customer_id: unknown customer 'zz9'")


def test_model_info_names_versions_run_ids_features_and_arms(packaged, client_with):
    with client_with(WINBACK_FEATURES=packaged["features"]) as client:
        info = client.get("/model-info").json()
    assert [m["bento_tag"] for m in info["models"]] == [str(t) for t in packaged["tags"]]
    assert [m["mlflow_run_id"] for m in info["models"]] == [CHURN_RUN_ID, UPLIFT_RUN_ID]
    assert info["churn_features"] == CHURN_FEATURES
    assert info["arms"] == CATALOG.arms and info["control"] == "none"
    assert info["snapshot_customers"] == 400


def _missing(features):
    return {k: v for k, v in features.items() if k != "frequency"}


BAD = {  # case → (how to break a valid one-customer body, status, the whole `error` of the answer)
    "missing feature": (lambda b: b["customers"][0].update(features=_missing(b["customers"][0]["features"])),
                        422, "customers[0].features.frequency: missing feature"),
    "text for a number": (lambda b: b["customers"][0]["features"].update(recency_days="forty"),
                          422, "customers[0].features.recency_days: expected a number, got str"),
    "negative recency": (lambda b: b["customers"][0]["features"].update(recency_days=-5),
                         422, "customers[0].features.recency_days: -5 is below 0, impossible for this feature"),
    "negative spend": (lambda b: b["customers"][0]["features"].update(spend_365d=-0.5),
                       422, "customers[0].features.spend_365d: -0.5 is below 0, impossible for this feature"),
    "object for a number": (lambda b: b["customers"][0]["features"].update(recency_days={"v": 1}), 400,
                            "customers[0].features.recency_days: expected a number, a string, a boolean or null, "
                            "got an object"),
    "list for a number": (lambda b: b["customers"][0]["features"].update(frequency=[1, 2]), 400,
                          "customers[0].features.frequency: expected a number, a string, a boolean or null, "
                          "got a list"),
    "empty list": (lambda b: b.update(customers=[]), 400,
                   "customers: List should have at least 1 item after validation, not 0"),
    "over 10,000 customers": (lambda b: b.update(customers=b["customers"] * 10_001), 400,
                              "customers: List should have at most 10000 items after validation, not 10001"),
    "unknown field": (lambda b: b["customers"][0].update(nickname="Al"), 400, "customers[0].nickname: unknown field"),
    "unknown top-level field": (lambda b: b.update(dry_run=True), 400, "dry_run: unknown field"),
    "no customer_id": (lambda b: b["customers"][0].pop("customer_id"), 400,
                       "customers[0].customer_id: required field missing"),
    "number for an id": (lambda b: b["customers"][0].update(customer_id=7), 400,
                         "customers[0].customer_id: Input should be a valid string"),
    "lookup without snapshot": (lambda b: b["customers"][0].pop("features"), 404,
                                "customers[0].features: missing, and the service has no feature snapshot to look "
                                "customer 'c0' up (start it with WINBACK_FEATURES)"),
}


@pytest.mark.parametrize("route", ["/score", "/recommend"])
def test_bad_input_is_a_4xx_naming_the_field(packaged, client_with, route):
    with client_with() as client:
        for case, (breakit, status, text) in BAD.items():
            request = body(packaged["table"], [0])
            breakit(request)
            response = client.post(route, json=request)
            assert (response.status_code, case) == (status, case)
            assert response.json()["error"] == text, case
            assert response.json()["field"] == text.split(":")[0], case
        not_json = client.post(route, content=b"{customers:", headers={"content-type": "application/json"})
        assert (not_json.status_code, not_json.json()) == (400, {"error": "body: the body is not valid JSON",
                                                                 "field": "body"})
        nan = client.post(route, content=b'{"customers": [{"customer_id": "c0", "features": {"frequency": NaN}}]}',
                          headers={"content-type": "application/json"})
        assert nan.status_code == 400
        assert nan.json()["error"] == "customers[0].features.frequency: expected a finite number or null (missing), got nan"


def test_recommend_with_a_budget_spends_at_most_it(packaged, client_with):
    with client_with() as client:
        free = client.post("/recommend", json=body(packaged["table"], range(40))).json()["recommendations"]
        capped = client.post("/recommend", json=body(packaged["table"], range(40), budget=5.0)).json()
    costs = {arm: cost for arm, cost in zip(CATALOG.arms, CATALOG.costs)}
    spent = sum(costs.get(r["incentive"], 0.0) for r in capped["recommendations"])
    assert 0 < spent <= 5.0 < sum(costs.get(r["incentive"], 0.0) for r in free)


def test_null_values_and_unseen_categories_are_answered(packaged, client_with):
    request = body(packaged["table"], [0])
    request["customers"][0]["features"].update(overdue_ratio=None, top_category="spaceships")
    with client_with() as client:
        assert client.post("/score", json=request).status_code == 200
        assert client.post("/recommend", json=request).status_code == 200


def test_token_guards_every_endpoint_but_health_checks(packaged, client_with):
    request = body(packaged["table"], [0])
    with client_with(WINBACK_API_TOKEN="s3cret") as client:
        assert client.post("/score", json=request).status_code == 401
        assert client.post("/score", json=request, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/model-info").status_code == 401
        assert client.get("/docs.json").status_code == 401
        assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
        ok = {"Authorization": "Bearer s3cret"}
        assert client.post("/recommend", json=request, headers=ok).status_code == 200
        assert client.get("/model-info", headers=ok).status_code == 200


def test_without_a_token_no_header_is_needed(packaged, client_with):
    with client_with() as client:
        assert client.post("/score", json=body(packaged["table"], [0])).status_code == 200
        assert client.get("/model-info").status_code == 200


def test_openapi_document_describes_both_endpoints_and_model_info(packaged, client_with):
    with client_with() as client:
        paths = client.get("/docs.json").json()["paths"]
    assert {"/score", "/recommend", "/model-info"} <= set(paths)
    schema = paths["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["customers"]["maxItems"] == 10_000


def test_openapi_document_lists_each_endpoints_features_bounds_and_error_statuses(packaged, client_with):
    with client_with(WINBACK_API_TOKEN="s3cret") as client:
        doc = client.get("/docs.json", headers={"Authorization": "Bearer s3cret"}).json()
    schemas = doc["components"]["schemas"]
    score_features = schemas["ScoreFeatures"]
    assert score_features["required"] == CHURN_FEATURES
    assert score_features["properties"]["recency_days"]["anyOf"][0] == {"type": "number", "minimum": 0.0}
    assert "minimum" not in str(score_features["properties"]["top_category"])
    assert set(schemas["RecommendFeatures"]["required"]) == set(CHURN_FEATURES) | {"frequency", "spend_365d"}
    for route in ("/score", "/recommend"):
        operation = doc["paths"][route]["post"]
        assert {"200", "400", "401", "404", "415", "422"} <= set(operation["responses"])
        assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
        assert operation["requestBody"]["required"] is True
        assert operation["security"] == [{"bearer": []}]
    assert schemas["ErrorBody"]["properties"]["error"]["type"] == "string"
    assert "401" in doc["paths"]["/model-info"]["get"]["responses"]


def test_unreadable_snapshot_fails_the_start_naming_the_file_and_the_fix(packaged, client_with, tmp_path):
    from serving.service import StartupError

    bad = tmp_path / "feats.parquet"
    bad.write_text("not parquet")
    with pytest.raises(StartupError, match=r"^WINBACK_FEATURES=.*feats\.parquet: cannot be used .* fix: give --features"):
        with client_with(WINBACK_FEATURES=bad):
            pass
    with pytest.raises(StartupError, match=r"^WINBACK_FEATURES=.*nowhere\.parquet: file not found; fix:"):
        with client_with(WINBACK_FEATURES=tmp_path / "nowhere.parquet"):
            pass


def test_readme_example_request_is_answered(packaged, client_with):
    import json
    from pathlib import Path

    example = json.loads((Path(__file__).resolve().parents[1] / "examples" / "score_request.json").read_text())
    with client_with() as client:
        score = client.post("/score", json=example)
        recommend = client.post("/recommend", json=example)
    assert score.status_code == 200 and recommend.status_code == 200, score.text
    assert [s["customer_id"] for s in score.json()["scores"]] == [c["customer_id"] for c in example["customers"]]


# -- the online store: POST /events and lookups by id that follow every event ----------------------------
ONLINE_AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def online_data():
    """Simulated purchases up to ONLINE_AS_OF and their batch features (the fixture models score them: their
    features are `build_features` columns)."""
    from features import build_features
    from features.simulate import simulate

    sim = simulate(customers=500, seed=8)
    tx = sim.transactions[sim.transactions["timestamp"] <= ONLINE_AS_OF].reset_index(drop=True)
    return {"tx": tx, "table": build_features(tx, ONLINE_AS_OF).reset_index()}


def records(tx: pd.DataFrame) -> list[dict]:
    out = tx.assign(timestamp=tx["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S"),
                    event_id=[f"t{i}" for i in range(len(tx))])
    return json.loads(out.to_json(orient="records"))


def inline(table: pd.DataFrame, ids: list[str]) -> dict:
    rows = table.set_index("customer_id").loc[ids, CHURN_FEATURES]
    customers = []
    for cid, row in rows.iterrows():
        features = {k: (None if isinstance(v, float) and math.isnan(v) else v if isinstance(v, float) else str(v))
                    for k, v in row.to_dict().items()}
        customers.append({"customer_id": cid, "features": features})
    return {"customers": customers}


def test_replaying_a_file_through_events_gives_the_score_of_its_batch_features(online_data, client_with, tmp_path):
    tx, table = online_data["tx"], online_data["table"]
    rows = records(tx)
    with client_with(WINBACK_ONLINE_STORE=f"sqlite:///{tmp_path / 'o.db'}", WINBACK_AS_OF=ONLINE_AS_OF) as client:
        applied = 0
        for start in range(0, len(rows), 4000):
            answer = client.post("/events", json={"transactions": rows[start:start + 4000]})
            assert answer.status_code == 200, answer.text
            applied += answer.json()["applied"]
        assert applied == len(rows)
        again = client.post("/events", json={"transactions": rows[:100]}).json()
        assert (again["applied"], again["duplicates"]) == (0, 100)
        ids = table["customer_id"].tolist()
        by_id = client.post("/score", json={"customers": [{"customer_id": c} for c in ids]})
        given = client.post("/score", json=inline(table, ids))
        assert by_id.status_code == 200 and given.status_code == 200
        a, b = by_id.json()["scores"], given.json()["scores"]
        assert [s["customer_id"] for s in a] == ids
        for x, y in zip(a, b):
            assert x["churn_probability"] == pytest.approx(y["churn_probability"], abs=1e-12)
            assert (x["risk_tier"], x["lifecycle_stage"], x["value_tier"]) == \
                   (y["risk_tier"], y["lifecycle_stage"], y["value_tier"])
            assert [r["feature"] for r in x["reasons"]] == [r["feature"] for r in y["reasons"]]
        recommend = client.post("/recommend", json={"customers": [{"customer_id": c} for c in ids[:50]]})
        assert recommend.status_code == 200
        assert recommend.json() == client.post("/recommend", json=inline(table, ids[:50])).json()


def test_an_event_changes_the_next_score_of_that_customer(online_data, client_with, tmp_path):
    tx = online_data["tx"]
    with client_with(WINBACK_ONLINE_STORE=f"sqlite:///{tmp_path / 'o.db'}", WINBACK_AS_OF=ONLINE_AS_OF) as client:
        client.post("/events", json={"transactions": records(tx)})
        last = tx.groupby("customer_id")["timestamp"].max()
        quiet = last.idxmin()  # the customer silent the longest
        before = client.post("/score", json={"customers": [{"customer_id": quiet}]}).json()["scores"][0]
        purchase = {"event_id": "fresh-1", "customer_id": quiet, "timestamp": ONLINE_AS_OF, "amount": 120.0}
        assert client.post("/events", json={"transactions": [purchase]}).json()["applied"] == 1
        after = client.post("/score", json={"customers": [{"customer_id": quiet}]}).json()["scores"][0]
        new = client.post("/events", json={"events": [{"event_id": "v1", "customer_id": "brand-new",
                                                       "timestamp": ONLINE_AS_OF, "event_type": "visit"}]})
    assert before["lifecycle_stage"] in {"dormant", "churned", "at_risk"}
    assert after["lifecycle_stage"] not in {"dormant", "churned"} and after["churn_probability"] != \
        before["churn_probability"]
    assert new.status_code == 200 and new.json()["customers"] == 1


def test_a_bad_row_is_422_naming_it_and_nothing_of_the_batch_is_applied(online_data, client_with, tmp_path):
    rows = records(online_data["tx"].iloc[:5])
    rows[3]["amount"] = "lots"
    with client_with(WINBACK_ONLINE_STORE=f"sqlite:///{tmp_path / 'o.db'}", WINBACK_AS_OF=ONLINE_AS_OF) as client:
        bad = client.post("/events", json={"transactions": rows})
        unknown = client.post("/score", json={"customers": [{"customer_id": rows[0]["customer_id"]}]})
        not_a_list = client.post("/events", json={"transactions": {"a": 1}})
        nested = client.post("/events", json={"transactions": [{"event_id": "x", "amount": [1]}]})
    assert bad.status_code == 422
    assert bad.json()["field"] == "transactions[3].amount" and "'lots'" in bad.json()["error"]
    assert unknown.status_code == 404  # the four good rows were not applied either
    assert unknown.json()["field"] == "customers[0].customer_id"
    assert not_a_list.status_code == 400 and not_a_list.json()["field"] == "transactions"
    assert nested.status_code == 400 and nested.json()["field"] == "transactions[0].amount"


def test_events_without_an_online_store_are_refused(client_with):
    with client_with() as client:
        answer = client.post("/events", json={"transactions": []})
    assert answer.status_code == 409 and "WINBACK_ONLINE_STORE" in answer.json()["error"]
