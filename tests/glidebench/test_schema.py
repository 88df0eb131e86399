"""Tests for glidebench.schema: one column list and one cell format, shared by results.md and the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from glidebench import schema
from glidebench.report import RESULT_COLUMNS as REPORT_RESULT_COLUMNS
from glidebench.report import load_run, render_report
from glidebench.runner import results

from .fixtures_report import write_run_dir


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("fid", 12.345678, "12.35"),
        ("kid_mean", 0.0123456, "0.0123"),
        ("precision", 0.5, "0.500"),
        ("clip_score", 30.0, "30.00"),
        ("wall_s", 638.74, "638.7"),
        ("images_per_s", 0.78312, "0.783"),
        ("colour_acc", 0.0816327, "0.082"),  # a column family: every *_acc has 3 decimals
        ("position_acc", 1.0, "1.000"),
        ("kid_vs_ref", -0.28749, "-0.287"),
        ("kid_vs_ref_se", 1.4493, "1.45"),
        ("n_samples", 500.0, "500"),
        ("resolution", np.int64(64), "64"),
        ("evals_per_image", 50.0, "50"),
        ("evals_per_image", 1.6, "1.6"),
        ("scale", 1.5, "1.5"),
        ("n_reference", 554.0, "554"),  # beyond the contract: printed as it is
        ("within_tol", np.True_, "True"),
        ("within_tol", False, "False"),
        ("cfg_interval", "74-528", "74-528"),  # text in a column beyond the contract
        ("steps", "quad20", "quad20"),
        ("setting_id", "cfg-1", "cfg-1"),
    ],
)
def test_format_value(column, value, text):
    assert schema.format_value(column, value) == text


@pytest.mark.parametrize("value", [None, math.nan, np.float64("nan"), ""])
def test_a_missing_value_is_one_marker_in_numeric_columns_and_empty_in_text_columns(value):
    assert schema.format_value("fid", value) == schema.MISSING
    assert schema.format_value("colour_acc", value) == schema.MISSING
    assert schema.format_value("sampler", value) == ""
    assert schema.format_value("run", value) == ""


def test_decimals_lookup():
    assert schema.decimals("kid_std") == 4
    assert schema.decimals("shape_acc") == 3 and schema.decimals("clip_vs_ref") == 3
    assert schema.decimals("scale") is None and schema.decimals("n_samples") is None


def test_column_lists_are_consistent():
    assert set(schema.TEXT_COLUMNS) | set(schema.NUMERIC_COLUMNS) == set(schema.RESULT_COLUMNS)
    assert not set(schema.TEXT_COLUMNS) & set(schema.NUMERIC_COLUMNS)
    assert set(schema.METRIC_COLUMNS) <= set(schema.NUMERIC_COLUMNS)
    assert set(schema.REQUIRED_COLUMNS) <= set(schema.RESULT_COLUMNS)
    assert set(schema.INTEGER_COLUMNS) <= set(schema.NUMERIC_COLUMNS)
    # the writer and the report name the very same contract
    assert results.RESULT_COLUMNS is schema.RESULT_COLUMNS is REPORT_RESULT_COLUMNS
    assert results.METRIC_COLUMNS is schema.METRIC_COLUMNS
    assert results.TABLE_COLUMNS == schema.RESULTS_MD_COLUMNS


ROWS = [
    {"setting_id": "cfg-1", "model": "m", "guidance": "cfg", "scale": 1.0, "sampler": "ddim", "steps": "25",
     "resolution": 32, "n_samples": 500, "evals_per_image": 50.0, "fid": 40.6789, "kid_mean": 0.012612,
     "kid_std": 0.0001, "is_mean": math.nan, "is_std": math.nan, "precision": 0.392, "recall": 0.778,
     "clip_score": 61.7912, "clip_score_clamped": 61.98, "wall_s": 638.74, "images_per_s": 0.78312,
     "warnings": "IS not computed", "colour_acc": 0.526, "position_acc": math.nan},
    {"setting_id": "none", "model": "m", "guidance": "none", "scale": math.nan, "sampler": "ddim",
     "steps": "25", "resolution": 32, "n_samples": 500, "evals_per_image": 25.0, "fid": 44.0, "kid_mean": 0.02,
     "kid_std": 0.0002, "is_mean": math.nan, "is_std": math.nan, "precision": 0.3, "recall": 0.7,
     "clip_score": 50.0, "clip_score_clamped": 50.0, "wall_s": 300.0, "images_per_s": 1.6667,
     "warnings": "IS not computed", "colour_acc": 0.4, "position_acc": math.nan},
]  # fmt: skip


def test_results_files_keep_unrounded_numbers_and_results_md_uses_the_schema(tmp_path):
    df = results.write_results(tmp_path, ROWS)
    csv_text = (tmp_path / "results.csv").read_text()
    header, first = csv_text.splitlines()[:2]
    assert header.split(",") == [*schema.RESULT_COLUMNS, "colour_acc", "position_acc"]
    # NaN is an empty cell, numbers are unrounded
    assert first == (
        "cfg-1,m,cfg,1.0,ddim,25,32,500,50.0,40.6789,0.012612,0.0001,,,0.392,0.778,61.7912,61.98,,,638.74,"
        "0.78312,IS not computed,0.526,"
    )
    md = results.write_markdown(tmp_path, df, ["# header"]).read_text()
    lines = md.splitlines()
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    assert head == [c for c in schema.RESULTS_MD_COLUMNS if c in df.columns]
    row = dict(zip(head, (c.strip() for c in lines[4].strip("|").split("|"))))
    assert row == {c: schema.format_value(c, ROWS[0][c]) for c in head}
    assert row["is_mean"] == schema.MISSING == row["position_acc"]
    assert (row["fid"], row["kid_mean"], row["evals_per_image"], row["images_per_s"]) == (
        "40.68", "0.0126", "50", "0.783",
    )  # fmt: skip
    assert "- IS not computed" in md


def test_results_md_and_report_print_the_same_cells(tmp_path):
    """One run printed by results.md's writer and by the report: the same text in every cell."""
    run = write_run_dir(tmp_path, "run", kinds=("cfg",), scales=(1.0, 2.0), unguided=True, n_images=1)
    df = pd.read_csv(run / "results.csv")
    df.loc[0, "is_mean"] = math.nan  # a metric not measured for one setting
    df["colour_acc"] = [0.0816327, 1.0, 0.5][: len(df)]
    df.to_csv(run / "results.csv", index=False)
    render_report([run], tmp_path / "out")
    report_md = (tmp_path / "out" / "report.md").read_text()
    lines = report_md.split("## Results", 1)[1].split("## Plots", 1)[0].splitlines()
    table = [line.replace("\\", "") for line in lines if line.startswith("|")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert {"scale", "is_mean", "colour_acc", "images_per_s"} <= set(head)
    ours = results.markdown_table(load_run(run).results, head).splitlines()
    assert ours[0] == table[0] and ours[2:] == table[2:]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]]
    first = next(r for r in rows if r["setting_id"] == df.loc[0, "setting_id"])
    assert first["is_mean"] == schema.MISSING and first["colour_acc"] == "0.082"
    assert all(r["is_mean"] != schema.MISSING for r in rows if r is not first)
    assert f"{schema.MISSING} marks a metric not measured" in report_md
