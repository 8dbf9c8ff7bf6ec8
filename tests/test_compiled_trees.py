"""Compiled trees (lleaves, the `fast` extra): same predictions as LightGBM for large batches, compiled once
per model and cached on disk, small calls untouched, picklable; `--compiled-trees` on score and recommend."""

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.runtime import compiled
from serving.runtime.boosters import SMALL_BATCH_ROWS, BoosterCaller
from serving.runtime.decision.catalog import Catalog, Incentive
from serving.runtime.decision import CONTROL
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime
from test_churn_runtime import make_runtime
from training.uplift.learners import fit_runtime
from winback.cli import app

needs_lleaves = pytest.mark.skipif(not compiled.available(), reason="lleaves not installed (the `fast` extra)")
TOLERANCE = 1e-9
ROWS = 3 * SMALL_BATCH_ROWS  # a large batch: the compiled path
CATALOG = Catalog("none", (Incentive("email", 0.1), Incentive("coupon", 0.5, redemption_cost=2.0)), 10.0)
LEVELS = [f"r{i:02d}" for i in range(40)]  # more than 32 levels: LightGBM's bitsets span several words


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test compiles into its own empty cache directory."""
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "lleaves"


class CompiledSpy:
    """Counts rows predicted by compiled models and by `Booster.predict`."""

    def __init__(self, monkeypatch):
        import lleaves

        self.compiled_rows, self.booster_calls = 0, []
        real_compiled, real_booster = lleaves.Model.predict, lgb.Booster.predict

        def compiled_predict(model, data, *args, **kwargs):
            self.compiled_rows += len(data)
            return real_compiled(model, data, *args, **kwargs)

        def booster_predict(booster, data, *args, **kwargs):
            self.booster_calls.append({"rows": len(data), **kwargs})
            return real_booster(booster, data, *args, **kwargs)

        monkeypatch.setattr(lleaves.Model, "predict", compiled_predict)
        monkeypatch.setattr(lgb.Booster, "predict", booster_predict)


def churn_rows(runtime, frame: pd.DataFrame, n: int = ROWS) -> np.ndarray:
    """`n` encoded rows resampled from `frame` with missing numbers, missing and unseen categories."""
    rng = np.random.default_rng(5)
    rows = frame.iloc[rng.integers(0, len(frame), n)].copy()
    rows["top_channel"] = rows["top_channel"].astype(object)
    rows.loc[rows.index[::9], "top_channel"] = None          # missing category
    rows.loc[rows.index[4::9], "top_channel"] = "kiosk"      # never seen in training
    rows.loc[rows.index[::7], "recency_days"] = np.nan       # never missing in training
    rows.loc[rows.index[::5], "overdue_ratio"] = np.nan      # missing in training too
    rows["spend_365d"] = rows["spend_365d"] * rng.uniform(0.5, 1.5, n)  # values between the training ones
    return runtime.encoder.transform(rows)


@pytest.fixture(scope="module")
def campaign():
    """A randomised 3-arm log with a 40-level categorical, missing values and an unseen level at scoring."""
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({"x": np.where(rng.random(n) < 0.15, np.nan, rng.normal(size=n)),
                          "spend": rng.gamma(2.0, 40.0, n),
                          "region": pd.Series(rng.choice(LEVELS, size=n), dtype=object)})
    frame.loc[rng.random(n) < 0.1, "region"] = None
    arm = rng.choice([CONTROL, 0, 1], size=n)
    odd = frame["region"].isin(LEVELS[1::2]).to_numpy()
    p = 0.2 + 0.2 * ((arm == 0) & (np.nan_to_num(frame.x.to_numpy()) > 0)) + 0.25 * ((arm == 1) & odd)
    y = (rng.random(n) < p).astype(int)
    encoder = FeatureEncoder().fit(frame)
    scoring = frame.iloc[rng.integers(0, n, ROWS)].reset_index(drop=True)
    scoring.loc[::11, "region"] = "r99"  # unseen
    scoring.loc[3::13, "spend"] = np.nan  # never missing in training
    return encoder, encoder.transform(frame), arm, y, encoder.transform(scoring)


def assert_close(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < TOLERANCE


@needs_lleaves
def test_churn_runtime_compiled_equals_booster_predict_and_uses_the_compiled_trees(monkeypatch):
    runtime, frame = make_runtime()
    X = churn_rows(runtime, frame)
    assert np.isnan(X).any()
    expected_raw, expected = runtime.booster.predict(X), runtime.predict_proba(X)
    runtime.compile_trees()
    spy = CompiledSpy(monkeypatch)
    assert_close(runtime.predict_raw(X), expected_raw)
    assert_close(runtime.predict_proba(X), expected)
    assert spy.compiled_rows == 2 * ROWS and spy.booster_calls == []  # both went through the compiled model
    scored = runtime.score_array(X)
    assert_close(scored["churn_probability"], expected)


@needs_lleaves
@pytest.mark.parametrize("kind", ["two_models", "solo_model"])
def test_uplift_runtime_compiled_equals_booster_predict(campaign, kind, monkeypatch):
    encoder, X_train, arm, y, X = campaign
    runtime = fit_runtime(X_train, arm, y, encoder, CATALOG, kind, {"n_estimators": 60, "num_leaves": 15}, seed=1)
    for name, booster in runtime.boosters.items():  # every booster on its own, solo models with the arm column
        data = X if booster.num_feature() == X.shape[1] else np.column_stack([X, np.resize([0.0, 1.0], len(X))])
        assert_close(BoosterCaller(booster).use_compiled().predict(data), booster.predict(data))
    expected = runtime.predict(X)
    runtime.compile_trees()
    spy = CompiledSpy(monkeypatch)
    got = runtime.predict(X)
    assert spy.compiled_rows > 0 and spy.booster_calls == []
    for field in ("uplift", "p_control", "p_arm", "net_value"):
        assert_close(getattr(got, field), getattr(expected, field))
    np.testing.assert_array_equal(got.decision, expected.decision)


@needs_lleaves
def test_compiled_once_per_model_then_loaded_from_the_cache(campaign, cache, tmp_path):
    encoder, X_train, arm, y, X = campaign
    saved = fit_runtime(X_train, arm, y, encoder, CATALOG, "two_models", {"n_estimators": 20, "num_leaves": 7},
                        seed=2).save(tmp_path / "model")
    before = dict(compiled.stats)
    first = UpliftRuntime.load(saved).compile_trees()
    n_boosters = len(first.boosters)
    assert compiled.stats["compiles"] - before["compiles"] == n_boosters
    files = sorted(cache.glob("*.o"))
    assert len(files) == n_boosters and not list(cache.glob(".*"))  # no temporary file left behind
    stamps = {f: f.stat().st_mtime_ns for f in files}

    second = UpliftRuntime.load(saved).compile_trees()  # a new process would do the same: load, no compile
    assert compiled.stats["compiles"] - before["compiles"] == n_boosters
    assert compiled.stats["cache_loads"] - before["cache_loads"] == n_boosters
    assert {f: f.stat().st_mtime_ns for f in cache.glob("*.o")} == stamps
    assert_close(second.predict(X).net_value, first.predict(X).net_value)


@needs_lleaves
def test_cache_key_follows_the_model_text_and_the_cache_dir_setting(cache, monkeypatch, tmp_path):
    runtime, _ = make_runtime()
    text = runtime.booster.model_to_string()
    assert compiled.cache_key(text) == compiled.cache_key(text) != compiled.cache_key(text + "\n")
    assert compiled.cache_path(text).parent == cache
    monkeypatch.delenv(compiled.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiled.cache_dir() == tmp_path / "xdg" / "winback" / "lleaves"


@needs_lleaves
def test_small_calls_and_contributions_keep_the_lightgbm_paths(monkeypatch):
    runtime, frame = make_runtime()
    X = churn_rows(runtime, frame, SMALL_BATCH_ROWS)
    runtime.compile_trees()
    spy = CompiledSpy(monkeypatch)
    runtime.predict_proba(X[:1])
    runtime.reasons(X[:1])
    runtime.predict_proba(X)
    runtime.contributions(X[:64])
    assert spy.compiled_rows == 0
    assert spy.booster_calls == [{"rows": SMALL_BATCH_ROWS, "num_threads": 1},
                                 {"rows": 64, "pred_contrib": True, "num_threads": 1}]


@needs_lleaves
def test_compiled_runtime_pickles_and_rebuilds_from_the_cache(monkeypatch):
    runtime, frame = make_runtime()
    X = churn_rows(runtime, frame)
    expected = runtime.compile_trees().predict_proba(X)
    compiles = compiled.stats["compiles"]
    again = pickle.loads(pickle.dumps(runtime))
    assert again._caller._compiled is None and again._caller.compiled_trees
    spy = CompiledSpy(monkeypatch)
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    assert spy.compiled_rows == ROWS and compiled.stats["compiles"] == compiles  # rebuilt from the cache


@needs_lleaves
def test_cli_recommend_and_score_with_compiled_trees_equal_the_default(campaign, tmp_path, monkeypatch):
    encoder, X_train, arm, y, _ = campaign
    model = fit_runtime(X_train, arm, y, encoder, CATALOG, "two_models", {"n_estimators": 30, "num_leaves": 7},
                        seed=4).save(tmp_path / "model")
    rng = np.random.default_rng(8)
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(ROWS)], "x": rng.normal(size=ROWS),
                              "spend": rng.gamma(2.0, 40.0, ROWS), "region": rng.choice(LEVELS + ["new"], ROWS)})
    customers.to_parquet(tmp_path / "customers.parquet")
    runner, outputs = CliRunner(), {}
    for flag in ("--no-compiled-trees", "--compiled-trees"):
        out = tmp_path / f"rec{flag}.parquet"
        result = runner.invoke(app, ["recommend", "--model", str(model), "--input", str(tmp_path / "customers.parquet"),
                                     "--output", str(out), flag])
        assert result.exit_code == 0, result.output
        outputs[flag] = pd.read_parquet(out)
    plain, fast = outputs.values()
    assert fast["incentive"].tolist() == plain["incentive"].tolist()
    for column in ("expected_net_value", "uplift:email", "uplift:coupon"):
        assert_close(fast[column], plain[column])

    churn, frame = make_runtime()
    table = frame.iloc[np.resize(np.arange(len(frame)), ROWS)].reset_index(drop=True)
    table.insert(0, "customer_id", [f"c{i}" for i in range(ROWS)])
    table.to_parquet(tmp_path / "table.parquet")
    monkeypatch.setattr("serving.runtime.churn.load_churn_runtime", lambda uri: churn)
    scores = {}
    for env in ("0", "1"):  # WINBACK_COMPILED_TREES switches it too
        monkeypatch.setenv("WINBACK_COMPILED_TREES", env)
        out = tmp_path / f"scores{env}.csv"
        result = runner.invoke(app, ["score", "--model", "runs:/x/model", "--table", str(tmp_path / "table.parquet"),
                                     "--output", str(out)])
        assert result.exit_code == 0, result.output
        scores[env] = pd.read_csv(out)
        assert churn._caller.compiled_trees == (env == "1")
    assert scores["1"]["risk_tier"].tolist() == scores["0"]["risk_tier"].tolist()
    assert_close(scores["1"]["churn_probability"], scores["0"]["churn_probability"])


@pytest.mark.parametrize("command", ["score", "recommend"])
def test_compiled_trees_without_lleaves_is_a_one_line_error(command, monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "available", lambda: False)
    args = {"score": ["score", "--model", "runs:/x/model", "--table", "t.csv", "--output", str(tmp_path / "s.csv")],
            "recommend": ["recommend", "--model", "m", "--input", "in.csv", "--output", str(tmp_path / "r.csv")]}
    result = CliRunner().invoke(app, [*args[command], "--compiled-trees"])
    assert result.exit_code == 2
    assert "lleaves, which is not installed" in result.output and "winback[fast]" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_compiled_trees_are_refused_with_the_spark_engine(tmp_path):
    result = CliRunner().invoke(app, ["recommend", "--model", "m", "--input", "in", "--output", str(tmp_path / "o"),
                                      "--engine", "spark", "--compiled-trees"])
    assert result.exit_code == 2 and "pandas engine only" in result.output


def test_a_caller_pickled_before_compiled_trees_existed_still_loads():
    runtime, _ = make_runtime()
    caller = BoosterCaller(runtime.booster)
    state = caller.__getstate__()
    del state["compiled_trees"]
    old = BoosterCaller.__new__(BoosterCaller)
    old.__setstate__(state)
    assert old.compiled_trees is False and old._compiled is None
