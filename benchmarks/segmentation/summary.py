"""Tables of a segmentation benchmark from the runs finished so far (it may still be running).

    python benchmarks/segmentation/summary.py OUT

Reads ``OUT/protocol.json`` and every ``OUT/runs/*/*/seed*.json`` and prints, per regime, the
patient-level tables of ``report.md`` (raw and post-processed, every ratio, per seed) and the
number of finished runs. Writes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> str:
    from medgan.evaluation.arms import REFERENCE_ARM
    from medgan.evaluation.report import _ratio_table, _seed_table, _table
    from medgan.evaluation.statistics import summarise

    protocol = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    runs = [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((out / "runs").glob("*/*/seed*.json"))]
    summary = summarise(runs, REFERENCE_ARM, int(protocol["settings"]["n_bootstrap"]))
    lines = [f"{len(runs)} finished runs in {out}"]
    for regime, stats in summary.items():
        lines += ["", f"## Regime `{regime}`", ""] + _table(stats, REFERENCE_ARM)
        if any("postprocessed" in v for v in stats.values()):
            lines += ["", "Post-processed:", ""]
            lines += _table(stats, REFERENCE_ARM, "postprocessed")
        if any(v["ratio"] is not None for v in stats.values()):
            lines += ["", "Every ratio:", ""] + _ratio_table(stats, REFERENCE_ARM)
        lines += ["", "Per seed:", ""] + _seed_table(stats)
        secs = [v["seconds_per_run"] for v in stats.values()]
        lines += ["", f"Mean time per run: {sum(secs) / len(secs):.0f} s"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
