r"""Make every table and figure of the study that a results directory allows.

  python -m experiments.report --results=runs/sweep --out=runs/report

Reads the run files that `experiments.sweep` wrote to `<results>/runs/`
and keeps the runs that reached their preset's training accuracy: 99% for
the study's networks, 50% for the ViT and 100% for the UFM, unless
--min_train_accuracy is given. For each model and dataset it writes a
folder in --out:

- `runs.csv`: every run, kept or not, with its final and initial metrics;
- `nc0_by_decay.md/.csv`: mean NC0 (and NC3) of each coupled optimizer
  against its decoupled twin at every decay both were run with;
- `table1.*`: final metrics at the study's best setting of each optimizer
  (its Table 4), with the change since initialisation;
- `table2.*`, `table4.*`: the kept run with the smallest NC3 per optimizer,
  and its hyperparameters;
- `table5.*`: NC3 regressed on log10(NC0), per learning rate and overall;
- figures `figure1.png` (NC0 and NC3 against decay, Adam and AdamW),
  `figure2.png` (NC3 against NC0 with the fits), `figure3.png` (Signum and
  SignumW, SGD and SGDW), `figure4.png` (SGD's momentum by decay heatmaps),
  `figure5.png` and `figure6.png` (metrics and singular values over training
  at the Table 1 settings), `figure7.png` (the Adam-AdamW mix),
  `figure11.png`, `figure12.png` (NC1 and NC2 against NC0) and
  `figure44.png` (NC4 against the others).

It prints what it made and, for everything it skipped, why (for example, no
kept runs of that optimizer). `report.md` in --out lists the same.
"""

from collections.abc import Callable
import dataclasses
import math
from pathlib import Path
from typing import Any

from absl import flags

from experiments import cli
from ncjax import analysis
from ncjax import optimizers
from ncjax import plotting
from ncjax import results

_RESULTS = flags.DEFINE_string("results", None, "Results directory written by experiments.sweep.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <results>/report).")
_MIN_TRAIN_ACCURACY = flags.DEFINE_float(
    "min_train_accuracy", None,
    "Keep runs at or above this final training accuracy (default: each run's preset threshold).",
)

FILE_DESCRIPTIONS = (
    ("runs.csv", "every run with its final metrics and, as initial_*, those at initialisation"),
    ("nc0_by_decay", "mean NC0 and NC3 over kept runs of each coupled optimizer and its "
                     "decoupled twin, at each decay both ran"),
    ("table1", "final metrics at the study's best setting of each optimizer (its Table 4), "
               "with the change since initialisation in percent"),
    ("table2", "per optimizer, the kept run with the smallest final NC3, with the change "
               "since initialisation in percent"),
    ("table4", "the hyperparameters of the table2 runs"),
    ("table5", "OLS of final NC3 on log10(final NC0) over kept runs, per learning rate and overall"),
    ("figure1", "NC0 and NC3 against decay for Adam and AdamW: mean over learning rates, "
                "momenta and seeds, band of one standard deviation"),
    ("figure2", "NC3 against NC0 per learning rate, with the table5 fits"),
    ("figure3", "as figure1 for Signum and SignumW, and SGD and SGDW"),
    ("figure4", "SGD's NC0, NC2 and NC3 per momentum and decay"),
    ("figure5", "metrics over training at the table1 settings (one point per evaluation)"),
    ("figure6", "smallest and mean other singular values of W and M over training, table1 settings"),
    ("figure7", "the Adam-AdamW mix: metrics against the coupled part of the decay"),
    ("figure11, figure12", "NC1 and NC2 against NC0 per learning rate"),
    ("figure44", "NC4 against NC0 to NC3"),
)

# Pairs of (coupled, decoupled) optimizers whose NC0 the study compares.
DECAY_PAIRS = (("adam", "adamw"), ("signum", "signumw"), ("sgd", "sgdw"))
MIX_OPTIMIZER = "adam_adamw"


@dataclasses.dataclass
class Report:
    """Names of the files one group's report made, and of those it skipped with the reason.

    It also keeps the number of kept runs and the coupled-against-decoupled
    table, which the printed summary repeats.
    """

    made: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    kept_count: int = 0
    decay_pairs: tuple[list[str], list[list]] = ([], [])

    def attempt(self, name: str, reason_if_empty: str | None, make: Callable[[], Any]) -> None:
        """Call `make`, or record it as skipped when `reason_if_empty` is given."""
        if reason_if_empty:
            self.skipped.append((name, reason_if_empty))
            return
        make()
        self.made.append(name)


