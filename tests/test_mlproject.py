"""The MLproject entry points as README writes them: `mlflow run . -e churn|uplift --env-manager local`.

`mlflow run` creates a run and hands it to the step through MLFLOW_RUN_ID; the step must join that run
(in the experiment given by `--experiment-name`, or Default) and leave no file in the project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlproject")]
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlproject")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    simulated = subprocess.run([str(BIN / "winback"), "simulate", "--customers", "600", "--seed", "3",
                                "--output-dir", str(root / "data")], env=env, capture_output=True, text=True,
                               timeout=300)
    assert simulated.returncode == 0, simulated.stderr[-2000:]
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    for name in ("entry-churn", "entry-uplift"):  # artifacts under the temp dir, not ./mlruns in the project
        mlflow.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    return root, env


def mlflow_run(env, entry: str, experiment: str, **params) -> subprocess.CompletedProcess:
    argv = [str(BIN / "mlflow"), "run", ".", "-e", entry, "--env-manager", "local", "--experiment-name", experiment]
    for key, value in params.items():
        argv += ["-P", f"{key}={value}"]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def untracked() -> set[str]:
    """Untracked files in the project, and the run stores MLflow would create there by default."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True).stdout
    stores = {name for name in ("mlruns", "mlartifacts", "mlflow.db") if (REPO / name).exists()}
    return {line[3:] for line in out.splitlines() if line[:2] == "??"} | stores


def test_both_entry_points_join_the_mlflow_run_and_leave_no_file(project):
    import mlflow

    root, env = project
    data = root / "data"
    before = untracked()
    churn = mlflow_run(env, "churn", "entry-churn", transactions=data / "transactions.parquet",
                       cutoff="2025-12-31", horizon_days=90, trials=1, max_rounds=30)
    assert churn.returncode == 0, churn.stderr[-3000:]
    uplift = mlflow_run(env, "uplift", "entry-uplift", campaign=data / "campaign.parquet", treatment_col="incentive",
                        control="no_contact", outcome="converted", catalog=data / "incentives.yaml",
                        transactions=data / "transactions.parquet", as_of="2025-12-31", trials=1)
    assert uplift.returncode == 0, uplift.stderr[-3000:]
    assert untracked() - before == set()  # no churn.json / uplift.json / mlruns in the project

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    for experiment, entry in (("entry-churn", "churn"), ("entry-uplift", "uplift")):
        runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`mlflow.project.entryPoint` "
                                  f"= '{entry}'")
        assert len(runs) == 1  # the step's results are in the run `mlflow run` created, not a new one
        assert runs.iloc[0]["status"] == "FINISHED"
    churn_run = mlflow.search_runs(experiment_names=["entry-churn"], filter_string="tags.`mlflow.project.entryPoint` "
                                   "= 'churn'").iloc[0]
    assert churn_run["params.horizon_days"] == "90" and churn_run["tags.winback.model"] == "churn"
