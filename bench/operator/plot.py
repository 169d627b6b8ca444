"""Plot bench/operator/results.json: latency against N, ours next to the Job controller's.

python -m bench.operator.plot [results.json] [out.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/operator/results.json")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "bench/operator/latency.png")
    data = json.loads(src.read_text())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    series = [
        ("clipjob_to_job", "-o", "ClipJob -> Job (operator)"),
        ("job_complete_to_succeeded", "-.s", "Job complete -> Succeeded (operator)"),
        ("job_controller_job_to_pod", ":x", "Job -> Pod (Job controller, same run)"),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, stat in zip(axes, ("p50", "p99"), strict=True):
        for index, (tag, block) in enumerate(data.items()):
            runs = [r for r in block["runs"] if r["label"].startswith("burst")]
            if not runs:
                continue
            ns = [r["n"] for r in runs]
            for key, style, label in series:
                ax.plot(
                    ns,
                    [r[key][stat] for r in runs],
                    style,
                    color=colors[index % len(colors)],
                    label=f"{label} [{tag}]",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ClipJobs created at once (N)")
        ax.set_ylabel(f"{stat} latency (s)")
        ax.set_title(f"{stat} latency against N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
