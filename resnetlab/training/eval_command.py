"""``resnetlab eval`` and ``resnetlab predict``: a trained model on a dataset or on images.

The preprocessing and class names come from the checkpoint (safetensors, training
checkpoint or ONNX), never from the data, so a model sees what it was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from resnetlab.errors import DataError, ResnetlabError


def _load(path: str) -> Any:
    from resnetlab.interop.loading import load_model_file

    return load_model_file(path)


def run_eval(args: argparse.Namespace) -> int:
    from resnetlab.data import make_loader, open_dataset
    from resnetlab.training.evaluate import evaluate, flip_averaged

    loaded = _load(args.checkpoint)
    recipe = loaded.meta.get("recipe") or {}
    val_size = args.val_size if args.val_size is not None else int(recipe.get("val_size", 0))
    if args.split == "val" and val_size == 0:
        val_size = 5000
    seed = int(recipe.get("seed", 0))
    bundle = open_dataset(args.data, data_dir=args.data_dir, val_size=val_size, seed=seed)
    split = getattr(bundle, args.split)
    if split is None:
        raise DataError(f"{args.data} has no {args.split} split")
    if len(bundle.classes) != len(loaded.classes):
        raise DataError(
            f"the model predicts {len(loaded.classes)} classes but {args.data} has "
            f"{len(bundle.classes)}"
        )
    pre = loaded.preprocessing
    if pre.channels != bundle.in_channels:
        raise DataError(
            f"the model takes {pre.channels}-channel images, {args.data} has {bundle.in_channels}"
        )
    if args.ten_crop:
        batches: Any = _ten_crop_batches(split, pre, args.batch_size)
    else:
        batches = make_loader(split, args.batch_size, train=False, preprocessing=pre).epoch(0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    result = evaluate(flip_averaged(predict) if args.tta_flip else predict, batches)
    if args.json:
        print(json.dumps({"top1_acc": result.top1_acc, "top5_acc": result.top5_acc, "n": result.n}))
    else:
        print(
            f"{args.checkpoint} on {bundle.name} {args.split}: top-1 {100 * result.top1_acc:.2f}%  "
            f"top-5 {100 * result.top5_acc:.2f}%  ({result.n} images)"
        )
    return 0


def _ten_crop_batches(split: Any, pre: Any, batch_size: int) -> Any:
    """4 corner + centre crops of the zero-padded image, and their mirrors (10 views)."""
    from resnetlab.data import ten_crop

    images = getattr(split, "images", None)
    if images is None:
        raise DataError("--ten-crop works on in-memory (small-image) datasets")
    for i in range(0, len(split.labels), batch_size):
        crops = ten_crop(images[i : i + batch_size], images.shape[-1], 4)  # [n,10,C,H,W] uint8
        n, k = crops.shape[:2]
        yield (
            pre.normalize(crops.flatten(0, 1)).view(n, k, *crops.shape[2:]),
            split.labels[i : i + batch_size],
        )


def run_predict(args: argparse.Namespace) -> int:
    loaded = _load(args.checkpoint)
    pre = loaded.preprocessing
    failures = 0
    results = []
    for path in args.images:
        try:
            x = pre.normalize(pre.load(path).unsqueeze(0))
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        with torch.no_grad():
            probs = loaded(x).float().softmax(-1)[0]
        k = min(args.topk, probs.numel())
        top = probs.topk(k)
        preds = [
            {"class": loaded.classes[int(i)], "index": int(i), "prob": float(p)}
            for p, i in zip(top.values, top.indices)
        ]
        results.append({"image": path, "top": preds})
        if not args.json:
            print(path)
            for p in preds:
                print(f"  {100 * p['prob']:6.2f}%  {p['class']}")
    if args.json:
        for r in results:
            print(json.dumps(r))
    if failures and not results:
        raise ResnetlabError(f"none of the {failures} image(s) could be read")
    return 2 if failures else 0


def register_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 accuracy of a checkpoint on a dataset")
    p.add_argument("--checkpoint", required=True, help=".safetensors, training .pt, or .onnx")
    p.add_argument("--data", required=True, help="cifar10 | cifar100 | fashion-mnist | PATH")
    p.add_argument("--data-dir")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--val-size", type=int, help="validation hold-out (default: the training run's)")
    p.add_argument(
        "--ten-crop", action="store_true", help="average 10 crops (corners, centre, flips)"
    )
    p.add_argument("--tta-flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--json", action="store_true", help='one line: {"top1_acc", "top5_acc", "n"}')
    p.set_defaults(func=run_eval)


def register_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="top classes for image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True, help=".safetensors, training .pt, or .onnx")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(func=run_predict)
