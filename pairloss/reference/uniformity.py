"""Uniformity loss (Wang & Isola, ICML 2020): log of the mean Gaussian potential over distinct pairs."""

import math

import torch


def uniformity_loss(x, *, t):
    squared = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (x @ x.T)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    potentials = -t * squared.clamp_min(0)[off_diagonal]
    return torch.logsumexp(potentials, 0) - math.log(potentials.numel())
