"""Apache Spark engine: the same pandas functions, run per group of customers (no Spark SQL rewrite).

- `build_features_spark`: transactions (and profiles) are hashed into buckets by customer id; each bucket
  goes through `normalize_transactions` → `build_features` → `segment` with `applyInPandas` (cogrouped with
  the profiles' bucket), exactly as `winback features build` runs them on one machine. What needs every
  customer is computed first and passed to every bucket: the category affinity's reference
  (`affinity_reference_spark`: the top categories by a Spark sum of per-partition spend totals)
  and value-tier thresholds taken from the file itself (once on the driver from the value column).
- `read_table_spark` reads a Parquet file, a Parquet directory (partitioned datasets) or a CSV;
  `write_parquet_dir` writes a Parquet directory atomically (a temporary directory beside it, renamed).

pyspark (the `scale` extra) is imported here only. With pandas 3 it prints a FutureWarning on import; it is
filtered (pyspark 4 works with pandas 3, measured).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError

BUCKETS_PER_CORE = 4
SPARK_TYPES = {"b": "boolean", "i": "bigint", "u": "bigint", "f": "double", "M": "timestamp"}


def spark_session(master: str | None = None):
    """A SparkSession on `master` (default local[*]) with Arrow transfers; the pandas 3 FutureWarning of
    pyspark is filtered."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark(\.|$)")
    warnings.filterwarnings("ignore", message=".*pandas.*", category=FutureWarning)
    if (master or "local").startswith("local"):  # local workers: this interpreter (the project's environment)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError("--engine spark needs pyspark: pip install 'winback[scale]'") from None
    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master != (master or "local[*]"):
        active.stop()  # getOrCreate would hand back the session of another master
    return (SparkSession.builder.master(master or "local[*]").appName("winback")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .getOrCreate())


def read_table_spark(spark, path: str | os.PathLike, id_col: str | None = None):
    """A Parquet file or directory, or a CSV (header, types inferred, the id column kept as text)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: not found")
    if p.is_dir() or p.suffix.lower() == ".parquet":
        frame = spark.read.parquet(str(p))
    elif p.suffix.lower() == ".csv":
        frame = spark.read.option("header", True).option("inferSchema", True).csv(str(p))
        if id_col and id_col in frame.columns:
            frame = spark.read.option("header", True).schema(
                _with_string(frame.schema, id_col)).csv(str(p))
    else:
        raise DataError(f"{path}: unsupported input; use a .parquet file, a Parquet directory or a .csv")
    return frame


def _with_string(schema, column: str):
    from pyspark.sql.types import StringType, StructField, StructType

    return StructType([StructField(f.name, StringType(), True) if f.name == column else f for f in schema.fields])


def write_parquet_dir(frame, output: str | os.PathLike) -> Path:
    """Write a Spark DataFrame as a Parquet directory atomically: into a temporary directory beside
    `output`, renamed over it on success (nothing half-written is ever at `output`)."""
    target = Path(output)
    if target.suffix.lower() in (".csv",):
        raise DataError(f"--output {output}: --engine spark writes a Parquet directory (no .csv)")
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        frame.write.mode("error").parquet(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def spark_schema(frame: pd.DataFrame):
    """The Spark schema of a pandas frame as the pipeline writes it (categories and text as strings)."""
    from pyspark.sql.types import _parse_datatype_string

    fields = []
    for name, dtype in frame.dtypes.items():
        kind = getattr(dtype, "kind", "O") if not isinstance(dtype, pd.CategoricalDtype) else "O"
        fields.append(f"`{name}` {SPARK_TYPES.get(kind, 'string')}")
    return _parse_datatype_string(", ".join(fields))


def conform(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s columns in `like`'s order and Spark-writable types (categories/text → str, None for missing)."""
    out = {}
    for name, dtype in like.dtypes.items():
        col = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        if isinstance(dtype, pd.CategoricalDtype) or getattr(dtype, "kind", "O") not in SPARK_TYPES:
            out[name] = col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))
        elif dtype.kind in "iu":  # missing for a prospect without a profile: nullable
            out[name] = pd.to_numeric(col).astype("Int64" if col.isna().any() else "int64")
        elif dtype.kind == "b":
            out[name] = col.astype("boolean" if col.isna().any() else bool)
        else:
            out[name] = col.astype(dtype)
    return pd.DataFrame(out, index=frame.index)


