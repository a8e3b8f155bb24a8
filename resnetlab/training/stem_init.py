"""A data-dependent start for the stem: its filters along the principal components of
the training images' patches.

After He initialization (§3.4) the first conv's filters point in random directions of
the k x k x C patch space, so its channels are correlated copies of a few dominant
directions (mostly local brightness). Patch-whitening initializations (Page's
DAWNBench ResNet, Keller Jordan's airbench) start the first layer on the leading
principal components instead, which speeds up short runs of their nets (on ResNet-20's
`fast` recipe it measured no gain: BENCHMARKS.md, issue #16). Here the stem stays a normal,
trained conv followed by BN (the model is unchanged): only its starting directions
change. Each component is used twice, as +v and -v, so that the ReLU after BN passes
both halves of it (airbench does the same); every filter keeps the norm He's
initialization gave it on average, so the optimiser's step sizes for the stem are those
of the He-initialized net.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data.preprocess import Preprocessing

SAMPLE_IMAGES = 5000  # evenly spaced over the split; the covariance is 27x27 for 3x3 RGB
CHUNK = 500


@torch.no_grad()
def patch_principal_components(
    images: torch.Tensor, preprocessing: Preprocessing, kernel: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and unit eigenvectors [D, D] (one per row, D = C*k*k, in
    conv weight order) of the covariance of all k x k patches of the normalized
    ``images`` (uint8 [N,C,H,W]); at most ``SAMPLE_IMAGES`` images, evenly spaced."""
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to take patch statistics from")
    picked = images[torch.linspace(0, n - 1, min(n, SAMPLE_IMAGES)).round().long()]
    dim = picked.shape[1] * kernel * kernel
    total = torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    for i in range(0, picked.shape[0], CHUNK):
        x = preprocessing.normalize(picked[i : i + CHUNK].cpu())
        patches = F.unfold(x, kernel).transpose(1, 2).reshape(-1, dim).double()  # [P, D]
        total += patches.sum(0)
        outer += patches.T @ patches
        count += patches.shape[0]
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = eigenvalues.argsort(descending=True)
    vectors = eigenvectors[:, order].T
    # eigh's signs are arbitrary: make each vector's largest entry positive, for
    # the same filters on every machine
    flip = vectors.gather(1, vectors.abs().argmax(1, keepdim=True)).sign()
    return eigenvalues[order], vectors * flip


@torch.no_grad()
def pca_stem_(conv: nn.Conv2d, images: torch.Tensor, preprocessing: Preprocessing) -> int:
    """Point ``conv``'s filters along +/- the leading principal components of the
    patches of ``images``, each at the mean norm of the current (He) filters. Returns
    how many components were used (out_channels // 2, or one more for an odd count)."""
    out_channels, in_channels, kh, kw = conv.weight.shape
    if kh != kw or conv.groups != 1:
        raise ValueError("the stem must be a square, ungrouped conv")
    if images.shape[1] != in_channels:
        raise ValueError(
            f"the stem takes {in_channels} channels, the images have {images.shape[1]}"
        )
    _, vectors = patch_principal_components(images, preprocessing, kh)
    used = math.ceil(out_channels / 2)
    if used > vectors.shape[0]:
        raise ValueError(
            f"{out_channels} filters need {used} components; {kh}x{kh} patches of "
            f"{in_channels} channels have {vectors.shape[0]}"
        )
    he_norm = conv.weight.flatten(1).norm(dim=1).mean()
    top = vectors[:used].to(conv.weight.dtype)
    filters = torch.cat([top, -top])[:out_channels] * he_norm
    conv.weight.copy_(filters.view_as(conv.weight))
    return used
