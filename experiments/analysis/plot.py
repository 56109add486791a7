#!/usr/bin/env python3
"""Figures of an experiment, from runs/<experiment>/summary.h5 (written by `dsmoe analyze`) and
each run's metrics.h5 (read as an SWMR reader, so a sweep still running can be plotted).

    python3 experiments/analysis/plot.py runs/<experiment> [--out DIR]

Writes to DIR (default runs/<experiment>/plots) and prints the path of each file written:
  <metric>.png       the compared metric (summary.h5's `metric`, e.g. final_val_loss.png): every
                     run as a point (unfinished runs hollow, apart, never in the mean) and each
                     variant's mean with its confidence interval over its finished seeds, n
                     beside it, the baseline marked
  delta.png          each variant minus the baseline with its interval, a line at 0, the verdict,
                     n and p beside it (not written without a baseline to compare with)
  delta_curves.png   each variant's validation loss minus the baseline's at every evaluation,
                     paired by seed, with its interval as a band; filled markers where the
                     interval excludes 0 (not written where no seeds pair)
  loss_curves.png    training and validation loss against tokens: per variant the mean over its
                     finished seeds with a t-interval band; unfinished runs dashed, one per run
  expert_load.png    a row per MoE variant (its first finished run), a column per MoE layer: each
                     expert's load / the layer's mean load against step, one log colour scale
                     centred at 1 for all cells (not written when no variant has experts)
Each variant keeps one colour and position, in the experiment file's order, in every figure.
Needs numpy, h5py and matplotlib (Debian: python3-h5py python3-matplotlib; pip: h5py matplotlib).
"""
import argparse
import importlib.util
import math
import os
import sys

MISSING = [m for m in ("numpy", "h5py", "matplotlib") if importlib.util.find_spec(m) is None]
if MISSING:
    OTHER = " (Debian's python3 is /usr/bin/python3)" if sys.executable != "/usr/bin/python3" else ""
    sys.exit(f"plot.py: {sys.executable} has no {', '.join(MISSING)}. Install them (Debian: "
             "apt-get install python3-h5py python3-matplotlib; pip: pip install h5py matplotlib), "
             f"or run plot.py with a python3 that has them{OTHER}.")

import h5py  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                     "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 10,
                     "savefig.dpi": 200, "savefig.bbox": "tight", "savefig.pad_inches": 0.05})
WIDTH = 7.0             # inches: a paper's text width
CUT_FRACTION = 0.1      # loss curves: the y range covers the losses from this fraction of the tokens on
VERDICT_COLOURS = {"better": "#1a7f37", "worse": "#c62828", "unresolved": "#555555"}
GROUP_LINE = "#00b000"   # device-group boundaries in the expert-load heatmaps


def die(message):
    sys.exit(f"plot.py: {message}")


def note(message):
    print(f"plot.py: {message}", file=sys.stderr)


# --- Reading -------------------------------------------------------------------------------------

def has_runs(folder):
    return any(os.path.exists(os.path.join(folder, d, "metrics.h5")) for d in os.listdir(folder))


def experiment_folder(arg):
    """The experiment folder named by arg, or exit saying what to pass instead."""
    folder = os.path.normpath(arg)
    if not os.path.isdir(folder):
        die(f"{folder}: no such folder; pass runs/<experiment>, the folder of a sweep's runs")
    if os.path.exists(os.path.join(folder, "metrics.h5")):
        die(f"{folder} is one run's folder; pass its experiment's folder: {os.path.dirname(os.path.abspath(folder))}")
    if os.path.exists(os.path.join(folder, "summary.h5")) or has_runs(folder):
        return folder
    inside = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
                    and has_runs(os.path.join(folder, d)))
    if inside:
        die(f"{folder} holds experiments, not runs; pass one of: "
            + ", ".join(os.path.join(folder, d) for d in inside))
    die(f"{folder} has no runs (no <run>/metrics.h5) and no summary.h5; pass runs/<experiment> of a sweep")


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_table(group):
    """{column: array} of an HDF5 group of equal-length columns; strings as lists of str."""
    return {name: [text(v) for v in d[:]] if h5py.check_string_dtype(d.dtype) else d[:]
            for name, d in group.items()}


def rows(table):
    columns = list(table)
    return [dict(zip(columns, values)) for values in zip(*table.values())] if columns else []


