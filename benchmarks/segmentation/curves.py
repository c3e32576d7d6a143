"""Plot the validation-Dice curves of a finished (or running) segmentation benchmark.

    python benchmarks/segmentation/curves.py OUT PNG [ARM]

One line per regime and seed of ``ARM`` (default ``real+aug``), from the ``validation_curve``
of every ``OUT/runs/<regime>/<ARM>/seed<k>.json``; the kept (best) iteration is marked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path, png: Path, arm: str = "real+aug") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgan.visualize import save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    runs = sorted((out / "runs").glob(f"*/{arm}/seed*.json"))
    if not runs:
        raise SystemExit(f"{out}: no finished {arm} run")
    for i, path in enumerate(runs):
        run = json.loads(path.read_text(encoding="utf-8"))
        its, dice = zip(*run["validation_curve"], strict=True)
        line, = ax.plot(its, dice, marker=".", color=f"C{i}",
                        label=f"regime {run['regime']}, seed {run['seed']}")
        best = run["best_iteration"]
        ax.plot([best], [dict(run["validation_curve"])[best]], "o", mfc="none", ms=9,
                color=line.get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation Dice (mean over patients)")
    ax.set_title(f"{arm}: validation Dice, kept weights circled", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4]))
