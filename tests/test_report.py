"""Tables and figures from a results folder, checked against pandas on the raw summaries."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scabench.bench.config import parse_grid
from scabench.bench.grid import expand
from scabench.bench.runner import prepare
from scabench.reports import loading, statistics, tables
from scabench.results import atomic_write_json

METRICS = ["AP", "AP50", "AP65", "AP75", "AP80", "AP90", "APs", "APm", "APl"]

ABLATION = """\
name: abl
detectors: [{name: yolov3-tiny, width: 0.25}]
train: {epochs: 3, img_size: 64}
losses: [iou, giou, {name: sca, alpha: 0.5}]
axes: {obj_target: [iou, loss]}
seeds: [0, 1, 2]
"""


def make_results(tmp_path: Path, text: str = ABLATION, *, values=None, unfinished: int = 0, epochs: int = 3) -> Path:
    """A results folder as `scabench run` leaves it, with summaries from ``values(cell) -> dict``."""
    grid = parse_grid(text, tmp_path / "grid.yaml", check_trainer=False)
    cells = expand(grid)
    out = tmp_path / "results"
    folder = prepare(cells, out, grid)
    rng = np.random.default_rng(0)
    for i, cell in enumerate(cells):
        path = folder.cell(cell.id).path
        metrics = values(cell) if values else {m: float(rng.uniform(0.1, 0.6)) for m in METRICS}
        lines = [json.dumps({"epoch": e, "AP": metrics["AP"] * e / epochs, "loss_box": 1 / e}) for e in range(1, epochs + 1)]
        if i == 0:  # a resumed epoch written twice (the last wins) and a torn last line
            lines.insert(1, json.dumps({"epoch": 1, "AP": -1.0}))
            lines[1], lines[0] = lines[0], lines[1]
            lines.append('{"epoch": 4, "AP"')
        (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        if i >= len(cells) - unfinished:
            atomic_write_json(path / "record.json", {"status": "failed", "reason": "NonFiniteLossError: nan at epoch 2"})
            continue
        # as the trainer writes it: the last epoch's row (epoch, losses, lr) with the final APs
        final = {"epoch": epochs, "loss_box": 0.05, "lr": 0.001, **metrics}
        atomic_write_json(path / "summary.json", {"metrics": final, "epochs": epochs})
    return out


def raw_frame(out: Path) -> pd.DataFrame:
    """The pandas computation the report must agree with: straight from the files."""
    rows = []
    for path in sorted((out / "cells").iterdir()):
        summary_path = path / "summary.json"
        if not summary_path.exists():
            continue
        meta = json.loads((path / "config.json").read_text())
        summary = json.loads(summary_path.read_text())
        rows.append({
            "loss": meta["labels"]["loss"],
            "obj_target": meta["labels"]["axes"].get("obj_target"),
            "seed": meta["config"]["seed"],
            **{m: v * 100 for m, v in summary["metrics"].items() if m in METRICS},
        })
    return pd.DataFrame(rows)


def test_report_numbers_equal_pandas_on_the_raw_summaries(tmp_path):
    out = make_results(tmp_path, unfinished=1)
    raw = raw_frame(out)
    assert len(raw) == 17
    csv = pd.read_csv(io.StringIO(tables.report(out, fmt="csv", metrics=METRICS)), keep_default_na=False, na_values=[""])
    expected = raw.groupby(["obj_target", "loss"]).agg(["mean", "std", "count"])
    assert len(csv) == 6 * len(METRICS)
    for _, row in csv.iterrows():
        key = (row["obj_target"], row["loss"])
        assert row["detector"] == "yolov3-tiny (w=0.25)"
        assert math.isclose(row["mean"], expected.loc[key, (row["metric"], "mean")], rel_tol=1e-12)
        assert math.isclose(row["std"], expected.loc[key, (row["metric"], "std")], rel_tol=1e-9)
        assert row["n"] == expected.loc[key, (row["metric"], "count")]
        base = expected.loc[(row["obj_target"], "iou"), (row["metric"], "mean")]
        assert math.isclose(row["rel_change_pct"], (row["mean"] - base) / base * 100, rel_tol=1e-9, abs_tol=1e-9)
        if row["loss"] != "iou":
            wide = raw[raw["obj_target"] == row["obj_target"]].pivot(index="seed", columns="loss", values=row["metric"])
            diffs = (wide[row["loss"]] - wide["iou"]).dropna()
            assert row["n_paired"] == len(diffs)
            assert math.isclose(row["diff_mean"], diffs.mean(), rel_tol=1e-9)
            half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
            assert math.isclose(row["diff_low"], diffs.mean() - half, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(row["diff_high"], diffs.mean() + half, rel_tol=1e-9, abs_tol=1e-9)
            assert row["significant"] == (row["diff_low"] > 0 or row["diff_high"] < 0)
        else:
            assert pd.isna(row["diff_mean"]) and pd.isna(row["significant"])
        n = row["n"]
        half = stats.t.ppf(0.975, n - 1) * row["std"] / math.sqrt(n)
        assert math.isclose(row["ci_half"], half, rel_tol=1e-9)


def test_bootstrap_interval_stays_available(tmp_path):
    """``interval="bootstrap"``: the percentile bootstrap, which cannot leave the differences' range."""
    out = make_results(tmp_path, unfinished=1)
    raw = raw_frame(out)
    csv = pd.read_csv(io.StringIO(tables.report(out, fmt="csv", metrics=METRICS, interval="bootstrap")))
    paired = csv[csv["loss"] != "iou"]
    assert len(paired) == 4 * len(METRICS) and (paired["diff_interval"] == "bootstrap").all()
    for _, row in paired.iterrows():
        wide = raw[raw["obj_target"] == row["obj_target"]].pivot(index="seed", columns="loss", values=row["metric"])
        diffs = (wide[row["loss"]] - wide["iou"]).dropna()
        assert math.isclose(row["diff_mean"], diffs.mean(), rel_tol=1e-9)
        assert diffs.min() - 1e-9 <= row["diff_low"] <= row["diff_mean"] <= row["diff_high"] <= diffs.max() + 1e-9
    assert "95% percentile bootstrap CI" in tables.report(out, interval="bootstrap")
    with pytest.raises(ValueError, match="unknown interval"):
        tables.report(out, interval="wald")


