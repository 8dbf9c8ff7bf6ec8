"""Personalised incentives end to end on simulated data: training learns the match, `recommend` and the online
fast path feature the same category, and a catalogue naming an unknown category is refused."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest_service import churn_runtime
from features.errors import DataError
from features.simulate import simulate, write_simulation
from serving.api import online
from serving.api.schemas import Customer
from serving.batch.recommend import recommend
from serving.runtime.decision.catalog import Catalog
from serving.runtime.uplift import UpliftRuntime
from training.uplift.data import UpliftConfig, load_campaign
from training.uplift.learners import fit_runtime
from winback.cli import app

PARAMS = {"n_estimators": 60, "num_leaves": 7, "min_child_samples": 40, "learning_rate": 0.1, "n_jobs": 1}


def config(sim_dir, catalog: Catalog) -> UpliftConfig:
    return UpliftConfig(campaign=sim_dir / "campaign.parquet", treatment_col="incentive", control="no_contact",
                        outcome="converted", catalog=catalog, catalog_path=sim_dir / "incentives.yaml", json_out=None,
                        transactions=sim_dir / "transactions.parquet", profiles=sim_dir / "customers.parquet",
                        as_of=pd.Timestamp("2025-12-31"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("personal")
    sim = simulate(customers=6000, seed=4, personalised=True)
    write_simulation(sim, root / "sim")
    catalog = Catalog.from_dict(sim.catalog)
    data = load_campaign(config(root / "sim", catalog))
    from serving.runtime.encoding import FeatureEncoder

    encoder = FeatureEncoder(data.features).fit(data.frame)
    X = data.boosters_input(encoder.transform(data.frame))
    runtime = fit_runtime(X, data.arm, data.y, encoder, catalog, "two_models", PARAMS, seed=0,
                          metadata={"personalisation": data.personalisation})
    features = data.frame[["customer_id", *data.features]]
    features.to_parquet(root / "features.parquet")
    return UpliftRuntime.load(runtime.save(root / "model")), features, root, data


def test_training_marks_the_sends_that_featured_another_category(trained):
    _, _, _, data = trained
    coupon = data.arm == 3  # category_coupon is the fourth incentive
    assert set(np.unique(data.matched[~coupon])) == {1.0}
    # 30 % of coupon sends feature a random category, 5 in 6 of those another than the customer's top one
    assert data.matched[coupon].mean() == pytest.approx(0.75, abs=0.05)
    assert data.personalisation["categories"]["grocery"] == "affinity_grocery"


def test_the_model_learned_that_a_mismatched_category_works_less(trained):
    runtime, features, _, _ = trained
    X = runtime.encoder.transform(features)
    matched = runtime.predict(X).uplift[:, 3]
    mismatched = runtime.predict(np.column_stack([X, np.zeros(len(X))])).uplift[:, 3]
    assert matched.mean() > mismatched.mean() + 0.01  # truth: a mismatch keeps 30 % of the lift


def test_featured_category_is_the_top_affinity_among_the_catalogues_categories(trained, tmp_path):
    runtime, features, root, _ = trained
    out = tmp_path / "recs.parquet"
    recommend(runtime, root / "features.parquet", out)
    recs = pd.read_parquet(out)
    assert (recs["featured_category"].to_numpy() == features["top_affinity_category"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(recs["category_affinity"],
                               features.filter(regex="^affinity_").max(axis=1).to_numpy())
    narrow = Catalog.from_dict({**runtime.catalog.to_dict(), "categories": ["toys", "home"]})
    recommend(runtime, root / "features.parquet", out, catalog=narrow)
    recs = pd.read_parquet(out)
    toys_first = features["affinity_toys"].to_numpy() >= features["affinity_home"].to_numpy()
    assert (recs["featured_category"].to_numpy() == np.where(toys_first, "toys", "home")).all()


def test_batch_and_online_feature_the_same_category_inline_and_by_id(trained, tmp_path):
    runtime, features, root, _ = trained
    recommend(runtime, root / "features.parquet", tmp_path / "recs.parquet")
    batch = pd.read_parquet(tmp_path / "recs.parquet").set_index("customer_id")
    churn = churn_runtime(features)
    snapshot = online.FeatureSnapshot.from_frame(features, [churn.encoder, runtime.encoder])
    rows = list(range(0, len(features), 97))
    records = features.drop(columns="customer_id").iloc[rows].astype(object).where(features.iloc[rows].notna(), None)
    records["top_category"] = records["top_category"].astype(str)
    records["top_affinity_category"] = records["top_affinity_category"].astype(str)
    for inline in (True, False):
        request = [Customer(customer_id=features["customer_id"].iloc[i],
                            features=records.iloc[k].to_dict() if inline else None) for k, i in enumerate(rows)]
        answers = online.recommend_rows(churn, runtime, request, snapshot)
        for answer in answers:
            b = batch.loc[answer["customer_id"]]
            assert answer["featured_category"] == b["featured_category"]
            assert answer["category_affinity"] == b["category_affinity"]
            assert answer["incentive"] == b["incentive"]
            assert math.isclose(answer["expected_net_value"], b["expected_net_value"], rel_tol=0, abs_tol=0)


def test_unknown_category_in_the_catalogue_exits_2_naming_it(trained, tmp_path):
    runtime, _, root, _ = trained
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({**runtime.catalog.to_dict(), "categories": ["toys", "garden_tools"]}))
    out = tmp_path / "recs.csv"
    result = CliRunner().invoke(app, ["recommend", "--model", str(root / "model"), "--input",
                                      str(root / "features.parquet"), "--catalog", str(catalog), "--output", str(out)])
    assert result.exit_code == 2
    assert "'garden_tools'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_training_refuses_a_catalogue_category_the_data_lacks(trained):
    _, _, root, _ = trained
    catalog = Catalog.from_dict({**yaml.safe_load((root / "sim" / "incentives.yaml").read_text()),
                                 "categories": ["garden_tools"]})
    with pytest.raises(DataError, match="'garden_tools'"):
        load_campaign(config(root / "sim", catalog))


def test_a_campaign_plan_carries_the_featured_category_to_the_simulators_answer(trained, tmp_path):
    from features.simulate.campaign import respond
    from serving.batch.plan import DEFAULT_SALT, PlanDesign, plan_campaign

    runtime, _, root, _ = trained
    recommend(runtime, root / "features.parquet", tmp_path / "recs.parquet")
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    design = PlanDesign("c2", pd.Timestamp("2026-02-01"), 0.1, 0.3, DEFAULT_SALT, 0, None, None, None)
    plan = plan_campaign(recs, design, runtime.catalog)
    assert (plan["featured_category"].to_numpy() == recs["featured_category"].to_numpy()).all()
    truth = pd.read_parquet(root / "sim" / "truth.parquet")
    answered = respond(plan, truth, seed=0)
    assert len(answered) == len(plan) and (plan["incentive"] == "category_coupon").any()
