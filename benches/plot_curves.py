"""Draws recall–QPS curves (ann-benchmarks style) from the `curve,<series>,<param>,<recall>,<qps>` lines
the index benches print, one picture per bench output.

    python benches/plot_curves.py --title "IVF_SQ8 vs faiss" --out docs/bench/ivf_sq8.png bench-output.txt

Lines that are not curve lines are ignored, so a bench's whole output can be given as is; columns after the
QPS (a best-of-runs QPS, say) are ignored too. Each series (ours, anchor, …) is one line through its points in
the order of the swept parameter (numeric when it is a number). A parameter written `<group>:<value>` (ANNOY's
`8:2500` for 8 trees, search_k 2,500; IVF_PQ's `m16:nprobe=4`) makes one line per series and group, labelled
with the group, its points labelled with the value. The y axis is logarithmic. `--only SERIES,…` keeps those
series."""

import argparse
import collections
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curves(paths, only):
    curves = collections.OrderedDict()
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) < 5 or parts[0] != "curve":
                    continue
                series, param, recall, qps = parts[1:5]
                if only and series not in only:
                    continue
                group, sep, value = param.rpartition(":")
                try:
                    curves.setdefault((series, group), []).append((float(recall), float(qps), value))
                except ValueError:
                    continue
    return curves


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", help="comma-separated series to draw (default: all)")
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    curves = read_curves(args.inputs, set(args.only.split(",")) if args.only else None)
    if not curves:
        sys.exit("no curve lines in " + ", ".join(args.inputs))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    def param_order(point):
        number = point[2].rpartition("=")[2]
        try:
            return (0, float(number), "")
        except ValueError:
            return (1, 0.0, point[2])

    # One colour per group (per series without groups), one line style per series, so ours and the
    # anchor at one setting pair up.
    colours = {}
    styles = {}
    for (series, group), points in curves.items():
        colour = colours.setdefault(group or series, f"C{len(colours) % 10}")
        style = styles.setdefault(series, ["-", "--", ":", "-."][len(styles) % 4])
        points.sort(key=param_order)
        label = f"{series} {group}" if group else series
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour, linestyle=style, label=label)
        for recall, qps, param in points:
            ax.annotate(param.rpartition("=")[2], (recall, qps), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (log)")
    ax.set_title(args.title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