def test_t_interval_equals_the_hand_computation():
    """diffs 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.302653, half-width 4.302653 / sqrt(3) = 2.484."""
    mean, low, high = statistics.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert math.isclose(high - mean, 4.302653 / math.sqrt(3), rel_tol=1e-6)
    assert math.isclose(mean - low, 2.484, abs_tol=5e-4)
    assert statistics.t_interval([5.0])[0] == 5.0 and math.isnan(statistics.t_interval([5.0])[1])


def test_t_is_wider_than_the_bootstrap_with_three_seeds(tmp_path):
    """giou beats iou by 1, 2 and 3 AP points on seeds 0, 1, 2: t says within noise (CI -0.48 to
    +4.48), the bootstrap would mark it (its CI cannot leave [1, 3])."""
    out = make_results(tmp_path, ABLATION.replace("axes: {obj_target: [iou, loss]}\n", ""),
                       values=lambda c: {m: 0.4 + (0.01 * (c.labels["seed"] + 1) if c.labels["loss"] == "giou" else 0) for m in METRICS})
    row = lambda text: next(l for l in text.splitlines() if "| giou " in l and "[" in l)  # noqa: E731
    assert "+2.00 [-0.48, +4.48] |" in row(tables.report(out, metrics=["AP"]))
    assert "giou vs iou: every difference within seed noise" in tables.report(out, metrics=["AP"])
    assert row(tables.report(out, metrics=["AP"], interval="bootstrap")).rstrip(" |").endswith("]*")


