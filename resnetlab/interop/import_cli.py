"""``resnetlab import akamaster|torchvision PATH``: third-party checkpoints -> our .safetensors."""

from __future__ import annotations

import argparse

from resnetlab.errors import CheckpointError


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an output we could not write before the checkpoint is read and converted."""
    from pathlib import Path

    from resnetlab.atomic import check_writable

    if args.out and not str(args.out).endswith(".safetensors"):
        raise CheckpointError(f"--out must end in .safetensors, got {args.out}")
    out = Path(args.out) if args.out else Path(args.path).with_suffix(".safetensors")
    if out.resolve() == Path(args.path).resolve():
        raise CheckpointError(f"{out} is the input file; give another --out")
    check_writable(out)


def run_akamaster(args: argparse.Namespace) -> int:
    from resnetlab.interop.akamaster import import_akamaster

    _check_out(args)
    path = import_akamaster(args.path, args.model, args.out)
    print(f"wrote {path}")
    return 0


def run_torchvision(args: argparse.Namespace) -> int:
    from resnetlab.interop.torchvision_format import import_torchvision

    _check_out(args)
    path = import_torchvision(args.path, args.model, args.out, args.classes)
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="convert third-party checkpoints to resnetlab weights")
    sources = p.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True

    a = sources.add_parser(
        "akamaster",
        help="akamaster/pytorch_resnet_cifar10 checkpoints (resnet20..1202)",
        description="Convert an akamaster/pytorch_resnet_cifar10 checkpoint (loaded with "
        "weights_only=True) into .safetensors with CIFAR-10 class names and that project's "
        "preprocessing (ImageNet mean/std).",
    )
    a.add_argument("path", help="checkpoint file (.th/.pth)")
    a.add_argument("--model", help="expected preset, e.g. resnet20 (checked against the keys)")
    a.add_argument("--out", help="output .safetensors (default: next to PATH)")
    a.set_defaults(func=run_akamaster)

    t = sources.add_parser(
        "torchvision",
        help="ImageNet ResNet state dicts in torchvision's naming (3x3-stride variant)",
        description="Convert a torchvision-format ImageNet ResNet state dict (loaded with "
        "weights_only=True, strict) into .safetensors with ImageNet preprocessing "
        "(resize 256, center crop 224, ImageNet mean/std). ImageNet's 1000 class names "
        "are not available offline: classes are class_0..class_999 unless --classes is given.",
    )
    t.add_argument("path", help="state dict file (.pth)")
    t.add_argument(
        "--model", choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    )
    t.add_argument("--out", help="output .safetensors (default: next to PATH)")
    t.add_argument("--classes", help="text file with one class name per line, in output order")
    t.set_defaults(func=run_torchvision)