def group_name(row: dict) -> str:
    return f"{row['model']}_{str(row['dataset']).replace(':', '_')}"


def at_best_setting(row: dict) -> bool:
    """True for a run at the study's best-NC3 setting of its optimizer (its Table 4)."""
    best = optimizers.STUDY_BEST_SETTINGS.get(row["optimizer"])
    if best is None:
        return False
    return all(
        math.isclose(row[key], getattr(best, key), rel_tol=1e-9)
        for key in ("learning_rate", "momentum", "weight_decay")
    )


def decay_pairs_table(kept: list[dict]):
    """Mean NC0 and NC3 of each coupled optimizer and its decoupled twin, per shared decay."""
    summary = analysis.by_optimizer_and_decay(kept, ("nc0", "nc3"))
    header = ["coupled", "decoupled", "weight_decay", "runs_coupled", "runs_decoupled",
              "nc0_coupled", "nc0_decoupled", "nc3_coupled", "nc3_decoupled", "coupled_nc0_is"]
    table = []
    for coupled, decoupled in DECAY_PAIRS:
        if coupled not in summary or decoupled not in summary:
            continue
        for decay in sorted(set(summary[coupled]) & set(summary[decoupled])):
            a, b = summary[coupled][decay], summary[decoupled][decay]
            table.append([coupled, decoupled, decay, a["nc0"][2], b["nc0"][2],
                          a["nc0"][0], b["nc0"][0], a["nc3"][0], b["nc3"][0],
                          compare(a["nc0"][0], b["nc0"][0])])
    return header, table


def compare(coupled: float, decoupled: float) -> str:
    """Return "lower", "equal" (within 0.1%) or "higher" for the coupled optimizer.

    At decay 0 the two are the same update, yet Adam's and AdamW's runs in
    the CPU preset ended 3e-5 apart in relative NC0, so "equal" allows 0.1%.
    """
    if math.isclose(coupled, decoupled, rel_tol=1e-3):
        return "equal"
    return "lower" if coupled < decoupled else "higher"


def present(rows: list[dict], names) -> list[str]:
    return [name for name in names if any(row["optimizer"] == name for row in rows)]


def report_group(name: str, rows: list[dict], runs: dict[str, dict], out: Path,
                 min_train_accuracy: float | None) -> Report:
    """Write the tables and figures of one model and dataset to `out`."""
    kept = analysis.kept_runs(rows, min_train_accuracy)
    study = [row for row in kept if row["optimizer"] != MIX_OPTIMIZER]
    mix = [row for row in kept if row["optimizer"] == MIX_OPTIMIZER]
    title = name.replace("_", " ", 1)
    no_kept = None if study else "no kept runs of the study's optimizers"
    pairs = decay_pairs_table(study)
    report = Report(kept_count=len(kept), decay_pairs=pairs)

    analysis.write_csv(rows, out / "runs.csv")
    report.made.append("runs.csv")

    report.attempt("nc0_by_decay", None if pairs[1] else "no optimizer with its decoupled twin",
                   lambda: analysis.write_table(*pairs, out / "nc0_by_decay"))

    best_setting = [row for row in rows
                    if row["status"] == "completed" and row["optimizer"] != MIX_OPTIMIZER
                    and at_best_setting(row)]
    report.attempt("table1", None if best_setting else "no run at the study's best settings",
                   lambda: analysis.write_table(*analysis.final_metrics_table(best_setting),
                                                out / "table1"))
    best = analysis.best_runs(study, "nc3", min_train_accuracy)
    report.attempt("table2", no_kept, lambda: analysis.write_table(
        *analysis.final_metrics_table(best), out / "table2"))
    report.attempt("table4", no_kept, lambda: analysis.write_table(
        *analysis.hyperparameter_table(best), out / "table4"))
    fits = analysis.nc3_on_nc0(study) if study else []
    report.attempt("table5", None if fits else "fewer than 3 kept runs with NC0 and NC3",
                   lambda: analysis.write_table(*analysis.regression_table(fits), out / "table5"))

    def figure(number, reason, draw):
        report.attempt(f"figure{number}", reason, lambda: draw(out / f"figure{number}.png"))

    adam_pair = present(study, ("adam", "adamw"))
    figure(1, None if adam_pair else "no kept Adam or AdamW runs",
           lambda path: plotting.decay_comparison(study, tuple(adam_pair), title=title, path=path))
    lr_fits = {}
    for label, fit in fits:
        if label.startswith("lr="):
            lr_fits[float(label[3:])] = (fit.slope, fit.intercept)
    figure(2, no_kept, lambda path: plotting.metric_against_nc0(
        study, "nc3", fits=lr_fits, title=title, path=path))
    groups = [group for group in (("signum", "signumw"), ("sgd", "sgdw")) if present(study, group)]
    figure(3, None if groups else "no kept Signum, SignumW, SGD or SGDW runs",
           lambda path: plotting.decay_comparison(study, tuple(groups), title=title, path=path))
    figure(4, None if present(study, ("sgd",)) else "no kept SGD runs",
           lambda path: plotting.momentum_decay_heatmaps(study, "sgd", path=path))
    histories = {row["optimizer"]: runs[row["run_id"]]["history"]
                 for row in sorted(best_setting, key=lambda row: row["seed"], reverse=True)}
    histories = dict(sorted(histories.items(), key=lambda item: analysis.optimizer_sort_key(item[0])))
    over_training = None if histories else "no run at the study's best settings"
    figure(5, over_training, lambda path: plotting.metrics_over_training(
        histories, title=f"{title}, best settings of the study", path=path))
    figure(6, over_training, lambda path: plotting.singular_values_over_training(
        histories, title=f"{title}, best settings of the study", path=path))
    figure(7, None if mix else "no kept runs of the Adam-AdamW mix",
           lambda path: plotting.coupled_share(mix, title=title, path=path))
    figure(11, no_kept, lambda path: plotting.metric_against_nc0(
        study, "nc1", log_y=True, title=title, path=path))
    figure(12, no_kept, lambda path: plotting.metric_against_nc0(
        study, "nc2", title=title, path=path))
    has_nc4 = any(row.get("nc4") is not None for row in study)
    figure(44, no_kept or (None if has_nc4 else "no NC4 (the UFM has no test set)"),
           lambda path: plotting.nc4_against_metrics(study, title=title, path=path))
    return report


