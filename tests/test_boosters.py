"""Unit tests of how the runtimes call LightGBM: one thread for small calls, the single-row API for a few rows."""

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from serving.runtime import boosters
from serving.runtime.boosters import FAST_ROWS, SMALL_BATCH_ROWS, BoosterCaller, predict_threads
from test_churn_runtime import make_runtime


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    X[:, 4] = rng.integers(0, 4, 3000)  # a categorical column
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + (X[:, 4] == 2) + rng.normal(size=3000) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 15, "seed": 0, "num_threads": 1},
                        lgb.Dataset(X, y, categorical_feature=[4]), num_boost_round=40)
    return booster, X


class Spy:
    """Records the keyword arguments of every `Booster.predict` call, then calls the real method."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = lgb.Booster.predict

        def predict(booster, data, *args, **kwargs):
            self.calls.append({"rows": len(data), **kwargs})
            return real(booster, data, *args, **kwargs)

        monkeypatch.setattr(lgb.Booster, "predict", predict)


def test_small_calls_use_one_thread_and_large_batches_every_core():
    assert predict_threads(1) == predict_threads(SMALL_BATCH_ROWS) == 1
    assert predict_threads(SMALL_BATCH_ROWS + 1) == boosters.ALL_CORES == 0


def test_a_process_can_cap_the_threads_of_large_batches_as_spark_tasks_do():
    try:
        boosters.limit_batch_threads(1)
        assert predict_threads(10 * SMALL_BATCH_ROWS) == 1 and predict_threads(1) == 1
    finally:
        boosters.limit_batch_threads(0)
    assert predict_threads(10 * SMALL_BATCH_ROWS) == boosters.ALL_CORES


@pytest.mark.parametrize("rows, threads", [(FAST_ROWS + 1, 1), (SMALL_BATCH_ROWS, 1), (SMALL_BATCH_ROWS + 1, 0)])
def test_booster_is_called_with_num_threads_for_its_size(model, monkeypatch, rows, threads):
    booster, X = model
    X = np.resize(X, (rows, X.shape[1]))
    spy = Spy(monkeypatch)
    caller = BoosterCaller(booster)
    caller.predict(X)
    caller.contributions(X[:FAST_ROWS + 1])
    assert spy.calls == [{"rows": rows, "num_threads": threads},
                         {"rows": FAST_ROWS + 1, "pred_contrib": True, "num_threads": 1}]


def test_a_few_rows_go_through_the_single_row_api_with_the_same_answers(model, monkeypatch):
    booster, X = model
    expected = booster.predict(X[:FAST_ROWS])
    expected_contrib = booster.predict(X[:FAST_ROWS], pred_contrib=True)
    spy = Spy(monkeypatch)
    caller = BoosterCaller(booster)
    for n in (1, 3, FAST_ROWS):
        np.testing.assert_array_equal(caller.predict(X[:n]), expected[:n])
        np.testing.assert_array_equal(caller.contributions(X[:n]), expected_contrib[:n])
    assert spy.calls == []  # Booster.predict was never called


def test_runtime_single_customer_calls_never_use_more_than_one_thread(monkeypatch):
    runtime, frame = make_runtime()
    X = runtime.encoder.transform(frame)
    spy = Spy(monkeypatch)
    runtime.predict_proba(X[:1])
    runtime.reasons(X[:1])
    runtime.predict_proba(X[:64])
    assert spy.calls == [{"rows": 64, "num_threads": 1}]


def test_runtime_pickles_after_use_and_predicts_the_same():
    runtime, frame = make_runtime()
    X = runtime.encoder.transform(frame)
    before = runtime.predict_proba(X[:2])
    again = pickle.loads(pickle.dumps(runtime))
    np.testing.assert_array_equal(again.predict_proba(X[:2]), before)
