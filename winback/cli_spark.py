"""The `--engine spark` paths of `features build`, `score` and `recommend` (thin: they call features.spark and
serving.batch.spark, which call the same pandas functions and runtimes as the default engine)."""

from __future__ import annotations

from pathlib import Path

import typer

ENGINES = ("pandas", "spark")


def engine_option():
    return typer.Option("pandas", "--engine", help="pandas (one machine) or spark (Apache Spark; output is a "
                        "Parquet directory; needs the `scale` extra).")


def master_option():
    return typer.Option(None, "--spark-master", help="Spark master URL (default local[*]; spark://…, yarn, k8s://…).")


def check_engine(engine: str) -> bool:
    from features.errors import DataError

    if engine not in ENGINES:
        raise DataError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    return engine == "spark"


def features_build(master, transactions: Path, profiles: Path | None, as_of, output: Path, id_col: str,
                   time_col: str, amount_col: str, allow_refunds: bool, segment_rule, file_tier: str,
                   categories=None, events=None) -> int:
    """`events`: a `features.spark_events.EventSource` or None."""
    from features.spark import build_features_spark, spark_session, write_parquet_dir

    spark = spark_session(master)
    frame = build_features_spark(spark, transactions, as_of, profiles, id_col, time_col, amount_col, allow_refunds,
                                 segment_rule, file_tier, categories, events)
    write_parquet_dir(frame, output)
    return spark.read.parquet(str(output)).count()


def score(master, runtime, features: Path, output: Path) -> int:
    from features.spark import read_table_spark, spark_session, write_parquet_dir
    from serving.batch.spark import score_spark

    spark = spark_session(master)
    frame = read_table_spark(spark, features, "customer_id")
    write_parquet_dir(score_spark(frame, runtime, frame.limit(50).toPandas()), output)
    return spark.read.parquet(str(output)).count()


def recommend(master, runtime, features: Path, output: Path, id_col: str, catalog) -> int:
    from features.spark import read_table_spark, spark_session, write_parquet_dir
    from serving.batch.spark import recommend_spark

    spark = spark_session(master)
    frame = read_table_spark(spark, features, id_col)
    if id_col != "customer_id":
        frame = frame.withColumnRenamed(id_col, "customer_id")
    write_parquet_dir(recommend_spark(frame, runtime, frame.limit(50).toPandas(), catalog), output)
    return spark.read.parquet(str(output)).count()