def read_summary(folder):
    path = os.path.join(folder, "summary.h5")
    analyze = f"`dsmoe analyze {folder}`"
    if not os.path.exists(path):
        die(f"{path}: missing; run {analyze} first")
    try:
        with h5py.File(path, "r") as f:
            if "metric" not in f.attrs or "order/variant" not in f or "runs/value" not in f:
                die(f"{path} was written by an older `dsmoe analyze` (no metric, /order or /runs/value); "
                    f"run {analyze} again with a dsmoe built from this checkout")
            summary = {key: text(f.attrs[key]) for key in ("experiment", "metric", "metric_label", "baseline")}
            summary["lower_is_better"] = bool(f.attrs["lower_is_better"])
            summary["confidence"] = float(f.attrs["confidence"])
            summary["order"] = [text(v) for v in f["order/variant"][:]]
            summary["variants"] = {r["variant"]: r for r in rows(read_table(f["variants"]))} if "variants" in f else {}
            summary["runs"] = rows(read_table(f["runs"]))
            summary["curves"] = rows(read_table(f["curves"])) if "curves" in f else []
    except OSError as e:
        die(f"{path}: cannot read it ({e}); run {analyze} again")
    if not summary["runs"]:
        die(f"{path} lists no runs; run {analyze} after the sweep has started some")
    summary["order"] += [r["variant"] for r in summary["runs"] if r["variant"] not in summary["order"]]
    return summary


def read_metrics(path):
    """{group: {column: array}} of a run's metrics.h5, each group cut to its step dataset's length
    (the writer extends `step` last, so its rows are complete); None if it cannot be read."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            out = {}
            for group, columns in (("train", ("tokens", "loss")), ("eval", ("loss",)), ("experts", ("load",))):
                if group + "/step" in f:
                    n = len(f[group + "/step"])
                    out[group] = {c: f[f"{group}/{c}"][:n] for c in ("step",) + columns}
            return out
    except OSError as e:
        note(f"{path}: cannot read it ({e}); its run is left out of the curves")
        return None


def read_all_metrics(folder, runs):
    metrics = {}
    for run in runs:
        path = os.path.join(folder, run["run"], "metrics.h5")
        if os.path.exists(path):
            metrics[run["run"]] = read_metrics(path)
    return metrics


# --- Statistics and labels -----------------------------------------------------------------------

def t_central(t, df):
    """P(|T| < t) for Student's t with an integer df (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    term, total = math.cos(theta), 0.0
    for k in range(1, (df - 1) // 2 + 1):
        total += term
        term *= c2 * (2 * k) / (2 * k + 1)
    return 2 / math.pi * (theta + math.sin(theta) * total)


def t_quantile(confidence, df):
    """t such that P(|T| < t) = confidence (bisection)."""
    lo, hi = 0.0, 1e7
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def percent(confidence):
    return f"{100 * confidence:g} %"


def tokens_text(x, _pos=None):
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def colours_of(order):
    palette = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
    return {v: palette(i % palette.N) for i, v in enumerate(order)}


def runs_of(summary, variant):
    return [r for r in summary["runs"] if r["variant"] == variant]


def unfinished_text(runs):
    """'2 unfinished (step 150 of 400)' for the unfinished runs among runs, '' if none."""
    late = [r for r in runs if not r["finished"]]
    if not late:
        return ""
    steps = sorted({int(r["step"]) for r in late if np.isfinite(r["step"])})
    at = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}" if steps else "no step yet"
    return f"{len(late)} unfinished ({at} of {int(late[0]['steps'])})"


def variant_ticks(ax, summary, right_labels):
    """Variants top to bottom on the y axis (the baseline's name bold), right_labels beside the axes."""
    order = summary["order"]
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([f"{v} (baseline)" if v == summary["baseline"] else v for v in order])
    for label, v in zip(ax.get_yticklabels(), order):
        label.set_fontweight("bold" if v == summary["baseline"] else "normal")
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(order)))
    right.set_yticklabels(right_labels)
    right.tick_params(length=0)
    return right


def save(fig, path):
    fig.savefig(path)
    plt.close(fig)
    print(path, flush=True)


# --- The metric ----------------------------------------------------------------------------------