def test_markdown_paper_style_and_unfinished_cells(tmp_path):
    out = make_results(tmp_path, unfinished=1)
    text = tables.report(out)
    assert "mean ± 95% CI half-width over 2-3 seeds (Student t, n-1 degrees of freedom)" in text
    assert "relative change against iou" in text
    assert text.count("| yolov3-tiny (w=0.25) |") == 6 + 4  # main table + paired CI table
    assert "Not in the table: 1 unfinished cell (1 failed)" in text
    assert "NonFiniteLossError: nan at epoch 2" in text


def test_relative_change_in_the_papers_style_and_published_numbers(tmp_path):
    text = """\
name: paper-like
data: /nowhere/coco
detectors: [yolov3-tiny]
losses: [iou, giou, sca]
seeds: [0]
paper: true
"""
    ap = {"iou": 0.188, "giou": 0.188, "sca": 0.199}
    out = make_results(tmp_path, text, values=lambda c: {m: ap[c.labels["loss"]] for m in METRICS})
    report = tables.report(out)
    assert "| 19.9 (+5.85%) |" in report  # ours: sca vs iou, one seed, no ±
    assert "2.7 (+42.11%)" in report  # the paper's SCA AP90 against its IoU row
    lines = [l for l in report.splitlines() if l.startswith("| yolov3-tiny ")]
    assert [l.split("|")[2].strip() + "/" + l.split("|")[3].strip() for l in lines] == [
        "iou/ours", "iou/paper", "giou/ours", "giou/paper", "sca/ours", "sca/paper"]
    assert "±" not in report.split("\n\n", 1)[1]
    assert "*" not in report.split("\n\n", 1)[1]  # no CI with one seed
    no_paper = tables.report(out, paper=False)
    assert "paper" not in no_paper.split("\n\n", 1)[1]


def test_paired_bootstrap_marks_consistent_gains():
    mean, low, high = statistics.paired_bootstrap([1.0, 1.0, 1.0])
    assert (mean, low, high) == (1.0, 1.0, 1.0)
    mean, low, high = statistics.paired_bootstrap([-1.0, 1.0, 0.5, -0.5])
    assert low < 0 < high and mean == 0.0


def test_significant_gains_are_starred(tmp_path):
    out = make_results(
        tmp_path,
        ABLATION.replace("axes: {obj_target: [iou, loss]}\n", ""),
        values=lambda c: {m: 0.4 + 0.01 * c.labels["seed"] + (0.02 if c.labels["loss"] == "giou" else 0) for m in METRICS},
    )
    report = tables.report(out, metrics=["AP"])
    giou = next(l for l in report.splitlines() if "| giou " in l and "[" not in l)
    assert giou.rstrip(" |").endswith("(+4.88%)*")
    ci = next(l for l in report.splitlines() if "| giou " in l and "[" in l)
    assert "+2.00 [+2.00, +2.00]*" in ci


# Per-seed gains over iou (AP points) on seeds 0, 1, 2; every other difference is exactly 0.
GAINS = {
    ("giou", "AP"): [2.0, 2.0, 2.0],  # CI [+2, +2]: marked
    ("sca(alpha=0.5)", "AP"): [-1.0, -1.2, -0.8],  # t CI [-1.50, -0.50]: marked
    ("giou", "AP50"): [1.0, 2.0, 3.0],  # t CI [-0.48, +4.48]: within noise
    ("sca(alpha=0.5)", "AP50"): [-1.0, 1.0, 0.5],  # within noise
    ("sca(alpha=0.5)", "AP75"): [3.0, 3.5, 2.5],  # t CI [+1.76, +4.24]: marked
}
MARKED = {("giou", "AP"), ("sca(alpha=0.5)", "AP"), ("sca(alpha=0.5)", "AP75")}


