"""The importance-sampled log p(x) of today's aevb against an older aevb, in one process.

Side-by-side timing in two processes is at the mercy of a shared machine's drift; here both
versions run in turn in one interpreter, on the same weights and the same draws, so their
ratio is what changed. The older tree must use relative imports (aevb up to fbf5e37, before the
layers): it is copied under another package name, ``aevb_old``, and imported beside ``aevb``.

    git worktree add /tmp/before fbf5e37
    python benchmarks/evaluation_before_after.py /tmp/before/src/aevb --hidden 500
    python benchmarks/evaluation_before_after.py /tmp/before/src/aevb --hidden 200,200 --bfloat16

Prints the median seconds of each over ``--rounds`` timed rounds (after two warm-up rounds,
compiled kernels on, as a long ``aevb evaluate`` runs) and new/old: below 1 is faster now.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the older package folder (its src/aevb)")
    parser.add_argument("--hidden", default="500")
    parser.add_argument("--latent", type=int, default=50)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bfloat16", action="store_true", help="bfloat16 matmuls (autocast)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    shutil.copytree(args.old, root / "aevb_old")
    sys.path.insert(0, str(root))
    from aevb_old import evaluate as old_evaluate
    from aevb_old import heads as old_heads
    from aevb_old import models as old_models
    from aevb_old.config import Config as OldConfig
    from aevb_old.config import apply_overrides as old_overrides

    from aevb.config import Config, apply_overrides
    from aevb.evaluation import evaluate, speed
    from aevb.models import Batch, DataSpec, build_model

    torch.set_num_threads(args.threads)
    overrides = {"latent_dim": args.latent, "hidden": args.hidden}
    spec = ((1, 28, 28), "binary", None, None, 1000)
    new = build_model(apply_overrides(Config(), overrides).model, DataSpec(*spec)).eval()
    old = old_models.build_model(old_overrides(OldConfig(), overrides).model,
                                 old_models.DataSpec(*spec)).eval()
    old.load_state_dict(new.state_dict())
    x = (torch.rand(args.points, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3
         ).float()
    precision = torch.bfloat16 if args.bfloat16 else torch.float32
    sides = {"old": (old_evaluate.log_likelihood, old, old_models.Batch),
             "new": (evaluate.log_likelihood, new, Batch)}
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    with old_heads.compiled_kernels(), speed.compiled_kernels():
        for round_ in range(args.rounds + 2):
            for side, (log_likelihood, model, batch) in sides.items():
                torch.manual_seed(0)
                started = time.perf_counter()
                log_px = log_likelihood(model, batch(x, None, None, None), args.k, precision)
                if round_ >= 2:
                    seconds[side].append(time.perf_counter() - started)
                if round_ == 2:
                    print(f"{side}: mean log p(x) {log_px.mean().item():.6f} nats")
    old_s, new_s = (statistics.median(seconds[s]) for s in ("old", "new"))
    print(f"784-{args.hidden.replace(',', '-')}-{args.latent}, {args.points} points x K = {args.k},"
          f" {precision}: old {old_s * 1e3:.1f} ms, new {new_s * 1e3:.1f} ms, new/old {new_s / old_s:.3f}")


if __name__ == "__main__":
    main()