def format_pairs(header, table) -> str:
    lines = []
    for row in table:
        values = dict(zip(header, row))
        lines.append(
            f"  decay {values['weight_decay']:g}: NC0 {values['coupled']} "
            f"{values['nc0_coupled']:.3g} vs {values['decoupled']} {values['nc0_decoupled']:.3g}"
            f" ({values['coupled']} {values['coupled_nc0_is']})"
        )
    return "\n".join(lines)


def main(argv):
    del argv  # cli.run has rejected any argument that is not a flag.
    if not _RESULTS.value:
        cli.fail("--results is required: the directory that experiments.sweep wrote")
    results_dir = Path(_RESULTS.value)
    out = Path(_OUT.value) if _OUT.value else results_dir / "report"
    threshold = _MIN_TRAIN_ACCURACY.value
    try:
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"--min_train_accuracy={threshold} is invalid; expected a value in [0, 1]")
        runs = analysis.load_runs(results_dir)
        if not runs:
            raise ValueError(f"{results_dir / 'runs'} contains no run files; run experiments.sweep first")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out: {out} exists and is not a directory")
    except ValueError as error:
        cli.fail(str(error))

    by_id = {run["run_id"]: run for run in runs}
    rows = analysis.run_table(runs)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_name(row), []).append(row)

    index = [f"# Report on {results_dir}", ""]
    for name, group_rows in sorted(groups.items()):
        report = report_group(name, group_rows, by_id, out / name, threshold)
        header, pairs = report.decay_pairs
        files = sum(1 for path in (out / name).iterdir() if not path.name.startswith("."))
        print(f"{name}: {len(group_rows)} runs, {report.kept_count} kept; wrote {files} "
              f"files to {out / name}")
        if pairs:
            print(format_pairs(header, pairs))
        for item, reason in report.skipped:
            print(f"  skipped {item}: {reason}")
        index += [f"## {name}", "",
                  f"{len(group_rows)} runs, {report.kept_count} kept.", "",
                  "Made: " + ", ".join(report.made) + ".", ""]
        index += [f"- skipped {item}: {reason}" for item, reason in report.skipped]
        index.append("")
    index += ["## Files", ""] + [f"- `{name}`: {text}" for name, text in FILE_DESCRIPTIONS]
    results.write_text_atomic(out / "report.md", "\n".join(index) + "\n")
    print(f"index: {out / 'report.md'}")


if __name__ == "__main__":
    cli.run(main)
