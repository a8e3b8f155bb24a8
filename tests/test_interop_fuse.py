"""BN folding: same outputs in eval mode (1e-5), no BN left, original model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab.models import create_model
from resnetlab.models.fuse import fold_conv_bn, fuse_bn


def _with_bn_stats(model: nn.Module, size: int) -> nn.Module:
    """Non-trivial BN parameters and statistics (fresh BN is the identity at init).

    Residual branches end with a small BN scale, as in trained nets, so that deep
    models' logits keep a realistic scale and fp32 rounding stays far below 1e-5.
    """
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
                m.momentum = None
        for block in model.blocks():  # type: ignore[operator]
            block.last_bn().weight.uniform_(0.2, 0.4)
        model.train()
        model(torch.randn(4, 3, size, size))
    return model.eval()


@pytest.mark.parametrize(
    ("name", "overrides", "size"),
    [
        ("resnet20", {"zero_pad": "both"}, 32),  # option A, akamaster placement
        ("resnet20", {"shortcut": "C"}, 32),
        ("resnet18", {}, 32),
        ("resnet50", {"stride_in": "3x3"}, 32),
    ],
)
def test_fused_model_equals_original_in_eval(name: str, overrides: dict, size: int) -> None:
    model = _with_bn_stats(create_model(name, **overrides), size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fused.folded_bn == n_bn  # type: ignore[attr-defined]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        if name != "resnet50":  # fp32: equal within 1e-5 (resnet50 with statistics of
            # 4 tiny images is too ill-conditioned for fp32 rounding; checked in fp64 below)
            torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
            cl = fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            y = cl(x.contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(y, model(x), rtol=1e-5, atol=1e-5)
        for k, v in model.state_dict().items():  # the original is untouched
            assert torch.equal(v, before[k])
        # in float64 the folding is exact up to rounding: any formula slip would show
        fused64, model64 = fuse_bn(model.double()), model.double()
        torch.testing.assert_close(fused64(x.double()), model64(x.double()), rtol=0, atol=1e-9)


def test_fold_conv_bn_formula_with_conv_bias_and_stride() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=True)
    bn = nn.BatchNorm2d(5, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
        bn.running_var.uniform_(0.1, 3)  # type: ignore[union-attr]
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=0, atol=1e-5)