def gains_results(tmp_path: Path) -> Path:
    def values(cell):
        seed, loss = cell.labels["seed"], cell.labels["loss"]
        return {m: 0.3 + 0.05 * seed + GAINS.get((loss, m), [0.0] * 3)[seed] / 100 for m in METRICS}

    return make_results(tmp_path, ABLATION.replace("axes: {obj_target: [iou, loss]}\n", ""), values=values)


def marked_cells(rows: list[list[str]], metrics: list[str]) -> set[tuple[str, str]]:
    """(loss, metric) of the cells ending in the mark; a row is [detector, loss, seeds, *metrics]."""
    return {(cells[1], metric) for cells in rows for metric, cell in zip(metrics, cells[3:]) if cell.endswith("*")}


def test_the_mark_is_exactly_where_the_ci_excludes_zero_in_markdown_and_latex(tmp_path):
    out = gains_results(tmp_path)
    metrics = ["AP", "AP50", "AP65", "AP75", "AP80", "AP90"]
    csv = pd.read_csv(io.StringIO(tables.report(out, fmt="csv")))
    assert set(map(tuple, csv.loc[csv["significant"] == True, ["loss", "metric"]].to_numpy())) == MARKED  # noqa: E712

    text = tables.report(out)
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in text.splitlines() if l.startswith("| yolov3-tiny")]
    main, paired = [r for r in rows if "[" not in r[3]], [r for r in rows if "[" in r[3]]
    assert len(main) == 3 and len(paired) == 2
    assert marked_cells(main, metrics) == MARKED and marked_cells(paired, metrics) == MARKED
    assert "- giou vs iou: AP +2.00 [+2.00, +2.00]*; the others within seed noise" in text
    sca = next(l for l in text.splitlines() if l.startswith("- sca(alpha=0.5) vs iou: "))
    assert "AP -1.00 [-1.50, -0.50]*, AP75 +3.00 [+1.76, +4.24]*; the others within seed noise" in sca
    assert "Differences without * are within seed noise" in text

    latex = tables.report(out, fmt="latex")
    assert latex.count(r"\begin{table}") == 2 and "within seed noise" in latex
    for table in latex.split(r"\end{table}")[:2]:
        body = table.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
        cells = [[c.strip().removesuffix(r"\\").strip() for c in l.split("&")] for l in body.splitlines() if l.rstrip().endswith(r"\\")]
        cells = [[c.removeprefix(r"\textbf{").removesuffix("}") for c in row] for row in cells]
        assert marked_cells(cells, metrics) == MARKED, table


def test_one_seed_gives_no_interval_no_mark_and_says_so(tmp_path):
    from scabench.reports import figures

    out = make_results(tmp_path, ABLATION.replace("seeds: [0, 1, 2]", "seeds: [0]"),
                       values=lambda c: {m: 0.2 if c.labels["loss"] == "iou" else 0.5 for m in METRICS})
    text = tables.report(out)
    caption, rest = text.split("\n\n", 1)
    assert "one seed, so no confidence interval and no paired comparison" in caption
    assert "cannot be told from seed noise" in caption
    assert "±" not in rest and "*" not in rest and "Paired difference" not in rest
    csv = pd.read_csv(io.StringIO(tables.report(out, fmt="csv")))
    assert csv[["std", "ci_half", "diff_mean", "diff_low", "diff_high", "significant"]].isna().all().all()
    latex = tables.report(out, fmt="latex")
    assert latex.count(r"\begin{table}") == 1 and "*" not in latex.split(r"\midrule", 1)[1]
    summary = statistics.summarize(loading.load_runs(out))
    assert not summary.has_differences
    assert figures.plot_paired_differences(summary, tmp_path / "figures", palette={}) == []


