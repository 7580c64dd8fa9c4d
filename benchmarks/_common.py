"""Shared set-up of the benchmarks: data, the reference model, and timing helpers."""

import os
import sys
from pathlib import Path

import torch

from dgmkit.config import RunConfig
from dgmkit.data import load_dataset

# The model of both speed benchmarks: 784-512-256-32 MLP VAE, Bernoulli likelihood.
REFERENCE = RunConfig.of(
    dataset="binarized-mnist",
    likelihood="bernoulli",
    encoder="mlp",
    hidden=[512, 256],
    latent_dim=32,
    batch_size=128,
    lr=1e-3,
    device="cpu",
)


def data_dir() -> str:
    env = os.environ.get("DGMKIT_DATA")
    if env:
        return env
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if shared.is_dir():
        return str(shared)
    sys.exit("set DGMKIT_DATA to the folder holding binarized_mnist/*.amat(.gz)")


def binarized_mnist():
    return load_dataset("binarized-mnist", data_dir(), download=False)


def machine() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"
