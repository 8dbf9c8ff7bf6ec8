"""Batch decisions: a customer table in, one recommendation per row out, chunked and written atomically.

The scores come from `UpliftRuntime.predict` (the same call the online service makes). A send or
budget cap applies to the whole batch, so with a cap the compact per-row scores of every chunk are
kept (k + 2 numbers a row) and the cap is applied once before writing. A Parquet output carries its provenance
(model, training run, catalogue, caps) in the schema metadata (`features.io.read_provenance`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError
from features.io import AtomicTableWriter, table_format
from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision import CONTROL, chosen_values, decide_with_cap
from serving.runtime.decision.personal import AFFINITY_COLUMN, FEATURED_COLUMN
from serving.runtime.uplift import UpliftPrediction, UpliftRuntime

ID_COLUMN = "customer_id"
DEFAULT_CHUNK_ROWS = 250_000


def recommendation_frame(prediction: UpliftPrediction, ids=None, decision: np.ndarray | None = None,
                         with_net_values: bool = False) -> pd.DataFrame:
    """customer_id (when ids are given), incentive, expected_net_value, uplift:<arm> [, net_value:<arm>]; with a
    personalised arm in the catalogue, featured_category and category_affinity for every customer (what that
    arm features for them, whichever incentive is chosen, so a plan can send it to anyone)."""
    decision = prediction.decision if decision is None else decision
    names = np.array([*prediction.arms, prediction.control], dtype=object)
    columns: dict[str, object] = {}
    if ids is not None:
        columns[ID_COLUMN] = np.asarray(ids).astype(str)
    columns["incentive"] = names[np.where(decision == CONTROL, len(prediction.arms), decision)]
    columns["expected_net_value"] = chosen_values(prediction.net_value, decision)
    for j, arm in enumerate(prediction.arms):
        columns[f"uplift:{arm}"] = prediction.uplift[:, j]
    if with_net_values:
        for j, arm in enumerate(prediction.arms):
            columns[f"net_value:{arm}"] = prediction.net_value[:, j]
    if prediction.featured_category is not None:
        columns[FEATURED_COLUMN] = prediction.featured_category.astype(str)
        columns[AFFINITY_COLUMN] = prediction.category_affinity
    return pd.DataFrame(columns)


def _chunks(path: Path, columns: list[str], categorical: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        missing = [c for c in columns if c not in file.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        for batch in file.iter_batches(batch_size=chunk_rows, columns=columns):
            yield batch.to_pandas()
        return
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    yield from pd.read_csv(path, usecols=columns, chunksize=chunk_rows,
                           dtype={c: "string" for c in categorical} | {columns[0]: "string"})


def provenance(runtime: UpliftRuntime, model_uri: str | None, catalog: Catalog, max_sends: int | None,
               budget: float | None) -> dict:
    """What a recommendations file was made from: the model (URI, registry name and version, training run), the
    catalogue its net values used, and the caps."""
    from mlflow.exceptions import MlflowException

    from serving.runtime.registry import registry_version

    try:
        ref = registry_version(model_uri) if model_uri else None
    except MlflowException:
        ref = None
    return {"command": "recommend", "model_uri": model_uri, "model_name": ref[0] if ref else None,
            "model_version": ref[1] if ref else None, "run_id": runtime.metadata.get("run_id"),
            "catalog": catalog.to_dict(), "max_sends": max_sends, "budget": budget}


@dataclass(frozen=True)
class RecommendSummary:
    rows: int
    sends: dict[str, int]
    total_expected_net_value: float
    total_send_cost: float
    output: Path


def recommend(runtime: UpliftRuntime, input_path: str | Path, output_path: str | Path,
              id_col: str = ID_COLUMN, catalog: Catalog | None = None, max_sends: int | None = None,
              budget: float | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              on_rows: Callable[[int], None] | None = None, with_net_values: bool = False,
              model_uri: str | None = None) -> RecommendSummary:
    """Score `input_path` chunk by chunk and write one recommendation per input row to `output_path`
    (with `with_net_values`, each arm's net value too: what `winback report` draws its budget curve from)."""
    input_path, output_path = Path(input_path), Path(output_path)
    table_format(output_path)
    if not input_path.is_file():
        raise DataError(f"{input_path}: file not found")
    cat = runtime.catalog if catalog is None else catalog.for_model(runtime.arms, runtime.control)
    features = runtime.encoder.features_
    columns = [id_col, *[f for f in features if f != id_col]]
    capped = max_sends is not None or budget is not None
    kept: list[tuple[np.ndarray, UpliftPrediction]] = []
    rows, total_net = 0, 0.0
    decisions: list[np.ndarray] = []
    with AtomicTableWriter(output_path, metadata=provenance(runtime, model_uri, cat, max_sends, budget)) as writer:
        for chunk in _chunks(input_path, columns, runtime.encoder.categorical_features, chunk_rows):
            prediction = runtime.predict(runtime.encoder.transform(chunk), cat)
            ids = chunk[id_col].to_numpy()
            rows += len(chunk)
            if capped:
                kept.append((ids, prediction))
            else:
                frame = recommendation_frame(prediction, ids, with_net_values=with_net_values)
                writer.write(frame)
                decisions.append(prediction.decision)
                total_net += float(frame["expected_net_value"].sum())
            if on_rows is not None:
                on_rows(len(chunk))
        if capped and kept:
            net = np.concatenate([p.net_value for _, p in kept])
            decision = decide_with_cap(net, cat.costs, max_sends=max_sends, budget=budget,
                                       decision=np.concatenate([p.decision for _, p in kept]))
            start = 0
            for ids, prediction in kept:
                part = decision[start:start + len(ids)]
                frame = recommendation_frame(prediction, ids, decision=part, with_net_values=with_net_values)
                writer.write(frame)
                decisions.append(part)
                total_net += float(frame["expected_net_value"].sum())
                start += len(ids)
        if rows == 0:
            raise DataError(f"{input_path}: the table is empty (no rows)")
    counts = np.bincount(np.concatenate(decisions) + 1, minlength=len(cat.arms) + 1)
    sends = {cat.control: int(counts[0]), **{a: int(counts[j + 1]) for j, a in enumerate(cat.arms)}}
    cost = float(np.sum(np.append(0.0, cat.costs) * counts))
    return RecommendSummary(rows, sends, total_net, cost, output_path)
