"""Rewrites a checkpoint dsmoe wrote as another HDF5 tool writes one: h5py with its default
settings (no libver: HDF5 superblock version 0, the format of a PyTorch conversion script's file).

By default the copy holds only what docs/model.md (Checkpoint) requires, at step 0: the root
attributes format, format_version, step, tokens_seen and config, and the /params datasets; no
last-step attributes (loss, aux_loss, lr, grad_norm), no /optimizer, no /state. With --all it
holds every attribute and dataset of SRC, step included.

usage: python3 tests/h5py_checkpoint.py SRC DST [--all]
(cli_checkpoint_h5py_test; the h5py seeds of tests/fuzz/corpus/checkpoint/)
"""
import sys

import h5py
import numpy as np

REQUIRED_ATTRS = ("format", "format_version", "config")


def copy_datasets(src, dst, group):
    def copy(name, obj):
        if isinstance(obj, h5py.Dataset):
            dst[f"{group}/{name}"] = obj[()]

    src[group].visititems(copy)


def main():
    src_path, dst_path, *flags = sys.argv[1:]
    everything = flags == ["--all"]
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "w") as dst:
        for name, value in src.attrs.items():
            if everything or name in REQUIRED_ATTRS:
                dst.attrs[name] = value
        if not everything:
            dst.attrs["step"] = np.int64(0)
            dst.attrs["tokens_seen"] = np.int64(0)
        for group in src if everything else ["params"]:
            copy_datasets(src, dst, group)
            for name, value in src[group].attrs.items():
                dst[group].attrs[name] = value


if __name__ == "__main__":
    main()