def test_latex_booktabs_bold_best_and_compiles_if_tex_exists(tmp_path):
    out = make_results(tmp_path)
    latex = tables.report(out, fmt="latex")
    for token in (r"\begin{table}", r"\begin{tabular}{llllrrrrrr}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
        assert token in latex, token
    body = latex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    rows = [l for l in body.splitlines() if l.rstrip().endswith(r"\\")]
    assert len(rows) == 6
    assert body.count(r"\midrule") == 1  # between the two obj_target blocks
    assert r"\%" in latex and "%)" not in latex.replace(r"\%)", "")
    assert r"sca(alpha=0.5)" in latex and r"obj\_target" in latex
    # the best mean per column and block is bold: 6 metrics x 2 blocks (ties bold every best)
    assert body.count(r"\textbf{") >= 12
    runs = loading.load_runs(out)
    for target, block in zip(("iou", "loss"), (rows[:3], rows[3:])):
        best = runs[runs["setting:obj_target"] == target].groupby("loss")["AP"].mean().idxmax()
        row = next(r for r in block if f"& {best} &" in r)
        assert row.split("&")[4].strip().startswith(r"\textbf{"), row
    engine = next((e for e in ("pdflatex", "lualatex", "xelatex") if shutil.which(e)), None)
    if engine:
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex + "\\end{document}\n")
        done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]


def test_epochs_keep_the_last_version_of_a_resumed_epoch(tmp_path):
    out = make_results(tmp_path)
    epochs = loading.load_epochs(out)
    assert len(epochs) == 18 * 3
    assert (epochs.groupby("id")["epoch"].apply(list) == pd.Series([[1, 2, 3]] * 18, index=sorted(epochs["id"].unique()))).all()
    assert (epochs["AP"] >= 0).all()  # the first, overwritten version of epoch 1 (-1) is gone
    assert "loss_box" in epochs and (epochs["loss_box"] <= 1).all()  # per-epoch values, not the summary's


def test_undefined_coco_metrics_are_blank_not_minus_100(tmp_path):
    out = make_results(tmp_path, values=lambda c: {**{m: 0.3 for m in METRICS}, "APl": -1.0})
    runs = loading.load_runs(out)
    assert runs["APl"].isna().all() and (runs["AP"] == 30.0).all()
    assert "epoch" not in runs and "loss_box" not in runs
    text = tables.report(out, metrics=["AP", "APl"])
    assert "-100" not in text and "mean ± 95% CI half-width over 3 seeds" in text


