"""The ratios of a side-by-side run as a PNG, from the run's own figures (bench/fs_bench.py)."""

from __future__ import annotations

from pathlib import Path


def draw_ratios(result: dict, path: Path) -> None:
    """One horizontal bar per workload: shoalfs/MooseFS (and shoalfs/Python-FUSE floor and
    shoalfs/local disk), on a log scale, with the line at 1.0 that the performance target
    is about."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    medians = result["medians"]
    rows = list(next(iter(medians.values())))
    pairs = [
        (b, label)
        for b, label in (
            ("moosefs", "shoalfs / MooseFS"),
            ("floor", "shoalfs / Python-FUSE floor"),
            ("local", "shoalfs / local disk"),
        )
        if b in medians and "shoalfs" in medians
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    height = 0.8 / max(1, len(pairs))
    for i, (base, label) in enumerate(pairs):
        ratios = [medians["shoalfs"][r] / medians[base][r] for r in rows]
        positions = [y + i * height for y in range(len(rows))]
        bars = ax.barh(positions, ratios, height=height, label=label)
        for bar, ratio in zip(bars, ratios):
            ax.text(
                bar.get_width() * 1.05,
                bar.get_y() + bar.get_height() / 2,
                f"{ratio:.2f}",
                va="center",
                fontsize=7,
            )
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks([y + height * (len(pairs) - 1) / 2 for y in range(len(rows))], rows)
    ax.invert_yaxis()
    ax.set_xlabel("ratio of rates (log scale; right of the line: shoalfs is faster)")
    ax.set_title(
        f"shoalfs side by side: medians of {result['rounds']} interleaved rounds", fontsize=10
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
