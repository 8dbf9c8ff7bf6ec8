"""MLflow "models from code" definition of the churn model.

MLflow executes this file when it loads the model; `set_model` at the bottom names the model object.
The model's only state is the runtime directory logged as the artifact `runtime`, read by
`ChurnRuntime.load` — the same code batch scoring and the online service use. Input: a table of the
runtime's feature columns as `winback features build` writes it (other columns, such as `customer_id`, are
dropped by MLflow's signature check); output, one row per input row in its order: churn_probability, risk_tier and (transaction models) lifecycle_stage,
value_tier, expected_spend, value_if_retained, value_at_risk, clv_12m.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ChurnPyfunc(PythonModel):
    def load_context(self, context):
        from serving.runtime.churn import ChurnRuntime

        self.runtime = ChurnRuntime.load(context.artifacts["runtime"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.runtime.score_records(frame)


mlflow.models.set_model(ChurnPyfunc())