def test_figures_are_written_and_not_empty(tmp_path, monkeypatch):
    out = make_results(tmp_path)
    # A finished simulation cell: its figures come from reports.simulation_figures.
    sim_cell = out / "cells" / "simcell"
    sim_cell.mkdir()
    atomic_write_json(sim_cell / "config.json", {"id": "simcell", "kind": "simulate", "config": {"study": "gradients"}})
    atomic_write_json(sim_cell / "summary.json", {"study": "gradients"})
    calls = []

    def fake_plot(results_dir, out_dir):
        calls.append((Path(results_dir), Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "gradients.png").write_bytes(b"\x89PNG fake")
        return [Path(out_dir) / "gradients.png"]

    monkeypatch.setitem(sys.modules, "scabench.reports.simulation_figures", types.SimpleNamespace(plot_simulations=fake_plot))
    from scabench.reports.figures import plot

    paths = plot(out)
    names = sorted(p.name for p in paths)
    assert names == ["ap_by_iou.pdf", "ap_by_iou.png", "gradients.png", "map_per_epoch.pdf", "map_per_epoch.png",
                     "paired_differences.pdf", "paired_differences.png"]
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
    assert (out / "figures" / "map_per_epoch.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "ap_by_iou.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "figures" / "map_per_epoch.png").stat().st_size > 20_000
    assert (out / "figures" / "paired_differences.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "paired_differences.png").stat().st_size > 20_000
    assert (out / "figures" / "paired_differences.pdf").read_bytes()[:4] == b"%PDF"
    assert calls == [(sim_cell, out / "figures" / "simulation" / "gradients")]


def test_report_and_plot_commands(tmp_path):
    from typer.testing import CliRunner

    from scabench.bench.cli import app

    out = make_results(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(out), "--format", "csv", "--metrics", "AP,AP90", "--baseline", "giou"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert set(frame["metric"]) == {"AP", "AP90"} and len(frame) == 12
    for column in ("mean", "ci_half", "diff_mean", "diff_low", "diff_high", "significant", "n", "std"):
        assert column in frame, column
    assert (frame.loc[frame["loss"] != "giou", "diff_interval"] == "t").all()
    boot = runner.invoke(app, ["report", str(out), "-f", "csv", "--interval", "bootstrap"])
    assert boot.exit_code == 0, boot.output
    assert set(pd.read_csv(io.StringIO(boot.stdout))["diff_interval"].dropna()) == {"bootstrap"}
    assert runner.invoke(app, ["report", str(out), "--interval", "wald"]).exit_code == 2
    assert (frame.loc[frame["loss"] == "giou", "rel_change_pct"] == 0).all()
    latex = runner.invoke(app, ["report", str(out), "-f", "latex", "-o", str(tmp_path / "t.tex")])
    assert latex.exit_code == 0 and (tmp_path / "t.tex").read_text().startswith(r"\begin{table}")
    bad = runner.invoke(app, ["report", str(out), "--metrics", "AP42"])
    assert bad.exit_code == 2 and "unknown metric" in bad.stderr
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such results folder" in missing.stderr
    figures = runner.invoke(app, ["plot", str(out), "-o", str(tmp_path / "figs"), "--interval", "bootstrap", "-b", "giou"])
    assert figures.exit_code == 0, figures.output
    assert (tmp_path / "figs" / "paired_differences.png").read_bytes()[:4] == b"\x89PNG"


def test_a_broken_summary_is_listed_with_its_file_and_reason(tmp_path):
    """Not silently dropped: the cell appears under the table, naming the file and what is wrong."""
    out = make_results(tmp_path)
    broken = sorted((out / "cells").iterdir())[3]
    (broken / "summary.json").write_text('{"metrics": {"AP": 0.3')
    text = tables.report(out)
    assert text.count("| yolov3-tiny (w=0.25) |") == 6 + 4  # one seed fewer, every group still there
    assert "Not in the table: 1 unfinished cell (1 broken)" in text
    label = json.loads((broken / "config.json").read_text())["label"]
    assert f"- {label} (broken: cells/{broken.name}/summary.json: not valid JSON" in text
    assert len(loading.load_runs(out)) == 17
    logged = []
    from scabench.reports.figures import plot

    plot(out, log=logged.append)
    assert any(f"cells/{broken.name}/summary.json" in line for line in logged)


NO_TORCH = """
import sys
from typer.testing import CliRunner
import scabench.reports, scabench.reports.tables, scabench.reports.figures
from scabench.bench.cli import app
result = CliRunner().invoke(app, ["report", sys.argv[1]])
assert result.exit_code == 0, result.output
assert "| sca(alpha=0.5) |" in result.stdout, result.stdout
print("torch" in sys.modules)
"""


def test_report_reads_results_without_torch(tmp_path):
    out = make_results(tmp_path)
    done = subprocess.run([sys.executable, "-P", "-c", NO_TORCH, str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_cells_format_has_one_row_per_finished_cell_with_its_metrics(tmp_path):
    """``--format cells`` (cells.csv beside a run's report): every finished cell once, in plan
    order, with its seed and final metrics in AP points, equal to the raw summaries."""
    out = make_results(tmp_path, unfinished=1)
    cells = pd.read_csv(io.StringIO(tables.report(out, fmt="cells")))
    done = {p.name: json.loads((p / "summary.json").read_text())["metrics"] for p in (out / "cells").iterdir() if (p / "summary.json").exists()}
    assert sorted(cells["id"]) == sorted(done) and len(done) == len(raw_frame(out))
    for _, row in cells.iterrows():
        assert math.isclose(row["AP75"], done[row["id"]]["AP75"] * 100, rel_tol=1e-12)
        assert row["seed"] in (0, 1, 2)