def n_text(summary, variant):
    runs = runs_of(summary, variant)
    if not runs:
        return "no runs"
    row = summary["variants"].get(variant)
    n = int(row["n"]) if row else 0
    parts = ["no finished run" if n == 0 else "n=1, no CI" if n == 1 else f"n={n}", unfinished_text(runs)]
    return "; ".join(p for p in parts if p)


def plot_metric(summary, colours, path):
    order, conf = summary["order"], summary["confidence"]
    fig, ax = plt.subplots(figsize=(WIDTH, 1.3 + 0.4 * len(order)), constrained_layout=True)
    for i, v in enumerate(order):
        runs = [r for r in runs_of(summary, v) if np.isfinite(r["value"])]
        done = [r["value"] for r in runs if r["finished"]]
        late = [r["value"] for r in runs if not r["finished"]]
        jitter = np.linspace(-0.06, 0.06, len(done)) if len(done) > 1 else np.zeros(len(done))
        ax.scatter(done, i - 0.2 + jitter, s=22, color=colours[v], alpha=0.8, lw=0, zorder=3)
        ax.scatter(late, np.full(len(late), i + 0.28), s=22, facecolors="none", edgecolors=colours[v],
                   lw=1.1, zorder=3)
        row = summary["variants"].get(v)
        if row is not None and np.isfinite(row["mean"]):
            lo, hi = row["ci_low"], row["ci_high"]
            err = [[row["mean"] - lo], [hi - row["mean"]]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(row["mean"], i + 0.04, xerr=err, fmt="D", ms=6, color=colours[v], mec="black", mew=0.8,
                        ecolor="black", elinewidth=1.2, capsize=4, zorder=4)
    base = summary["variants"].get(summary["baseline"])
    if base is not None and np.isfinite(base["mean"]):
        ax.axvline(base["mean"], color="0.4", ls=":", lw=1, zorder=1)
    variant_ticks(ax, summary, [n_text(summary, v) for v in order])
    ax.margins(x=0.08)
    ax.grid(axis="x", alpha=0.3)
    better = "lower" if summary["lower_is_better"] else "higher"
    ax.set_xlabel(f"{summary['metric_label']}  ({better} is better)")
    fig.suptitle(f"{summary['experiment']}: {summary['metric_label']}, per variant")
    finished = {bool(r["finished"]) for r in summary["runs"] if np.isfinite(r["value"])}
    handles = [Line2D([], [], ls="", marker="o", color="0.3", label="finished run (one seed)")] * (True in finished)
    handles += [Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", label="unfinished run (not in the mean)")
                ] * (False in finished)
    if summary["variants"]:
        handles.append(Line2D([], [], ls="-", marker="D", color="black", mfc="0.6",
                              label=f"mean over finished runs, {percent(conf)} t-interval"))
    if base is not None and np.isfinite(base["mean"]):
        handles.append(Line2D([], [], ls=":", color="0.4", label="baseline mean"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    save(fig, path)


# --- The difference from the baseline ------------------------------------------------------------

def comparable(row):
    return row is not None and row["delta_method"] in ("paired", "welch") and np.isfinite(row["delta_mean"])


def delta_text(summary, variant):
    row = summary["variants"].get(variant)
    if variant == summary["baseline"]:
        return "baseline"
    if not comparable(row):
        return "no comparison" if row else "no finished run"
    n = int(row["delta_n"])
    unit = f"{n} pair{'s' * (n != 1)}" if row["delta_method"] == "paired" else f"{n} runs, Welch"
    p = f", p={row['p_value']:.2g}" if np.isfinite(row["p_value"]) else ", no CI" if n < 2 else ""
    return f"{row['verdict'] or 'no verdict'}\nn={unit}{p}"


def plot_delta(summary, colours, path):
    order, conf = summary["order"], summary["confidence"]
    fig, ax = plt.subplots(figsize=(WIDTH, 1.3 + 0.4 * len(order)), constrained_layout=True)
    ax.axvline(0, color="black", lw=1, zorder=1)
    for i, v in enumerate(order):
        row = summary["variants"].get(v)
        if not comparable(row):
            continue
        lo, hi, mean = row["delta_ci_low"], row["delta_ci_high"], row["delta_mean"]
        err = [[mean - lo], [hi - mean]] if np.isfinite(lo) and np.isfinite(hi) else None
        ax.errorbar(mean, i, xerr=err, fmt="o", ms=6, color=colours[v], mec="black", mew=0.8,
                    ecolor=colours[v], elinewidth=2, capsize=4, zorder=3)
    right = variant_ticks(ax, summary, [delta_text(summary, v) for v in order])
    for label, v in zip(right.get_yticklabels(), order):
        row = summary["variants"].get(v)
        label.set_color(VERDICT_COLOURS.get(row["verdict"] if row else "", "black"))
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"difference in {summary['metric_label']}:\nvariant minus baseline ({summary['baseline']}), "
                  f"mean and {percent(conf)} interval")
    left, right_word = ("better", "worse") if summary["lower_is_better"] else ("worse", "better")
    ax.text(0, 1.01, f"\u2190 {left}", transform=ax.transAxes, ha="left", va="bottom")
    ax.text(1, 1.01, f"{right_word} \u2192", transform=ax.transAxes, ha="right", va="bottom")
    ax.set_title(f"{summary['experiment']}: difference from the baseline\n")
    save(fig, path)


def plot_delta_curves(summary, colours, path):
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2), constrained_layout=True)
    ax.axhline(0, color="black", lw=1, zorder=1)
    # The y range: every mean, and the bands from CUT_FRACTION of the steps on (the first
    # evaluations' intervals are wide and would flatten the rest).
    last = max(r["step"] for r in summary["curves"])
    shown = [0.0] + [r["delta_mean"] for r in summary["curves"]]
    shown += [x for r in summary["curves"] if r["step"] >= CUT_FRACTION * last
              for x in (r["delta_ci_low"], r["delta_ci_high"]) if np.isfinite(x)]
    pad = 0.08 * (max(shown) - min(shown) or 1.0)
    ax.set_ylim(min(shown) - pad, max(shown) + pad)
    for v in summary["order"]:
        points = [r for r in summary["curves"] if r["variant"] == v]
        if not points:
            continue
        step = np.array([r["step"] for r in points])
        mean = np.array([r["delta_mean"] for r in points])
        ax.fill_between(step, [r["delta_ci_low"] for r in points], [r["delta_ci_high"] for r in points],
                        color=colours[v], alpha=0.15, lw=0)
        ax.plot(step, mean, color=colours[v], lw=1.5, label=f"{v} (n={int(points[-1]['n'])})")
        resolved = np.array([r["verdict"] != "unresolved" for r in points])
        ax.plot(step[resolved], mean[resolved], "o", color=colours[v], ms=4)
        ax.plot(step[~resolved], mean[~resolved], "o", mfc="white", color=colours[v], ms=4)
    ax.grid(alpha=0.3)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation loss minus\n{summary['baseline']}'s (paired)")
    ax.legend(loc="best", frameon=False)
    ax.set_title(f"{summary['experiment']}: difference from the baseline at each evaluation, "
                 f"{percent(summary['confidence'])} interval; filled: the interval excludes 0")
    save(fig, path)


