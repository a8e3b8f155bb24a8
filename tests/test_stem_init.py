"""--stem-init pca: the stem starts on the patches' principal axes, at He's norm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, tiny_config
from torch import nn

from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import ResnetlabError
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.loop import train
from resnetlab.training.stem_init import patch_principal_components, pca_stem_

PRE = Preprocessing(mean=[0.5, 0.4, 0.3], std=[0.25, 0.25, 0.25])


def _images(n: int = 40, seed: int = 0) -> torch.Tensor:
    """Smooth, channel-correlated uint8 images, so that a few components dominate."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 8, 8, generator=g)
    smooth = F.interpolate(base, size=16, mode="bilinear", align_corners=False)
    colour = torch.rand(n, 3, 1, 1, generator=g) * 0.5 + 0.5
    noise = torch.rand(n, 3, 16, 16, generator=g) * 0.1
    return ((smooth * colour + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def test_components_are_orthonormal_and_their_conv_outputs_have_their_variance() -> None:
    """Ties the eigenvectors' layout to the conv weight layout: a filter along component
    i gives outputs (on the same patches, no padding) of variance lambda_i, and filters
    along different components give uncorrelated outputs."""
    images = _images()
    values, vectors = patch_principal_components(images, PRE, 3)
    assert vectors.shape == (27, 27)
    assert torch.allclose(vectors @ vectors.T, torch.eye(27, dtype=vectors.dtype), atol=1e-8)
    assert bool((values[:-1] >= values[1:]).all())
    x = PRE.normalize(images).double()
    out = F.conv2d(x, vectors[:6].view(6, 3, 3, 3))  # interior patches, as measured
    flat = out.transpose(0, 1).flatten(1)
    covariance = torch.cov(flat, correction=0)
    assert torch.allclose(covariance.diagonal(), values[:6], rtol=1e-6)
    off = covariance - torch.diag(covariance.diagonal())
    assert off.abs().max() < 1e-6 * values[0]
    assert values[0] > 5 * values[5]  # the images were made with a few dominant axes


def test_stem_filters_are_plus_minus_pairs_at_the_he_norm() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    he_norm = conv.weight.flatten(1).norm(dim=1).mean().item()
    images = _images()
    assert pca_stem_(conv, images, PRE) == 8
    w = conv.weight.detach().flatten(1).double()
    _, vectors = patch_principal_components(images, PRE, 3)
    assert torch.allclose(w[:8], vectors[:8] * he_norm, atol=1e-6)
    assert torch.equal(w[8:], -w[:8])
    assert torch.allclose(w.norm(dim=1), torch.full((16,), he_norm, dtype=w.dtype), rtol=1e-6)


def test_odd_and_too_many_filters() -> None:
    odd = nn.Conv2d(3, 5, 3, bias=False)
    assert pca_stem_(odd, _images(), PRE) == 3
    assert torch.equal(odd.weight[3:5], -odd.weight[0:2])
    with pytest.raises(ValueError, match="need 28 components"):
        pca_stem_(nn.Conv2d(3, 56, 3, bias=False), _images(), PRE)


def test_a_run_starts_from_the_pca_stem_and_resumes_without_redoing_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Both runs draw the same He weights (same seed); only the stem differs at the
    start, and a resumed run continues from its checkpoint, not from a new PCA."""
    kw = dict(iters=4, val_size=0, eval_every=2, lr=1e-12, momentum=0.0, weight_decay=0.0)
    train(tiny_config(tiny_dataset, tmp_path / "he", **kw))
    train(tiny_config(tiny_dataset, tmp_path / "pca", stem_init="pca", stop_at=2, **kw))
    he = load_checkpoint(tmp_path / "he/checkpoints/last.pt")["model"]
    pca = load_checkpoint(tmp_path / "pca/checkpoints/last.pt")["model"]
    assert not torch.allclose(he["conv1.weight"], pca["conv1.weight"])
    same = [k for k in he if k != "conv1.weight" and not k.startswith("bn1.")]
    for k in same:  # lr ~0: the weights are the initial ones; BN statistics differ
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(he[k], pca[k], atol=1e-9), k
    w = pca["conv1.weight"].flatten(1)
    he_norm = he["conv1.weight"].flatten(1).norm(dim=1).mean()
    assert torch.allclose(w.norm(dim=1), he_norm.expand(w.shape[0]), rtol=1e-5)
    assert torch.allclose(w[8:], -w[:8], atol=1e-9)  # +/- pairs of 8 components
    # resume: the stem is the checkpoint's (a new PCA would give the same filters, so
    # perturb the checkpoint to tell them apart)
    path = tmp_path / "pca/checkpoints/last.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["model"]["conv1.weight"] = ckpt["model"]["conv1.weight"] * 2
    torch.save(ckpt, path)
    kw2 = dict(kw, stem_init="pca")
    assert train(tiny_config(tiny_dataset, tmp_path / "pca", **kw2), resume=True).finished
    final = load_checkpoint(path)["model"]["conv1.weight"]
    assert torch.equal(final, ckpt["model"]["conv1.weight"])


def test_bad_stem_init_is_one_line(tiny_dataset: Path, tmp_path: Path) -> None:
    r = run_cli("train", "--data", str(tiny_dataset), "--stem-init", "zca",
                "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: argument --stem-init: invalid choice")
    assert not (tmp_path / "x").exists()


def test_stem_init_with_init_weights_is_one_line(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"not read: the flags conflict first")
    r = run_cli("train", "--data", str(tiny_dataset), "--stem-init", "pca",
                "--init", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "error: --stem-init pca starts a model from scratch; --init gives it all its weights"
    ]
    assert not (tmp_path / "x").exists()


def test_a_stem_wider_than_the_patches_allow_is_a_clear_error(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """64 filters need 32 components; 3x3 RGB patches have 27."""
    with pytest.raises(ResnetlabError, match="--stem-init pca: 64 filters need 32 components"):
        train(tiny_config(tiny_dataset, tmp_path / "wide", stem_init="pca", width=64, iters=2))
    assert not (tmp_path / "wide" / "config.json").exists()
