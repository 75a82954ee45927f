"""The table and curves of docs/iwae-table1.md from runs/iwae-table1 (docs/scripts/iwae-table1.sh).

Prints a Markdown table of test NLL (K = 5000) beside Burda et al.'s Table 1 and draws
docs/iwae-table1-curves.png: validation ELBO per pass for every run, and test NLL against passes
for the runs trained at several budgets.
"""

import csv
import json
import re
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

RUNS = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/iwae-table1")
OUT = Path("docs/iwae-table1-curves.png")
PAPER = {  # Burda, Grosse & Salakhutdinov (2016), table 1, MNIST, test NLL with k = 5000
    ("vae", "1layer"): 86.76, ("iwae-k5", "1layer"): 85.54, ("iwae-k50", "1layer"): 84.78,
    ("vae", "2layer"): 85.33, ("iwae-k5", "2layer"): 83.89, ("iwae-k50", "2layer"): 82.90,
}


def load(run: Path) -> tuple[dict, list[dict]]:
    evaluation = json.loads((run / "evaluation.json").read_text())
    with open(run / "metrics.csv") as handle:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]
    return evaluation, rows


def units(evaluation: dict) -> str:
    layers = sorted(k for k in evaluation if re.fullmatch(r"active_units_z\d+", k))
    return " / ".join(str(evaluation[k]) for k in layers) or str(evaluation.get("active_units"))


runs = {p.name: load(p) for p in sorted(RUNS.iterdir()) if (p / "evaluation.json").is_file()}
budgets = {int(m.group(1)) for name in runs if (m := re.search(r"-p(\d+)$", name))}
# the table's budget: the largest that every row of the table was trained for
budget = max((p for p in budgets if all(f"{model}-{layers}-p{p}" in runs for model, layers in PAPER)),
             default=max(budgets))
print("| model | layers | paper NLL | ours NLL (K = 5000) | ours test ELBO | active units |"
      " train time |\n|---|---|---|---|---|---|---|")
for (model, layers), paper in PAPER.items():
    name = f"{model}-{layers}-p{budget}"
    if name not in runs:
        print(f"| {model} | {layers[0]} | {paper:.2f} | (not run) | | | |")
        continue
    evaluation, rows = runs[name]
    print(f"| {model} | {layers[0]} | {paper:.2f} | {-evaluation['log_px_nats']:.2f} ±"
          f" {evaluation['log_px_se']:.2f} | {evaluation['elbo_nats']:.2f} | {units(evaluation)} |"
          f" {rows[-1]['seconds'] / 60:.1f} min |")
print(f"\n{budget} passes each; {next(iter(runs.values()))[0]['points']} test points.\n")
print("| run | passes | test NLL | test ELBO | rate (KL) per layer | active units |\n|---|---|---|---|---|---|")
for name, (evaluation, rows) in runs.items():
    rates = " / ".join(f"{evaluation[k]:.2f}" for k in sorted(evaluation)
                       if re.fullmatch(r"rate_z\d+_nats", k))
    print(f"| {name} | {len(rows)} | {-evaluation['log_px_nats']:.2f} ± {evaluation['log_px_se']:.2f}"
          f" | {evaluation['elbo_nats']:.2f} | {rates} | {units(evaluation)} |")

figure = Figure(figsize=(11, 4.2))
left, right = figure.subplots(1, 2)
for name, (_, rows) in runs.items():
    if name.endswith(f"-p{budget}"):
        left.plot([r["epoch"] for r in rows], [-r["valid_elbo"] for r in rows], marker=".",
                  label=name.removesuffix(f"-p{budget}"))
left.set(xlabel="passes over the training set", ylabel="validation -ELBO (nats)",
         title="validation bound per pass")
left.legend(fontsize=8)
for model in ("vae-1layer", "vae-2layer"):
    points = sorted((len(rows), -evaluation["log_px_nats"]) for name, (evaluation, rows)
                    in runs.items() if name.startswith(model + "-p"))
    right.plot(*zip(*points, strict=True), marker="o", label=f"{model} (ours)")
for (model, layers), paper in PAPER.items():
    if model == "vae":
        right.axhline(paper, linestyle=":", color="grey")
        above = layers.startswith("1")  # 86.76 above, 85.33 below: the labels don't overlap
        right.annotate(f"paper {layers[0]}-layer VAE, 3280 passes", (1, paper), fontsize=8,
                       va="bottom" if above else "top")
right.set(xscale="log", xlabel="passes (each its own run, the paper's schedule stopped there)",
          ylabel="test NLL, K = 5000 (nats)", title="test NLL against the budget")
right.legend(fontsize=8)
figure.tight_layout()
FigureCanvasAgg(figure).print_png(str(OUT))
print(f"curves: {OUT}")