def build_features_spark(spark, transactions: str | os.PathLike, as_of: pd.Timestamp,
                         profiles: str | os.PathLike | None = None, id_col: str = "customer_id",
                         time_col: str = "timestamp", amount_col: str = "amount", allow_refunds: bool = False,
                         segment_rule=None, file_tier_column: str = "value_tier_in_file", categories=None,
                         events=None):
    """The Spark DataFrame of `winback features build`: customer_id + features + lifecycle_stage + value tier.

    `segment_rule` = (SegmentConfig, thresholds) of a churn model, else the file's own quantiles (column
    `file_tier_column`); `categories` those of a model's affinity columns, else the file's top ones. `events`
    (`features.spark_events.EventSource`) adds the engagement features and the prospects: its types are fixed
    once over the whole file, and each bucket's events go to the bucket's `build_features` (transactions and
    events are cogrouped first; the profiles are joined to those features in a second cogroup)."""
    from pyspark.sql import functions as F

    from features.build import build_features, join_profiles
    from features.contracts import normalize_profiles, normalize_transactions
    from features.segment import SegmentConfig, segment, value_tier_thresholds

    tx = read_table_spark(spark, transactions, id_col)
    if id_col not in tx.columns:
        raise DataError(f"--transactions: column {id_col!r} not found")
    prof = read_table_spark(spark, profiles, id_col) if profiles is not None else None
    if prof is not None and id_col not in prof.columns:
        raise DataError(f"--profiles: column {id_col!r} not found")
    buckets = max(1, spark.sparkContext.defaultParallelism * BUCKETS_PER_CORE)

    def normal(tx_part: pd.DataFrame) -> pd.DataFrame:
        return normalize_transactions(tx_part, id_col=id_col, time_col=time_col, amount_col=amount_col,
                                      allow_refunds=allow_refunds)

    def bucket_of(column: str):
        return F.pmod(F.hash(F.col(column).cast("string")), F.lit(buckets))

    key = bucket_of(id_col)
    reference = affinity_reference_spark(tx, key, normal, as_of, categories) if "category" in tx.columns else None
    ev = no_events = types = None
    if events is not None:
        from features.spark_events import prepare_events_spark

        ev, no_events, types = prepare_events_spark(spark, events, as_of)
        ev = ev.withColumn("_bucket", bucket_of(events.id_col))

    def features_of(tx_part: pd.DataFrame, prof_part: pd.DataFrame | None,
                    ev_part: pd.DataFrame | None = None) -> pd.DataFrame:
        attributes = normalize_profiles(prof_part, id_col=id_col) if prof_part is not None and len(prof_part) \
            else None
        engagement = None if events is None else events.normalize(ev_part) if len(ev_part) else no_events
        purchases = normal(tx_part) if len(tx_part) else no_purchases  # a bucket of prospects only
        return build_features(purchases, as_of, attributes, events=engagement, event_types=types,
                              affinity_reference=reference)

    # the output's columns and types, from a small sample through the same code
    sample_ids = [r[0] for r in tx.select(id_col).distinct().limit(200).collect()]
    if not sample_ids:
        raise DataError(f"{transactions}: the table is empty (no rows)")
    sample_tx = tx.where(F.col(id_col).isin(sample_ids)).toPandas()
    sample_prof = prof.where(F.col(id_col).isin(sample_ids)).toPandas() if prof is not None else None
    no_purchases = normal(sample_tx).iloc[:0]
    sample_ev = ev.drop("_bucket").where(F.col(events.id_col).isin(sample_ids)).toPandas() if ev is not None \
        else None
    sample = features_of(sample_tx, sample_prof, sample_ev)
    config, thresholds = segment_rule if segment_rule is not None else (SegmentConfig(), (0.0, 0.0))
    template = segment(sample, config, thresholds=thresholds).reset_index()
    if segment_rule is None:
        template = template.rename(columns={"value_tier": file_tier_column})
    schema = spark_schema(template)

    def plain(tx_part: pd.DataFrame, prof_part: pd.DataFrame | None, ev_part=None) -> pd.DataFrame:
        tx_part = tx_part.drop(columns="_bucket")
        prof_part = None if prof_part is None else prof_part.drop(columns="_bucket")
        ev_part = None if ev_part is None else ev_part.drop(columns="_bucket")
        return features_of(tx_part, prof_part, ev_part)

    feature_template = sample.reset_index()
    feature_schema = spark_schema(feature_template)
    if ev is not None:
        engaged_template = features_of(sample_tx, None, sample_ev).reset_index().assign(_bucket=0)
        engaged = tx.withColumn("_bucket", key).groupBy("_bucket").cogroup(ev.groupBy("_bucket")).applyInPandas(
            lambda t, e: conform(plain(t, None, e).reset_index().assign(_bucket=_bucket_in(t, e)), engaged_template),
            spark_schema(engaged_template))
        if prof is None:
            built = engaged.drop("_bucket")
        else:
            def with_profiles(f: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
                if not len(f):
                    return feature_template.iloc[:0]
                frame = f.drop(columns="_bucket").set_index("customer_id")
                if len(p):
                    frame = join_profiles(frame, normalize_profiles(p.drop(columns="_bucket"), id_col=id_col))
                return conform(frame.reset_index(), feature_template)

            built = engaged.groupBy("_bucket").cogroup(  # keys of one type (bigint), else no group meets
                prof.withColumn("_bucket", key.cast("bigint")).groupBy("_bucket")) \
                .applyInPandas(with_profiles, feature_schema)
    elif prof is None:
        built = tx.withColumn("_bucket", key).groupBy("_bucket").applyInPandas(
            lambda part: conform(plain(part, None).reset_index(), feature_template), feature_schema)
    else:
        built = tx.withColumn("_bucket", key).groupBy("_bucket").cogroup(
            prof.withColumn("_bucket", key).groupBy("_bucket")).applyInPandas(
            lambda t, p: conform(plain(t, p).reset_index(), feature_template) if len(t) else
            feature_template.iloc[:0], feature_schema)
    if segment_rule is None:
        # the file's own quantiles need every customer: computed once, from the value column; the features are
        # cached first so that the write reuses them instead of building them a second time
        built = built.cache()
        values = built.select(config.value_column).toPandas()
        thresholds = value_tier_thresholds(values, config)

    def segmented(parts):
        for part in parts:
            frame = part.set_index("customer_id")
            out = segment(frame, config, thresholds=thresholds).reset_index()
            if segment_rule is None:
                out = out.rename(columns={"value_tier": file_tier_column})
            yield conform(out, template)

    return built.mapInPandas(segmented, schema)


def _bucket_in(*parts: pd.DataFrame) -> int:
    """The bucket of a cogrouped call (one side may be empty)."""
    return int(next(part["_bucket"].iloc[0] for part in parts if len(part)))


def affinity_reference_spark(tx, key, normal, as_of, categories=None):
    """`features.affinity.affinity_reference` of all customers of `tx` (raw rows; `normal` normalises a pandas
    part): without `categories`, the top ones by a Spark sum of per-partition spend totals (a small result,
    collected); the buckets' `build_features` then share it."""
    from pyspark.sql import functions as F

    from features import affinity

    if categories is None:
        def spend(parts):
            for part in parts:
                if len(part):
                    totals = affinity.category_spend(normal(part), as_of)
                    yield pd.DataFrame({"category": totals.index.astype(object), "spend": totals.to_numpy()})

        totals = tx.mapInPandas(spend, "category string, spend double").groupBy("category") \
            .agg(F.sum("spend").alias("spend")).toPandas()
        categories = affinity.top_categories(totals.set_index("category")["spend"])
    return affinity.AffinityReference(tuple(dict.fromkeys(str(c) for c in categories)))