# --- Loss curves ---------------------------------------------------------------------------------

def eval_tokens(m):
    """Tokens seen at each eval, from the training rows' (step, tokens), with (0, 0) before them."""
    steps = np.concatenate(([0], m["train"]["step"]))
    tokens = np.concatenate(([0], m["train"]["tokens"]))
    return np.interp(m["eval"]["step"], steps, tokens)


def smoothing_window(metrics):
    """An odd number of logged training steps, about 1/20 of the longest run's, to average over."""
    longest = max((len(m["train"]["step"]) for m in metrics.values() if m and "train" in m), default=0)
    return 2 * (longest // 40) + 1


def moving_average(values, window):
    """Centred moving average; the ends, without a full window, are dropped."""
    return np.convolve(values, np.ones(window) / window, mode="valid") if window > 1 else values


def curve(m, group, window):
    """(step, tokens, loss) of a run's training rows (a moving average over `window` rows) or its
    validation rows; None if it has none."""
    if not m or "train" not in m or len(m["train"]["step"]) == 0 or len(m.get(group, {}).get("step", [])) == 0:
        return None
    if group == "eval":
        return m["eval"]["step"], eval_tokens(m), m["eval"]["loss"]
    train, cut = m["train"], window // 2
    if len(train["step"]) < window:
        return None
    centre = slice(cut, len(train["step"]) - cut)
    return train["step"][centre], train["tokens"][centre].astype(float), moving_average(train["loss"], window)


def mean_band(curves, confidence):
    """Tokens, mean, low, high over the runs' curves at the steps they all have (no band for one)."""
    steps = curves[0][0]
    for s, _, _ in curves[1:]:
        steps = np.intersect1d(steps, s)
    picked = [np.searchsorted(s, steps) for s, _, _ in curves]
    tokens = np.mean([t[i] for (_, t, _), i in zip(curves, picked)], axis=0)
    losses = np.array([y[i] for (_, _, y), i in zip(curves, picked)])
    mean = losses.mean(axis=0)
    if len(curves) < 2:
        return tokens, mean, None, None
    half = t_quantile(confidence, len(curves) - 1) * losses.std(axis=0, ddof=1) / math.sqrt(len(curves))
    return tokens, mean, mean - half, mean + half


def plot_loss_panel(ax, summary, metrics, colours, group, window):
    """One panel's lines and bands; returns the (tokens, loss) of its lines and of its bands' edges."""
    lines, bands, marker = [], [], "o" if group == "eval" else None
    alpha = 0.2 if len(summary["order"]) <= 5 else 0.1  # many overlapping bands: lighter
    for v in summary["order"]:
        curves = [(r, curve(metrics.get(r["run"]), group, window)) for r in runs_of(summary, v)]
        done = [c for r, c in curves if c is not None and r["finished"]]
        late = [c for r, c in curves if c is not None and not r["finished"]]
        n_late = f" + {len(late)} unfinished" if late else ""
        if done:
            tokens, mean, lo, hi = mean_band(done, summary["confidence"])
            ax.plot(tokens, mean, color=colours[v], lw=1.4, marker=marker, ms=3,
                    label=f"{v} (n={len(done)}{', no band' if len(done) == 1 else ''}{n_late})")
            lines.append((tokens, mean))
            if lo is not None:
                ax.fill_between(tokens, lo, hi, color=colours[v], alpha=alpha, lw=0)
                bands += [(tokens, lo), (tokens, hi)]
        for k, (_, tokens, loss) in enumerate(late):
            label = f"{v} ({len(late)} unfinished)" if not done and k == 0 else None
            ax.plot(tokens, loss, color=colours[v], lw=1, ls="--", marker=marker, ms=2.5, mfc="none", label=label)
            lines.append((tokens, loss))
    return lines, bands


def loss_span(curves, start):
    """Lowest loss of the curves, and highest from tokens >= start on."""
    late = np.concatenate([y[t >= start] for t, y in curves])
    return min(y.min() for _, y in curves), late.max() if len(late) else max(y.max() for _, y in curves)


def set_loss_range(ax, lines, bands):
    """A log y axis that shows the lines from CUT_FRACTION of the tokens on (so that the first
    steps' high loss does not flatten the differences at the end) and their bands, except where a
    band (of two seeds, say) reaches further than half the lines' span beyond them: there it is cut
    by the axes. True if a line was cut at the top."""
    start = CUT_FRACTION * max(t.max() for t, _ in lines)
    bottom, top = loss_span(lines, start)
    if bands:
        reach = math.sqrt(top / bottom)
        band_bottom, band_top = loss_span(bands, start)
        bottom, top = max(min(bottom, band_bottom), bottom / reach), min(max(top, band_top), top * reach)
    ax.set_yscale("log")
    ax.set_ylim(bottom / 1.02, top * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(7))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlim(left=0)
    return any(y.max() > top * 1.05 for _, y in lines)


def plot_loss_curves(summary, metrics, colours, path):
    """Training above validation, each with its legend to its right."""
    order = summary["order"]
    fig, axes = plt.subplots(2, 1, constrained_layout=True, figsize=(WIDTH, 5.4 + 0.12 * max(0, len(order) - 8)))
    window = smoothing_window(metrics)
    dashed = any(not r["finished"] for r in summary["runs"])
    train_title = "training loss" + (f", moving average over {window} logged steps" if window > 1 else "")
    for ax, group, title in zip(axes, ("train", "eval"), (train_title, "validation loss")):
        lines, bands = plot_loss_panel(ax, summary, metrics, colours, group, window)
        if not lines:
            ax.text(0.5, 0.5, "nothing logged yet", transform=ax.transAxes, ha="center", va="center")
            ax.set_title(title)
            continue
        cut = set_loss_range(ax, lines, bands)
        ax.set_title(title + (f"\n(before {100 * CUT_FRACTION:g} % of the tokens: above the top)" if cut else ""))
        ax.xaxis.set_major_formatter(FuncFormatter(tokens_text))
        ax.set_xlabel("tokens seen in training")
        ax.set_ylabel("cross-entropy (nats/token, log scale)")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if dashed:
            handles.append(Line2D([], [], color="0.3", ls="--", label="unfinished run (one seed)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    band = f"mean over finished seeds, {percent(summary['confidence'])} t-interval band"
    fig.suptitle(f"{summary['experiment']}: loss against tokens ({band})")
    save(fig, path)


# --- Expert load ---------------------------------------------------------------------------------

def load_share(load):
    """load / the mean over experts of its step and layer; NaN where the layer had no load."""
    mean = load.mean(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, load / mean, np.nan)


def expert_steps(m):
    """How many expert rows a run's metrics have (0 for a dense run or one not read)."""
    return len(m["experts"]["step"]) if m and "experts" in m else 0


def expert_rows(summary, metrics):
    """[(variant, run, share [steps, layers, experts], steps)] of the first finished run of each
    MoE variant with expert rows (else its first run), and the dense variants' names."""
    chosen, dense = [], []
    for v in summary["order"]:
        runs = runs_of(summary, v)
        if runs and all(not r["n_routed"] > 0 for r in runs):
            dense.append(v)
            continue
        logged = [r for r in runs if expert_steps(metrics.get(r["run"]))]
        if not logged:
            if runs:
                note(f"expert_load.png: {v} has no expert rows yet; left out")
            continue
        run = next((r for r in logged if r["finished"]), logged[0])
        experts = metrics[run["run"]]["experts"]
        chosen.append((v, run, load_share(experts["load"]), experts["step"]))
    return chosen, dense


def cell_edges(centres):
    """Edges of cells centred on sorted positions (a width of 1 for a single one)."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate(([2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]))


def colour_range(chosen):
    """The colour scale's [1/r, r]: r the smallest power of 2 >= 2 at or above the largest load
    share (at most n_routed / top_k), and the colour bar's `extend`: "min" where some expert is
    below 1/r (it takes the end colour, which the bar's pointed end shows)."""
    shares = np.concatenate([s[np.isfinite(s) & (s > 0)].ravel() for _, _, s, _ in chosen])
    if len(shares) == 0:
        return 2.0, "neither"
    r = 2.0 ** max(1, math.ceil(math.log2(shares.max()) - 1e-9))
    return r, "min" if shares.min() < 1 / r else "neither"


def fraction_text(x, _pos=None):
    return f"{x:g}" if x >= 1 else f"1/{1 / x:g}"


def blank_cell(ax, message):
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")


def draw_load_cell(ax, share, steps, run, norm, cmap):
    n_routed = share.shape[1]
    mesh = ax.pcolormesh(cell_edges(steps.astype(float)), np.arange(n_routed + 1) - 0.5, share.T,
                         norm=norm, cmap=cmap, rasterized=True)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=min(n_routed, 6), integer=True, steps=[1, 2, 4, 5, 10]))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=2, integer=True))  # narrow panels: 3 labels at most
    groups = int(run["device_groups"]) if np.isfinite(run["device_groups"]) else 0
    for k in range(1, groups):
        ax.axhline(k * n_routed / groups - 0.5, color=GROUP_LINE, lw=1.4, ls="--")
    return mesh


