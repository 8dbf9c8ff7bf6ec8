"""`winback features build` and `winback segment summary` through the CLI: round trips and one-line errors."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import read_table
from winback.cli import app

runner = CliRunner()
TX_CSV = (
    "cust,when,value,channel\n"
    "007,2024-06-20,10.0,web\n"
    "007,2024-06-01,5.0,store\n"
    "8,20240101,3.0,web\n"
    "9,2024-07-01,99.0,web\n"  # after as-of: ignored
)


def build(tmp_path, tx_text=TX_CSV, name="tx.csv", output="out.csv", extra=()):
    (tmp_path / name).write_text(tx_text)
    args = ["features", "build", "--transactions", str(tmp_path / name), "--as-of", "2024-06-30",
            "--output", str(tmp_path / output), "--id-col", "cust", "--time-col", "when", "--amount-col", "value",
            *extra]  # fmt: skip
    return runner.invoke(app, args)


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
def test_build_writes_features_and_segments_round_trip(tmp_path, output):
    result = build(tmp_path, output=output)
    assert result.exit_code == 0, result.output
    assert "wrote 2 customers" in result.stdout and "1 after as-of ignored" in result.stdout
    out = read_table(tmp_path / output, dtype={"customer_id": "str"})
    assert out["customer_id"].tolist() == ["007", "8"]  # ids kept verbatim from the CSV
    assert out["recency_days"].tolist() == [10.0, 181.0] and out["spend_30d"].tolist() == [15.0, 0.0]
    assert out["top_channel"].tolist() == ["store", "web"]  # 007: one each, alphabetical tie-break
    # 007: first bought 29 days ago → new; 8: one purchase day 181 days ago (> 180) → dormant
    assert out["lifecycle_stage"].tolist() == ["new", "dormant"]
    assert list(tmp_path.glob(".*.tmp")) == []  # nothing half-written left behind


def test_build_joins_profiles_with_the_same_id_column(tmp_path):
    (tmp_path / "p.csv").write_text("cust,region\n007,north\n")
    result = build(tmp_path, extra=["--profiles", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert read_table(tmp_path / "out.csv")["region"].fillna("-").tolist() == ["north", "-"]


def test_segment_summary_prints_counts_per_stage_and_tier(tmp_path):
    build(tmp_path)
    result = runner.invoke(app, ["segment", "summary", "--features", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert "2 customers" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "dormant" in line and "low" in line]
    assert len(lines) == 1 and "50.0%" in lines[0]


@pytest.mark.parametrize(
    "tx_text, name, extra, message",
    [
        ("cust,when,price\n1,2024-01-01,3\n", "tx.csv", [], "'value'"),
        ("cust,when,value\n1,2024-01-01,3\n2,someday,4\n", "tx.csv", [], "'when' (timestamp)"),
        ("cust,when,value\n1,2024-01-01,-3\n", "tx.csv", [], "'value' (amount)"),
        ("", "tx.csv", [], "empty"),
        ("cust,when,value\n", "tx.csv", [], "empty"),
        ("cust,when,value\n1,2024-07-01,3\n", "tx.csv", [], "after as_of"),
        ("cust,when,value\n1,2024-01-01,3\n", "tx.txt", [], "unsupported file type"),
        ("cust,when,value\n1,2024-01-01,3\n", "tx.csv", ["--as-of", "30/06/2024"], "--as-of"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(tmp_path, tx_text, name, extra, message):
    result = build(tmp_path, tx_text=tx_text, name=name, extra=extra)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


def test_unknown_output_extension_is_refused_before_reading(tmp_path):
    result = build(tmp_path, output="out.xlsx")
    assert result.exit_code == 2 and "unsupported file type '.xlsx'" in result.stderr


def test_refunds_pass_with_allow_refunds(tmp_path):
    result = build(tmp_path, tx_text="cust,when,value\n1,2024-06-01,10\n1,2024-06-02,-4\n", extra=["--allow-refunds"])
    assert result.exit_code == 0, result.output
    assert read_table(tmp_path / "out.csv")["monetary_total"].tolist() == [6.0]


def test_summary_of_a_table_without_segments_names_the_column(tmp_path):
    pd.DataFrame({"customer_id": ["1"], "spend_365d": [1.0]}).to_csv(tmp_path / "f.csv", index=False)
    result = runner.invoke(app, ["segment", "summary", "--features", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and "'lifecycle_stage'" in result.stderr


def test_every_command_has_help():
    for args in (["features", "build", "--help"], ["segment", "summary", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.stdout


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
def test_outputs_get_the_mode_a_plain_open_would_give(tmp_path, output):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        assert build(tmp_path, output=output).exit_code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / output).stat().st_mode) == 0o644  # mkstemp alone would leave 0600


def test_missing_output_folder_is_an_error_unless_mkdir(tmp_path):
    result = build(tmp_path, output="no/such/dir/out.csv")
    assert result.exit_code == 2
    assert f"--output: folder {tmp_path / 'no' / 'such' / 'dir'} does not exist (create it, or pass --mkdir)" in \
        " ".join(result.stderr.split())
    assert not (tmp_path / "no").exists()
    assert build(tmp_path, output="no/such/dir/out.csv", extra=["--mkdir"]).exit_code == 0
    assert (tmp_path / "no" / "such" / "dir" / "out.csv").is_file()


@pytest.mark.parametrize("command", [["features", "build"], ["score"], ["recommend"], ["simulate"], ["serve"],
                                     ["train", "churn"], ["train", "uplift"]])
def test_flags_show_no_value_in_help_and_work_as_typed(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    flags = [line for line in result.stdout.splitlines() if any(f in line for f in ("--mkdir", "--allow-refunds",
                                                                                       "--no-access-log"))]
    assert flags and not any("<bool>" in line for line in flags)


def test_value_tier_follows_the_models_stored_rule_or_is_named_for_the_files_own(tmp_path):
    from conftest_service import feature_table, write_models

    churn, _ = write_models(tmp_path / "models", feature_table())  # stored value-tier thresholds (150, 400)
    own = build(tmp_path, output="own.csv")
    assert own.exit_code == 0, own.output
    table = read_table(tmp_path / "own.csv")
    assert "value_tier_in_file" in table.columns and "value_tier" not in table.columns
    by_model = build(tmp_path, output="model.csv", extra=["--model", str(churn)])
    assert by_model.exit_code == 0, by_model.output
    table = read_table(tmp_path / "model.csv")
    # spend_365d of 15 and 3: both under the model's mid threshold of 150 → low, as /score would say
    assert table["value_tier"].tolist() == ["low", "low"] and "value_tier_in_file" not in table.columns
    summary = runner.invoke(app, ["segment", "summary", "--features", str(tmp_path / "own.csv")])
    assert summary.exit_code == 0, summary.output
