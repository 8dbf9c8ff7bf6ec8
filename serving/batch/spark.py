"""Batch scoring on Apache Spark with the same runtimes as `winback score` / `recommend` and the service.

The runtime directory (boosters as text + runtime.json) travels to the executors as bytes inside the task,
is written once per executor process to a temporary directory and loaded with `ChurnRuntime.load` /
`UpliftRuntime.load`; `mapInPandas` then calls the very methods the pandas path calls on each Arrow batch.
LightGBM runs on the task's cores (`spark.task.cpus`, default 1): Spark itself runs one task per core.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd

from features.spark import conform, spark_schema

_LOADED: dict[str, object] = {}


def _pack(runtime) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = runtime.save(Path(tmp) / "runtime")
        return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _unpack(files: dict[str, bytes], kind: str):
    key = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()
    if key not in _LOADED:
        directory = Path(tempfile.mkdtemp(prefix="winback-runtime-"))
        for name, data in files.items():
            (directory / name).write_bytes(data)
        if kind == "churn":
            from serving.runtime.churn import ChurnRuntime

            _LOADED[key] = ChurnRuntime.load(directory)
        else:
            from serving.runtime.uplift import UpliftRuntime

            _LOADED[key] = UpliftRuntime.load(directory)
    return _LOADED[key]


def _score(runtime, frame: pd.DataFrame) -> pd.DataFrame:
    from serving.batch.score import score_features

    return score_features(runtime, frame)


def _recommend(runtime, frame: pd.DataFrame) -> pd.DataFrame:
    from serving.batch.recommend import recommendation_frame

    prediction = runtime.predict(runtime.encoder.transform(frame), runtime.catalog)
    return recommendation_frame(prediction, frame["customer_id"].to_numpy())


def score_spark(features, runtime, sample: pd.DataFrame):
    """Churn scores of a Spark DataFrame of features (customer_id + the model's features)."""
    return _map(features, runtime, "churn", _score, sample)


def recommend_spark(features, runtime, sample: pd.DataFrame, catalog=None):
    """Recommendations (no caps: those need the whole base) of a Spark DataFrame of features, with the
    packaged catalogue or `catalog`."""
    if catalog is not None:
        runtime.catalog = catalog.for_model(runtime.arms, runtime.control)
    return _map(features, runtime, "uplift", _recommend, sample)


def _map(features, runtime, kind: str, compute, sample: pd.DataFrame):
    from features.errors import DataError

    if "customer_id" not in features.columns:
        raise DataError("the feature table has no customer_id column")
    needed = ["customer_id", *[f for f in runtime.encoder.features_ if f != "customer_id"]]
    missing = [c for c in needed if c not in features.columns]
    if missing:
        raise DataError(f"feature column(s) {', '.join(map(repr, missing[:5]))} of the model not found")
    template = compute(runtime, sample[needed])
    schema = spark_schema(template)
    files = _pack(runtime)

    def run(parts):
        from pyspark import TaskContext

        from serving.runtime.boosters import limit_batch_threads

        context = TaskContext.get()
        limit_batch_threads(context.cpus() if context is not None else 1)  # one task per core already
        model = _unpack(files, kind)
        for part in parts:
            yield conform(compute(model, part), template)

    features = features.select(*needed)
    cores = features.sparkSession.sparkContext.defaultParallelism
    if len(features.inputFiles()) < cores:
        # a Parquet file's row group is read by one task, however many splits the file is cut into: a table
        # written by pandas (one file, often one row group) would be scored on one core
        features = features.repartition(cores)
    return features.mapInPandas(run, schema)
