"""Dependencies point one way: features → training → serving runtime (serving never imports training)."""

import json
import subprocess
import sys

import pytest

MODULES = {
    "features": ["features", "features.io", "features.contracts", "features.build", "features.segment",
                 "features.loaders", "features.simulate"],
    "serving": ["serving.runtime.encoding", "serving.runtime.churn", "serving.runtime.uplift", "serving.runtime.decision",
                "serving.runtime.decision.catalog", "serving.batch.score", "serving.batch.recommend", "serving.api.online",
                "serving.api.schemas", "serving.api.model_store", "serving.service", "serving.runtime.registry",
                "serving.batch.plan", "serving.monitoring.drift", "serving.monitoring.report",
                "serving.api.metrics", "serving.runtime.boosters", "serving.runtime.compiled"],
}
# lleaves / llvmlite: imported only once compiled trees are asked for, never by importing serving
FORBIDDEN = {"features": ["mlflow", "bentoml", "training", "serving", "optuna"],
             "serving": ["training", "optuna", "lleaves", "llvmlite"]}


def _imported_after(module: str) -> set[str]:
    code = (f"import importlib, sys, json\n"
            f"importlib.import_module({module!r})\n"
            f"print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("package,module", [(p, m) for p, mods in MODULES.items() for m in mods])
def test_package_never_imports_a_later_stage(package, module):
    loaded = _imported_after(module)
    assert not loaded & set(FORBIDDEN[package]), f"{module} pulls in {sorted(loaded & set(FORBIDDEN[package]))}"
