"""Wall time of `--engine spark` (local[1], local[2]) against the pandas path, on one simulated base.

    .venv/bin/python benchmarks/spark_bench.py [--customers 1000000] [--repeats 3] [--workdir /tmp/winback-spark-bench]

Runs the commands as users run them (`winback features build / score / recommend`, each a fresh process, so
the JVM start is counted), in the same run and interleaved per repetition: pandas, then Spark local[1], then
Spark local[2]. Steps:

1. `winback simulate --customers N` (kept in the work directory and reused while N and the seed match);
2. two small models, trained once on a separate 20,000-customer simulation (the models' quality is not what
   is measured here; their size is the demo's order: one churn booster, the uplift learner's boosters);
3. per repetition and engine: `features build` (transactions + profiles), `score --features`,
   `recommend --input`, all reading the pandas `features build` output so every engine scores the same table.

Prints the machine, the command, medians and the ratio to pandas, and checks the engines agree (row counts,
the sum of churn probabilities and the incentive counts) so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

AS_OF = "2025-12-31"
ENGINES = {"pandas": [], "spark local[1]": ["--engine", "spark", "--spark-master", "local[1]"],
           "spark local[2]": ["--engine", "spark", "--spark-master", "local[2]"]}


def winback(*args, env: dict) -> float:
    """Run `winback ARGS` and return its wall time; stops the benchmark with its output when it fails."""
    exe = Path(sys.executable).with_name("winback")
    start = time.perf_counter()
    done = subprocess.run([str(exe), *map(str, args)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"winback {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def prepare(work: Path, customers: int, seed: int, env: dict) -> tuple[str, str]:
    """The simulated base (reused when it matches) and the two models' URIs."""
    marker = work / "data" / "base.json"
    wanted = {"customers": customers, "seed": seed}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        shutil.rmtree(work / "data", ignore_errors=True)
        seconds = winback("simulate", "--customers", customers, "--seed", seed, "--output-dir", work / "data",
                          "--mkdir", env=env)
        marker.write_text(json.dumps(wanted))
        print(f"# simulated {customers:,} customers in {seconds:.0f} s", flush=True)
    models = work / "models"
    if not (models / "churn.json").is_file() or not (models / "uplift.json").is_file():
        shutil.rmtree(models, ignore_errors=True)
        small = models / "data"
        winback("simulate", "--customers", 20000, "--seed", seed + 1, "--output-dir", small, "--mkdir", env=env)
        winback("train", "churn", "--transactions", small / "transactions.parquet", "--profiles",
                small / "customers.parquet", "--cutoff", AS_OF, "--horizon-days", 180, "--snapshots", 2,
                "--trials", 2, "--max-rounds", 300, "--json-out", models / "churn.json", env=env)
        winback("train", "uplift", "--campaign", small / "campaign.parquet", "--treatment-col", "incentive",
                "--control", "no_contact", "--outcome", "converted", "--transactions", small / "transactions.parquet",
                "--profiles", small / "customers.parquet", "--as-of", AS_OF, "--catalog", small / "incentives.yaml",
                "--trials", 2, "--json-out", models / "uplift.json", env=env)
    return (json.loads((models / "churn.json").read_text())["model_uri"],
            json.loads((models / "uplift.json").read_text())["model_uri"])


def run_engine(name: str, flags: list[str], work: Path, churn: str, uplift: str, env: dict) -> dict[str, float]:
    data, out = work / "data", work / "out" / name.replace(" ", "_").replace("[", "").replace("]", "")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    suffix = ".parquet" if not flags else ""  # the Spark engine writes Parquet directories
    times = {"features build": winback(
        "features", "build", *flags, "--transactions", data / "transactions.parquet", "--profiles",
        data / "customers.parquet", "--as-of", AS_OF, "--model", churn, "--output", out / f"features{suffix}", env=env)}
    table = work / "out" / "pandas" / "features.parquet"  # every engine scores the same table
    times["score"] = winback("score", *flags, "--model", churn, "--features", table,
                             "--output", out / f"scores{suffix}", env=env)
    times["recommend"] = winback("recommend", *flags, "--model", uplift, "--input", table,
                                 "--output", out / f"recommendations{suffix}", env=env)
    return times


def fingerprint(work: Path, name: str) -> dict:
    out = work / "out" / name.replace(" ", "_").replace("[", "").replace("]", "")
    suffix = ".parquet" if name == "pandas" else ""
    features = pd.read_parquet(out / f"features{suffix}", columns=["customer_id", "monetary_total"])
    scores = pd.read_parquet(out / f"scores{suffix}", columns=["churn_probability"])
    recs = pd.read_parquet(out / f"recommendations{suffix}", columns=["incentive"])
    return {"customers": len(features), "monetary_total": float(features["monetary_total"].sum()),
            "scores": len(scores), "churn_sum": float(scores["churn_probability"].sum()),
            "incentives": recs["incentive"].value_counts().sort_index().to_dict()}


def agree(a: dict, b: dict) -> bool:
    """Same counts; sums equal up to the order of addition."""
    return all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(b[k])) if isinstance(b[k], float) else a[k] == b[k] for k in b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/winback-spark-bench"))
    args = parser.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONWARNINGS": "ignore"}
    churn, uplift = prepare(work, args.customers, args.seed, env)
    transactions = len(pd.read_parquet(work / "data" / "transactions.parquet", columns=["customer_id"]))

    measured: dict[str, dict[str, list[float]]] = {name: {} for name in ENGINES}
    for repeat in range(args.repeats):
        for name, flags in ENGINES.items():
            for step, seconds in run_engine(name, flags, work, churn, uplift, env).items():
                measured[name].setdefault(step, []).append(seconds)
            print(f"# repeat {repeat + 1}, {name}: " + ", ".join(
                f"{step} {values[-1]:.1f} s" for step, values in measured[name].items()), flush=True)

    reference = fingerprint(work, "pandas")
    for name in ENGINES:
        if not agree(fingerprint(work, name), reference):
            sys.exit(f"{name} disagrees with pandas: {fingerprint(work, name)} != {reference}")

    print(f"# {' '.join(sys.argv)}")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {args.customers:,} customers, {transactions:,} transactions; "
          f"median of {args.repeats}, each command a fresh process (JVM start included for Spark)")
    print(f"{'step':<16}{'engine':<16}{'median s':>10}{'runs':>24}{'customers/s':>13}{'× pandas':>10}")
    for step in measured["pandas"]:
        base = statistics.median(measured["pandas"][step])
        for name in ENGINES:
            runs = measured[name][step]
            median = statistics.median(runs)
            print(f"{step:<16}{name:<16}{median:>10.1f}{' / '.join(f'{r:.1f}' for r in runs):>24}"
                  f"{args.customers / median:>13,.0f}{median / base:>10.2f}")
    print(f"# outputs agree: {reference['customers']:,} customers, churn probability sum {reference['churn_sum']:.6f}, "
          f"incentives {reference['incentives']}")


if __name__ == "__main__":
    main()