def row_label(variant, run):
    state = "" if run["finished"] else ", unfinished"
    groups = int(run["device_groups"]) if np.isfinite(run["device_groups"]) else 0
    split = f"\n{groups} device groups" if groups > 1 else ""
    return f"{variant}\nrun {run['run']}{state}{split}\n\nexpert id"


def plot_expert_load(summary, chosen, dense, path):
    starts = {v: int(run["first_moe_layer"]) if np.isfinite(run["first_moe_layer"]) else 0
              for v, run, _, _ in chosen}
    layers = sorted({starts[v] + i for v, _, share, _ in chosen for i in range(share.shape[1])})
    height = max(1.6, min(3.0, 0.9 + 0.03 * max(s.shape[2] for _, _, s, _ in chosen)))
    width = 1.9 if len(layers) <= 4 else 1.3
    fig, axes = plt.subplots(len(chosen), len(layers), squeeze=False, constrained_layout=True,
                             figsize=(max(WIDTH, 2.2 + width * len(layers)), 0.9 + height * len(chosen)))
    r, extend = colour_range(chosen)
    norm = LogNorm(vmin=1 / r, vmax=r)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("black")
    for row, ((v, run, share, steps), row_axes) in enumerate(zip(chosen, axes)):
        for column, (ax, layer) in enumerate(zip(row_axes, layers)):
            i = layer - starts[v]
            ax.set_title(f"layer {layer}")
            if 0 <= i < share.shape[1]:
                mesh = draw_load_cell(ax, share[:, i, :], steps, run, norm, cmap)
                ax.set_xlabel("training step" if row == len(chosen) - 1 else "")
            else:
                blank_cell(ax, "dense layer" if i < 0 else "no such layer")
            if column == 0:
                ax.set_ylabel(row_label(v, run), rotation=0, ha="right", va="center")
    ticks = [2.0 ** k for k in range(-int(math.log2(r)), int(math.log2(r)) + 1)]
    stride = math.ceil(len(ticks) / 9)
    bar = fig.colorbar(mesh, ax=axes.ravel().tolist(), extend=extend, shrink=min(1.0, 4 / len(chosen)), aspect=30)
    bar.set_ticks(ticks[len(ticks) // 2 % stride::stride])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(fraction_text))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.set_label("expert load / mean load\nof its layer (log scale)")
    keys = ["black: no tokens"] * any(np.any(np.isfinite(s) & (s == 0)) for _, _, s, _ in chosen)
    keys += ["green dashes: device-group boundaries"] * any(
        np.isfinite(run["device_groups"]) and run["device_groups"] > 1 for _, run, _, _ in chosen)
    lines = [f"{summary['experiment']}: expert load per logged step", "; ".join(keys)]
    lines.append(f"dense variants, no experts: {', '.join(dense)}" if dense else "")
    fig.suptitle("\n".join(line for line in lines if line))
    save(fig, path)


# --- Main ----------------------------------------------------------------------------------------

def not_written(path, why):
    """Says why a figure is not written, and removes an older one of that name (it would mislead)."""
    stale = os.path.exists(path)
    if stale:
        os.remove(path)
    note(f"{os.path.basename(path)}: not written ({why})" + ("; removed the older one" if stale else ""))


def file_name(metric):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in metric) or "metric"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="runs/<experiment>, after `dsmoe analyze` of it")
    parser.add_argument("--out", help="folder for the PNGs (default: FOLDER/plots)")
    args = parser.parse_args()
    folder = experiment_folder(args.folder)
    summary = read_summary(folder)
    out = args.out or os.path.join(folder, "plots")
    os.makedirs(out, exist_ok=True)
    colours = colours_of(summary["order"])
    metrics = read_all_metrics(folder, summary["runs"])

    metric_png = os.path.join(out, file_name(summary["metric"]) + ".png")
    if any(np.isfinite(r["value"]) for r in summary["runs"]):
        plot_metric(summary, colours, metric_png)
    else:
        not_written(metric_png, f"no run has a {summary['metric']} yet")

    delta_png = os.path.join(out, "delta.png")
    if not summary["baseline"]:
        not_written(delta_png, "the experiment has no baseline")
    elif not any(comparable(row) for row in summary["variants"].values()):
        not_written(delta_png, f"no variant can be compared with the baseline {summary['baseline']} yet")
    else:
        plot_delta(summary, colours, delta_png)

    curves_png = os.path.join(out, "delta_curves.png")
    if summary["curves"]:
        plot_delta_curves(summary, colours, curves_png)
    else:
        not_written(curves_png, "no variant has two or more seeds paired with the baseline's at an evaluation")

    plot_loss_curves(summary, metrics, colours, os.path.join(out, "loss_curves.png"))

    chosen, dense = expert_rows(summary, metrics)
    if dense:
        note(f"expert_load.png: dense variants have no experts, left out: {', '.join(dense)}")
    load_png = os.path.join(out, "expert_load.png")
    if chosen:
        plot_expert_load(summary, chosen, dense, load_png)
    else:
        not_written(load_png, "no variant with experts has logged expert loads")


if __name__ == "__main__":
    main()
