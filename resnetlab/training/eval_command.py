"""``resnetlab eval`` and ``resnetlab predict``: a trained model on a dataset or on images.

The preprocessing and class names come from the checkpoint (safetensors, training
checkpoint or ONNX), never from the data, so a model sees what it was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from resnetlab.data.common import FolderSplit, InMemorySplit
from resnetlab.data.transforms import MULTISCALE_SIDES
from resnetlab.errors import CheckpointError, DataError, ResnetlabError
from resnetlab.training.evaluate import EvalResult

EvalView = Literal["center", "ten_crop", "multi_scale"]
MAX_SCALE = 4096  # a longer shorter side is a typo, and gigabytes per image


def _load(path: str) -> Any:
    from resnetlab.interop.loading import load_model_file

    return load_model_file(path)


def _recipe_int(loaded: Any, key: str, default: int) -> int:
    """An integer of the training recipe stored with the model (val_size, seed)."""
    recipe = loaded.meta.get("recipe") or {}
    value = recipe.get(key, default) if isinstance(recipe, dict) else default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{loaded.path}: recipe {key} must be an integer >= 0")
    return value


def _placeholder_names(classes: list[str]) -> bool:
    """class_0..class_N-1: the names an import gives when the real ones are unknown."""
    return classes == [f"class_{i}" for i in range(len(classes))]


def check_class_names(model: list[str], data: list[str], data_name: str, ignore: bool) -> None:
    """Refuse a dataset whose class names differ from the model's (renamed or reordered
    folders would be scored against the wrong outputs), unless told to score anyway."""
    if _placeholder_names(model):
        print(
            f"note: the model's class names are placeholders (class_0...); "
            f"not compared with {data_name}'s",
            file=sys.stderr,
        )
        return
    diffs = [(i, m, d) for i, (m, d) in enumerate(zip(model, data)) if m != d]
    if not diffs:
        return
    shown = ", ".join(f"#{i} {m!r} vs {d!r}" for i, m, d in diffs[:3])
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    what = f"{len(diffs)} class name(s) differ between the model and {data_name} ({shown}{more})"
    if not ignore:
        raise DataError(f"{what}; pass --ignore-class-names to score anyway")
    print(f"note: {what}; scoring anyway (--ignore-class-names)", file=sys.stderr)


def _check_eval_args(args: argparse.Namespace) -> list[int]:
    """Flag errors, found before the model or any image is read; the scales to use."""
    if args.batch_size < 1:
        raise ResnetlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.val_size is not None and args.val_size < 0:
        raise ResnetlabError(f"--val-size must be >= 0, got {args.val_size}")
    if args.scales is not None and not args.multi_scale:
        raise ResnetlabError("--scales sets the sizes of --multi-scale; add --multi-scale")
    if (args.tta_flip or args.tta_shift) and (args.ten_crop or args.multi_scale):
        which = "--ten-crop" if args.ten_crop else "--multi-scale"
        raise ResnetlabError(
            f"{which} has its own views; drop --tta-flip/--tta-shift (they are for the centre view)"
        )
    if not 0 <= args.tta_shift <= 8:
        raise ResnetlabError(f"--tta-shift must be 0..8 pixels, got {args.tta_shift}")
    scales = list(args.scales if args.scales is not None else MULTISCALE_SIDES)
    bad = [s for s in scales if not 1 <= s <= MAX_SCALE]
    if bad:
        raise ResnetlabError(f"--scales must be sides in 1..{MAX_SCALE} pixels, got {bad[0]}")
    return scales


def run_eval(args: argparse.Namespace) -> int:
    from resnetlab.data.datasets import NAMED_ALIASES, open_split

    scales = _check_eval_args(args)
    if args.multi_scale and str(args.data).strip().lower() in NAMED_ALIASES:
        raise DataError(
            f"--multi-scale runs on image files (a class-folder dataset), not {args.data}"
        )
    loaded = _load(args.checkpoint)
    val_size = args.val_size if args.val_size is not None else _recipe_int(loaded, "val_size", 0)
    if args.split == "val" and val_size == 0:
        val_size = 5000
    seed = _recipe_int(loaded, "seed", 0)
    pre = loaded.preprocessing

    def fits(classes: list[str], channels: int) -> None:
        if len(classes) != len(loaded.classes):
            raise DataError(
                f"the model predicts {len(loaded.classes)} classes but {args.data} has "
                f"{len(classes)}"
            )
        check_class_names(loaded.classes, classes, args.data, args.ignore_class_names)
        if pre.channels != channels:
            raise DataError(
                f"the model takes {pre.channels}-channel images, {args.data} has {channels}"
            )

    opened = open_split(
        args.data,
        args.split,
        args.data_dir,
        val_size=val_size,
        seed=seed,
        classes=None if _placeholder_names(loaded.classes) else loaded.classes,
        size=pre.size,
        resize=pre.resize,
        stream=args.multi_scale,
        check=fits,
    )
    view: EvalView = (
        "ten_crop" if args.ten_crop else "multi_scale" if args.multi_scale else "center"
    )
    result = evaluate_split(
        loaded,
        opened.split,
        view=view,
        scales=scales,
        batch_size=args.batch_size,
        tta_flip=args.tta_flip,
        tta_shift=args.tta_shift,
    )
    if args.json:
        print(json.dumps({"top1_acc": result.top1_acc, "top5_acc": result.top5_acc, "n": result.n}))
    else:
        what = {"center": "", "ten_crop": ", 10-crop", "multi_scale": f", scales {scales}"}[view]
        print(
            f"{args.checkpoint} on {opened.name} {args.split}{what}: "
            f"top-1 {100 * result.top1_acc:.2f}%  top-5 {100 * result.top5_acc:.2f}%  "
            f"({result.n} images)"
        )
    return 0


def evaluate_split(
    loaded: Any,
    split: InMemorySplit | FolderSplit,
    *,
    view: EvalView = "center",
    scales: Sequence[int] = MULTISCALE_SIDES,
    batch_size: int = 500,
    tta_flip: bool = False,
    tta_shift: int = 0,
    workers: int | None = None,
) -> EvalResult:
    """Top-1/top-5 and loss of ``loaded`` (a LoadedModel) on ``split``; see
    ``split_log_probabilities``."""
    from resnetlab.training.evaluate import score

    return score(
        split_log_probabilities(
            loaded,
            split,
            view=view,
            scales=scales,
            batch_size=batch_size,
            tta_flip=tta_flip,
            tta_shift=tta_shift,
            workers=workers,
        )
    )


def split_log_probabilities(
    loaded: Any,
    split: InMemorySplit | FolderSplit,
    *,
    view: EvalView = "center",
    scales: Sequence[int] = MULTISCALE_SIDES,
    batch_size: int = 500,
    tta_flip: bool = False,
    tta_shift: int = 0,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(log-probabilities [N,K], labels) of ``loaded`` on ``split``, in order, with the
    model's stored preprocessing.

    ``center``: the single view ``predict`` uses. ``ten_crop`` (§3.4, Table 3): for
    streamed images the 4 corners and centre of the ``size`` crop of the image resized
    to shorter side ``resize`` (224 of 256 on ImageNet), plus mirrors; for in-memory
    (CIFAR-size) images the corners and centre of the 4-pixel zero-padded image, plus
    mirrors; softmax averaged. ``multi_scale`` (§3.4, Table 4; streamed images only):
    the whole image at shorter side ``scales`` and its mirror, softmax averaged. Model
    calls take at most ``batch_size`` views of the model's input size (proportionally
    fewer larger ones)."""
    from resnetlab.data import StreamingLoader, make_loader, multiscale_batches
    from resnetlab.training.evaluate import (
        log_probabilities,
        multiscale_probabilities,
        tta_predictor,
    )

    pre = loaded.preprocessing

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    if view == "multi_scale":
        if not isinstance(split, FolderSplit):
            raise DataError(
                "--multi-scale runs on image files (a class-folder dataset); this split is"
                " decoded in memory"
            )
        per_batch = max(1, batch_size // (2 * len(scales)))
        stream = multiscale_batches(split, per_batch, scales, workers=workers)
        probs = multiscale_probabilities(predict, stream, pre, batch_size * pre.size**2)
        return ((p.clamp_min(1e-12).log(), y) for p, y in probs)
    batches: Any
    if view == "ten_crop" and isinstance(split, InMemorySplit):
        batches = _ten_crop_batches(split, pre, batch_size)
    elif isinstance(split, FolderSplit):
        per_batch = max(1, batch_size // 10) if view == "ten_crop" else batch_size
        batches = StreamingLoader(
            split,
            per_batch,
            train=False,
            preprocessing=pre,
            workers=workers,
            view="ten_crop" if view == "ten_crop" else "center",
        ).epoch(0)
    else:
        batches = make_loader(split, batch_size, train=False, preprocessing=pre).epoch(0)
    return log_probabilities(tta_predictor(predict, tta_flip, tta_shift), batches)


def _ten_crop_batches(split: InMemorySplit, pre: Any, batch_size: int) -> Any:
    """4 corner + centre crops of the zero-padded image, and their mirrors (10 views)."""
    from resnetlab.data import ten_crop

    images = split.images
    for i in range(0, len(split.labels), batch_size):
        crops = ten_crop(images[i : i + batch_size], images.shape[-1], 4)  # [n,10,C,H,W] uint8
        n, k = crops.shape[:2]
        yield (
            pre.normalize(crops.flatten(0, 1)).view(n, k, *crops.shape[2:]),
            split.labels[i : i + batch_size],
        )


def run_predict(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ResnetlabError(f"--topk must be >= 1, got {args.topk}")
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
    views = p.add_mutually_exclusive_group()
    views.add_argument(
        "--ten-crop",
        action="store_true",
        help="average 10 crops: corners and centre, and their mirrors (§3.4, Table 3)",
    )
    views.add_argument(
        "--multi-scale",
        action="store_true",
        help="average the whole image and its mirror at several sizes (§3.4, Table 4);"
        " class-folder datasets",
    )
    p.add_argument(
        "--scales",
        type=int,
        nargs="+",
        metavar="SIDE",
        help=f"shorter sides for --multi-scale (default: {' '.join(map(str, MULTISCALE_SIDES))})",
    )
    p.add_argument("--tta-flip", action="store_true", help="average with the mirrored image")
    p.add_argument(
        "--tta-shift",
        type=int,
        default=0,
        help="also average over copies moved diagonally by N pixels (weights 1/2, 1/4, 1/4)",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--ignore-class-names",
        action="store_true",
        help="score even if the dataset's class names differ from the model's",
    )
    p.add_argument("--json", action="store_true", help='one line: {"top1_acc", "top5_acc", "n"}')
    p.set_defaults(func=run_eval)


def register_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="top classes for image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True, help=".safetensors, training .pt, or .onnx")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(func=run_predict)
