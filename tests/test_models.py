"""Architecture tests: counts, shapes, shortcut semantics, initialisation, naming.

Each test would fail on a plausible wrong architecture (a misplaced stride, a
projection where the paper has none, an addition in a plain net), not only on a crash.
"""

from __future__ import annotations

import math
import operator

import pytest
import torch
from torch import fx, nn

import resnetlab
from resnetlab.models import (
    ResNet,
    ResNetConfig,
    ZeroPadShortcut,
    count_mult_adds,
    count_parameters,
    create_model,
    list_models,
    model_config,
)

PARAMS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def meta_model(name: str, **kw: object) -> ResNet:
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("name,expected", PARAMS.items())
def test_parameter_counts_match_paper(name: str, expected: int) -> None:
    assert count_parameters(meta_model(name)) == expected


@pytest.mark.parametrize(
    "name,paper_billions",
    [
        ("resnet18", 1.8),
        ("resnet34", 3.6),
        ("resnet50", 3.8),
        ("resnet101", 7.6),
        ("resnet152", 11.3),
    ],
)
def test_mult_adds_match_table1(name: str, paper_billions: float) -> None:
    madds = count_mult_adds(model_config(name))
    assert abs(madds / 1e9 - paper_billions) / paper_billions < 0.025


def test_mult_adds_stride_placement_and_cifar() -> None:
    # torchvision-style (stride in the 3x3) costs more: ~4.09 GMACs vs ~3.86.
    v15 = count_mult_adds(model_config("resnet50", stride_in="3x3"))
    assert abs(v15 / 1e9 - 4.09) < 0.01
    assert abs(count_mult_adds(model_config("resnet20")) / 1e6 - 40.6) < 0.1


def test_depth_is_paper_name() -> None:
    for name in list_models():
        cfg = model_config(name)
        assert f"{cfg.depth}" in name, name


@pytest.mark.parametrize("name", ["resnet20", "plain20", "resnet18", "resnet50", "plain18"])
@pytest.mark.parametrize("size", [32, 37, 224, 97])
def test_output_shapes(name: str, size: int) -> None:
    model = meta_model(name)
    out = model(torch.empty(2, 3, size, size, device="meta"))
    assert out.shape == (2, model.config.num_classes)


def test_feature_map_sizes_cifar() -> None:
    # §4.2: feature maps 32, 16, 8 with 16, 32, 64 filters
    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    x = model.relu(model.bn1(model.conv1(x)))
    shapes = []
    for name in model.stage_names:
        x = getattr(model, name)(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_feature_map_sizes_imagenet() -> None:
    # Table 1: conv2_x 56x56 ... conv5_x 7x7 at 224 input; bottleneck output 4x width.
    model = meta_model("resnet50")
    x = torch.empty(1, 3, 224, 224, device="meta")
    x = model.maxpool(model.conv1(x))
    assert tuple(x.shape[2:]) == (56, 56)
    for name, (c, s) in zip(model.stage_names, [(256, 56), (512, 28), (1024, 14), (2048, 7)]):
        x = getattr(model, name)(x)
        assert tuple(x.shape[1:]) == (c, s, s)


def test_overrides() -> None:
    model = create_model("resnet20", num_classes=100, in_channels=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 100)
    assert model.conv1.in_channels == 1
    wide = meta_model("resnet20", width=32)
    assert wide.fc.in_features == 128
    with pytest.raises(ValueError, match="unknown override"):
        create_model("resnet20", widht=4)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet20", shortcut="D")


def test_option_a_adds_no_parameters_and_b_c_do() -> None:
    a = count_parameters(meta_model("resnet20", shortcut="A"))
    plain = count_parameters(meta_model("plain20"))
    b = count_parameters(meta_model("resnet20", shortcut="B"))
    c = count_parameters(meta_model("resnet20", shortcut="C"))
    assert a == plain
    # B: two projections (16->32, 32->64), each 1x1 conv + BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # C: a projection on all 9 blocks.
    model_c = meta_model("resnet20", shortcut="C")
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in model_c.blocks())
    assert c > b


@pytest.mark.parametrize("placement", ["end", "both"])
def test_option_a_shortcut_semantics(placement: str) -> None:
    torch.manual_seed(0)
    shortcut = ZeroPadShortcut(16, 32, stride=2, placement=placement)  # type: ignore[arg-type]
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    start = 0 if placement == "end" else 8
    sub = x[:, :, ::2, ::2]
    assert torch.equal(y[:, start : start + 16], sub)
    zero_channels = [c for c in range(32) if not start <= c < start + 16]
    assert torch.count_nonzero(y[:, zero_channels]) == 0
    assert len(list(shortcut.parameters())) == 0


