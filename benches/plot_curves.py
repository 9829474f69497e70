"""Draws recall–QPS curves (ann-benchmarks style) from the `curve,<series>,<param>,<recall>,<qps>` lines
the index benches print, one picture per bench output.

    python benches/plot_curves.py --title "IVF_SQ8 vs faiss" --out docs/bench/ivf_sq8.png bench-output.txt

Lines that are not curve lines are ignored, so a bench's whole output can be given as is. Each series
(ours, anchor, …) is one line through its points in the order of the swept parameter (numeric when it is a
number); the y axis is logarithmic."""

import argparse
import collections
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curves(paths):
    curves = collections.OrderedDict()
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) != 5 or parts[0] != "curve":
                    continue
                _, series, param, recall, qps = parts
                try:
                    curves.setdefault(series, []).append((float(recall), float(qps), param))
                except ValueError:
                    continue
    return curves


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    curves = read_curves(args.inputs)
    if not curves:
        sys.exit("no curve lines in " + ", ".join(args.inputs))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    def param_order(point):
        try:
            return (0, float(point[2]), "")
        except ValueError:
            return (1, 0.0, point[2])

    for series, points in curves.items():
        points.sort(key=param_order)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=series)
        for recall, qps, param in points:
            ax.annotate(param, (recall, qps), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (log)")
    ax.set_title(args.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
