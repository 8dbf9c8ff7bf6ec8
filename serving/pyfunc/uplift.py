"""MLflow "models from code" definition of the uplift model.

MLflow executes this file when it loads the model; `set_model` at the bottom names the model object.
Its only state is the runtime directory logged as the artifact `runtime` (booster text files +
runtime.json), read by `UpliftRuntime.load` — the code batch scoring and the online service use.
Input: a table with the model's feature columns (others, such as `customer_id`, are dropped by MLflow's
signature check); output: one row per input row, in its order, with incentive, expected_net_value,
`uplift:<arm>` and `net_value:<arm>` columns.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class UpliftPyfunc(PythonModel):
    def load_context(self, context):
        from serving.runtime.uplift import UpliftRuntime, find_runtime_dir

        self.runtime = UpliftRuntime.load(find_runtime_dir(context.artifacts["runtime"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from serving.batch.recommend import recommendation_frame

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        prediction = self.runtime.predict_frame(frame)
        return recommendation_frame(prediction, None, with_net_values=True)


mlflow.models.set_model(UpliftPyfunc())