def test_option_a_block_is_branch_plus_padded_input() -> None:
    model = create_model("resnet20").eval()
    block = model.layer2[0]  # 16 -> 32, stride 2
    x = torch.randn(2, 16, 16, 16)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    padded = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 8, 8)], dim=1)
    torch.testing.assert_close(block(x), torch.relu(branch + padded))


def _additions(model: nn.Module) -> int:
    graph = fx.symbolic_trace(model).graph
    adds = {operator.add, operator.iadd, torch.add}
    return sum(1 for n in graph.nodes if n.op == "call_function" and n.target in adds)


def test_plain_nets_perform_no_addition() -> None:
    assert _additions(create_model("plain20")) == 0
    assert _additions(create_model("plain18")) == 0
    assert _additions(create_model("resnet20")) == 9
    assert _additions(create_model("resnet50")) == 16
    plain = create_model("plain20")
    assert all(blk.downsample is None and not blk.residual for blk in plain.blocks())


def test_shortcut_b_only_where_shape_changes() -> None:
    model = meta_model("resnet34")
    projections = [i for i, blk in enumerate(model.blocks()) if blk.downsample is not None]
    assert projections == [3, 7, 13]  # first block of conv3_x, conv4_x, conv5_x
    r50 = meta_model("resnet50")  # 64 -> 256 in conv2_1 also changes shape
    assert [i for i, b in enumerate(r50.blocks()) if b.downsample is not None] == [0, 3, 7, 13]


def test_bottleneck_stride_placement() -> None:
    paper = meta_model("resnet50")
    v15 = meta_model("resnet50", stride_in="3x3")
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert paper.layer2[0].downsample[0].stride == (2, 2)


def test_torchvision_state_dict_names() -> None:
    keys = set(meta_model("resnet50").state_dict())
    for k in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer4.2.bn3.bias",
        "fc.weight",
        "fc.bias",
    ]:
        assert k in keys
    assert len(meta_model("resnet18").state_dict()) == 122
    assert len(keys) == 320


def test_he_initialisation() -> None:
    torch.manual_seed(0)
    model = create_model("resnet56")
    conv = model.layer3[0].conv2  # 64 -> 64, 3x3: fan_out = 64 * 9
    std = conv.weight.std().item()
    assert abs(std - math.sqrt(2 / (64 * 9))) / std < 0.05
    assert torch.all(model.layer1[0].bn1.weight == 1) and torch.all(model.layer1[0].bn1.bias == 0)
    zi = create_model("resnet20", zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 0) for b in zi.blocks())
    assert torch.all(zi.layer1[0].bn1.weight == 1)


def test_gradients_reach_conv1_of_resnet110() -> None:
    torch.manual_seed(0)
    model = create_model("resnet110")
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grad = model.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_channels_last_matches_eager() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)
    out = cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_channels_last_training_keeps_block_gradients_channels_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Block outputs get NHWC gradients (ReLU's backward is ~10x slower on mixed formats),
    and the conversion leaves every parameter gradient as it was without it.

    (Compared within channels_last: against NCHW, ~1e-6 rounding differences flip the
    odd ReLU mask and no tolerance is both tight and safe.)"""
    from resnetlab.models import blocks

    torch.manual_seed(0)
    model = create_model("resnet20").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.arange(8)
    formats: dict[int, bool] = {}

    def record(i: int):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
            out.register_hook(
                lambda g: formats.__setitem__(i, g.is_contiguous(memory_format=torch.channels_last))
            )

        return hook

    handles = [b.register_forward_hook(record(i)) for i, b in enumerate(model.blocks())]
    nn.functional.cross_entropy(model(x), y).backward()
    assert len(formats) == 9 and all(formats.values()), formats
    grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]

    for h in handles:
        h.remove()
    monkeypatch.setattr(blocks, "keep_grad_channels_last", lambda t: t)
    model.zero_grad(set_to_none=True)
    formats.clear()
    for i, b in enumerate(model.blocks()):
        b.register_forward_hook(record(i))
    nn.functional.cross_entropy(model(x), y).backward()
    assert not all(formats.values())  # without it, some block gradients arrive NCHW
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4, msg=name)


def test_torch_compile_matches_eager() -> None:
    torch.manual_seed(0)
    cfg = ResNetConfig(block="basic", layers=(1, 1, 1), stem="cifar", shortcut="A", width=8)
    model = ResNet(cfg).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), ref, atol=1e-5, rtol=1e-5)


def test_config_round_trip() -> None:
    cfg = model_config("resnet50", stride_in="3x3", num_classes=10)
    again = ResNetConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.name == "resnet50"
    model = resnetlab.build_model(cfg.to_dict())
    assert model.config == cfg


def test_list_models_has_every_paper_network() -> None:
    names = set(resnetlab.list_models())
    expected = {f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202, 18, 34, 50, 101, 152)}
    expected |= {f"plain{d}" for d in (20, 32, 44, 56, 110, 18, 34)}
    assert expected <= names
