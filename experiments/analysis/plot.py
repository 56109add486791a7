#!/usr/bin/env python3
"""Plots of a sweep, from runs/<experiment>/summary.h5 (written by `dsmoe analyze`) and each
run's metrics.h5 (read as an SWMR reader, so runs still going can be plotted).

    python3 experiments/analysis/plot.py runs/<experiment> [--out DIR]

Writes to DIR (default runs/<experiment>/plots):
  loss_curves.png          training and validation loss against tokens, one colour per variant
  val_loss.png             final validation loss per variant (mean over seeds, spread as error bar)
  expert_load_<run>.png    per MoE layer, each expert's load / mean load over the logged steps
                           (the first run of each variant)
Needs h5py and matplotlib (Debian: python3-h5py python3-matplotlib).
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def strings(dataset):
    return [s.decode() if isinstance(s, bytes) else s for s in dataset[:]]


def read_summary(folder):
    path = os.path.join(folder, "summary.h5")
    if not os.path.exists(path):
        sys.exit(f"{path}: missing; run `dsmoe analyze {folder}` first")
    with h5py.File(path, "r") as f:
        variants = {k: (strings(v) if k == "variant" else v[:]) for k, v in f["variants"].items()}
        runs = {k: (strings(v) if k in ("run", "variant") else v[:]) for k, v in f["runs"].items()}
    return variants, runs


def read_metrics(path):
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        out = {}
        n = len(f["train/step"])  # rows are complete up to the step dataset's length
        for name in ("step", "loss", "tokens"):
            out["train/" + name] = f["train/" + name][:n]
        n = len(f["eval/step"])
        out["eval/step"], out["eval/loss"] = f["eval/step"][:n], f["eval/loss"][:n]
        if "experts" in f:
            n = len(f["experts/step"])
            out["experts/step"], out["experts/load"] = f["experts/step"][:n], f["experts/load"][:n]
    return out


def tokens_per_step(m):
    steps, tokens = m["train/step"], m["train/tokens"]
    return tokens[-1] / steps[-1] if len(steps) else 0


def plot_loss_curves(folder, runs, colours, out):
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
    labelled = set()
    for run, variant in zip(runs["run"], runs["variant"]):
        m = read_metrics(os.path.join(folder, run, "metrics.h5"))
        label = None if variant in labelled else variant
        labelled.add(variant)
        ax_train.plot(m["train/tokens"], m["train/loss"], color=colours[variant], lw=0.8, alpha=0.8, label=label)
        if len(m["eval/step"]):
            ax_val.plot(m["eval/step"] * tokens_per_step(m), m["eval/loss"], "o-", color=colours[variant], ms=3,
                        lw=1, label=label)
    for ax, title in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_xlabel("tokens")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_val_loss(variants, colours, out):
    names = variants["variant"]
    mean, spread = variants["final_val_loss_mean"], variants["final_val_loss_spread"]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(mean), yerr=np.nan_to_num(spread), color=[colours[n] for n in names], capsize=4)
    finite = mean[np.isfinite(mean)]
    if len(finite):
        lo, hi = finite.min(), finite.max()
        pad = max(0.02, (hi - lo) * 0.5)
        ax.set_ylim(lo - pad, hi + pad)
    for i, v in enumerate(mean):
        if np.isfinite(v):
            ax.text(i, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("final validation loss (mean over seeds)")
    ax.set_title("validation loss per variant, best first")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_expert_load(path, run, out):
    m = read_metrics(path)
    if "experts/load" not in m or len(m["experts/step"]) == 0:
        return False
    load = m["experts/load"]  # [rows, layers, experts]
    share = load / np.maximum(load.mean(axis=2, keepdims=True), 1e-12)
    layers = share.shape[1]
    fig, axes = plt.subplots(layers, 1, figsize=(10, 1.2 + 2.2 * layers), squeeze=False)
    steps = m["experts/step"]
    half = (steps[-1] - steps[0]) / max(1, len(steps) - 1) / 2 or 0.5  # each row a cell centred on its step
    for li in range(layers):
        ax = axes[li][0]
        im = ax.imshow(share[:, li, :].T, aspect="auto", origin="lower", cmap="viridis",
                       extent=(steps[0] - half, steps[-1] + half, -0.5, share.shape[2] - 0.5))
        ax.set_ylabel(f"MoE layer {li}\nexpert")
        fig.colorbar(im, ax=ax, label="load / mean")
    axes[-1][0].set_xlabel("step")
    axes[0][0].set_title(f"{run}: expert load")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="runs/<experiment>, after `dsmoe analyze` of it")
    parser.add_argument("--out", help="folder for the PNGs (default: FOLDER/plots)")
    args = parser.parse_args()
    out = args.out or os.path.join(args.folder, "plots")
    os.makedirs(out, exist_ok=True)
    variants, runs = read_summary(args.folder)
    palette = plt.get_cmap("tab10")
    colours = {v: palette(i % 10) for i, v in enumerate(variants["variant"])}
    written = [os.path.join(out, "loss_curves.png"), os.path.join(out, "val_loss.png")]
    plot_loss_curves(args.folder, runs, colours, written[0])
    plot_val_loss(variants, colours, written[1])
    seen = set()
    for run, variant in zip(runs["run"], runs["variant"]):
        if variant in seen:
            continue
        seen.add(variant)
        png = os.path.join(out, f"expert_load_{run}.png")
        if plot_expert_load(os.path.join(args.folder, run, "metrics.h5"), run, png):
            written.append(png)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
