"""eval on large-image folders: the paper's 10-crop (Table 3) and fully-convolutional
multi-scale (Table 4) tests checked against a hand computation with PIL and torch;
eval and predict feed the model the same tensor; eval opens only the split it scores.

A tiny ImageNet-style ResNet (7x7/2 stem, max pool, widths 8..64) with a 32-px crop of
a 40-px resize stands in for the 224-of-256 ImageNet setting; the images are 70..130 px
(over the 64-px in-memory limit, so they are streamed like ImageNet's).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.cli import main
from resnetlab.data import FolderSplit, Preprocessing, StreamingLoader, open_split
from resnetlab.interop.loading import load_model_file
from resnetlab.interop.weights import save_weights
from resnetlab.models import create_model
from resnetlab.training.eval_command import evaluate_split, split_log_probabilities

CLASSES = ["a", "b", "c"]
# (width, height): portrait, landscape, square, a second 80 x 100 (batched with the first)
SIZES = {"a/0.png": (80, 100), "a/1.png": (120, 70), "b/0.png": (96, 96), "c/0.png": (80, 100)}
SIZES |= {"c/1.png": (75, 130)}
SIZE, RESIZE = 32, 40
SCALES = (32, 40, 56)


def _pre() -> Preprocessing:
    mean = torch.linspace(0.3, 0.6, 3 * SIZE * SIZE).view(3, SIZE, SIZE)  # a per-pixel mean
    return Preprocessing(size=SIZE, resize=RESIZE, mean=mean.tolist(), std=[0.25, 0.2, 0.3])


def _weights(path: Path, pre: Preprocessing | None = None) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, width=8)
    with torch.no_grad():
        model.fc.weight.mul_(20)  # spread the probabilities, so averaging them matters
    return save_weights(path, model, classes=CLASSES, preprocessing=pre or _pre())


def _images(root: Path, split: str = "test") -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for rel, (w, h) in SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
        noise = rng.integers(0, 60, (h, w, 3))
        path = root / split / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path, list[Path]]:
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "cache"))
    paths = _images(tmp_path / "ds")  # test/ only: no train/ at all
    loaded = load_model_file(_weights(tmp_path / "m.safetensors"))
    return loaded, tmp_path / "ds", paths


# ---------------------------------------------------------------- by hand


def _shorter(im: Image.Image, side: int) -> torch.Tensor:
    """uint8 [3,H,W]: ``im`` resized (bilinear) so its shorter side is ``side``."""
    w, h = im.size
    k = side / min(w, h)
    r = im.resize((max(side, round(w * k)), max(side, round(h * k))), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(r)).permute(2, 0, 1)


def _softmax(model: Any, views: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> Any:
    x = (views.float() / 255.0 - mean) / std
    with torch.no_grad():
        return model(x).softmax(-1)


def _hand_ten_crop(model: Any, path: Path) -> torch.Tensor:
    """§3.4: shorter side 40 (ImageNet: 256), the four 32 (224) corners and the centre,
    and their mirrors; softmax averaged."""
    with Image.open(path) as im:
        r = _shorter(im.convert("RGB"), RESIZE)
    h, w = r.shape[1:]
    c = SIZE
    corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    crops = torch.stack([r[:, t : t + c, left : left + c] for t, left in corners])
    views = torch.cat([crops, crops.flip(-1)])
    pre = _pre()
    mean = torch.tensor(pre.mean)  # [3,32,32]: the crop size, so per pixel
    return _softmax(model, views, mean, torch.tensor(pre.std).view(3, 1, 1)).mean(0)


def _hand_multi_scale(model: Any, path: Path) -> torch.Tensor:
    """§3.4 / Table 4: the whole image at each shorter side and its mirror, softmax
    averaged over all of them; the per-pixel mean applied as its channel averages."""
    pre = _pre()
    mean = torch.tensor(pre.mean).mean((1, 2)).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    total = torch.zeros(3)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    for side in SCALES:
        x = _shorter(rgb, side)
        assert min(x.shape[1:]) == side
        total += _softmax(model, torch.stack([x, x.flip(-1)]), mean, std).sum(0)
    return total / (2 * len(SCALES))


def _eval_probs(loaded: Any, split: Any, **kw: Any) -> torch.Tensor:
    return torch.cat([lp.exp() for lp, _ in split_log_probabilities(loaded, split, **kw)])


def _open(root: Path, loaded: Any) -> FolderSplit:
    opened = open_split(root, "test", classes=loaded.classes, size=SIZE, resize=RESIZE)
    assert isinstance(opened.split, FolderSplit) and opened.classes == CLASSES
    return opened.split


# ---------------------------------------------------------------- tests


def test_ten_crop_matches_hand_computation(setup: tuple[Any, Path, list[Path]]) -> None:
    loaded, root, _ = setup
    split = _open(root, loaded)
    want = torch.stack([_hand_ten_crop(loaded.model, Path(p)) for p, _ in split.samples])
    got = _eval_probs(loaded, split, view="ten_crop", workers=0)
    assert got.shape == (5, 3)
    assert torch.allclose(got, want, atol=1e-5), (got, want)
    assert not torch.allclose(got, _eval_probs(loaded, split, workers=0), atol=1e-3)  # not 1 crop
    labels = torch.tensor([lab for _, lab in split.samples])
    r = evaluate_split(loaded, split, view="ten_crop", workers=0)
    assert r.n == 5
    assert r.loss == pytest.approx(float(-want[torch.arange(5), labels].log().mean()), abs=1e-4)
    assert r.top1_acc == pytest.approx(float((want.argmax(1) == labels).float().mean()))


def test_multi_scale_matches_hand_computation(setup: tuple[Any, Path, list[Path]]) -> None:
    loaded, root, _ = setup
    split = _open(root, loaded)
    want = torch.stack([_hand_multi_scale(loaded.model, Path(p)) for p, _ in split.samples])
    # two 80 x 100 images share model calls; batch_size 1: one image per call
    for batch_size in (500, 1):
        got = _eval_probs(
            loaded, split, view="multi_scale", scales=SCALES, batch_size=batch_size, workers=0
        )
        assert torch.allclose(got, want, atol=1e-5), (batch_size, got, want)
    labels = torch.tensor([lab for _, lab in split.samples])
    r = evaluate_split(loaded, split, view="multi_scale", scales=SCALES, workers=0)
    assert r.n == 5
    assert r.loss == pytest.approx(float(-want[torch.arange(5), labels].log().mean()), abs=1e-4)
    top5 = float(want.topk(3, 1).indices.eq(labels[:, None]).any(1).float().mean())
    assert r.top5_acc == pytest.approx(top5) == 1.0  # 3 classes: always in the top 5


def test_multi_scale_groups_same_size_images(setup: tuple[Any, Path, list[Path]]) -> None:
    """Images of the same size at a scale go through the network in one call."""
    loaded, root, _ = setup
    split = _open(root, loaded)
    calls: list[int] = []

    class Counting:
        preprocessing = loaded.preprocessing

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            return loaded(x)

    _eval_probs(Counting(), split, view="multi_scale", scales=SCALES, workers=0)
    # per scale: the two 80 x 100 images together (4 views with mirrors), 3 others alone
    assert sorted(calls) == sorted([4, 2, 2, 2] * len(SCALES))


def test_eval_and_predict_feed_the_model_the_same_tensor(
    setup: tuple[Any, Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded, root, _ = setup
    # a JPEG over twice the resize: decoded at a reduced scale (draft) by both paths
    big = np.random.default_rng(2).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    Image.fromarray(big).save(root / "test" / "b" / "1.jpg", quality=90)
    split = _open(root, loaded)
    pre = loaded.preprocessing
    batches = list(StreamingLoader(split, 8, train=False, preprocessing=pre, workers=0).epoch(0))
    assert len(batches) == 1
    x_eval = batches[0][0]
    paths = [p for p, _ in split.samples]
    x_predict = torch.stack([pre.normalize(pre.load(p)) for p in paths])
    assert torch.equal(x_eval, x_predict)  # bit for bit
    logits_eval = loaded(x_eval)
    logits_one = torch.cat([loaded(x[None]) for x in x_predict])  # predict: one at a time
    assert torch.allclose(logits_eval, logits_one, atol=1e-5, rtol=0)
    # the CLI: predict --json probabilities equal eval's centre-view probabilities
    assert main(["predict", *paths, "--checkpoint", str(loaded.path), "--json", "--topk", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    got = torch.zeros(len(paths), 3)
    for i, line in enumerate(lines):
        assert line["image"] == paths[i]
        for t in line["top"]:
            got[i, t["index"]] = t["prob"]
    assert torch.allclose(got, _eval_probs(loaded, split, workers=0), atol=1e-5)


def test_eval_cli_views_on_a_folder_without_train(
    setup: tuple[Any, Path, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    loaded, root, _ = setup
    base = ["eval", "--checkpoint", str(loaded.path), "--data", str(root), "--json"]
    for extra in ([], ["--ten-crop"], ["--multi-scale", "--scales", *map(str, SCALES)]):
        assert main([*base, *extra]) == 0, extra
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["n"] == 5 and 0 <= out["top1_acc"] <= 1 and out["top5_acc"] == 1.0
    split = _open(root, loaded)
    ms = evaluate_split(loaded, split, view="multi_scale", scales=SCALES, workers=0)
    assert main([*base, "--multi-scale", "--scales", *map(str, SCALES)]) == 0
    assert json.loads(capsys.readouterr().out)["top1_acc"] == pytest.approx(ms.top1_acc)
    assert main([*base, "--split", "val"]) == 2  # no val/, and no train/ to hold it out of
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {root} has no val split: {root / 'val'} not found, nor {root / 'train'} to hold one out of\n"
    )


def test_eval_reads_only_the_split_it_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A train/ with a corrupt image is neither decoded nor opened to score test/, for
    streamed and for in-memory (decode-cached) images; a val split held out of train/
    still needs train/ and reads it."""
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "cache"))
    from data_fixtures import write_folder

    big = _images(tmp_path / "big", "train")  # streamed: 70..130 px
    _images(tmp_path / "big", "test")
    small = write_folder(tmp_path / "small", CLASSES, per_class=10, size=8)  # in memory
    for root in (tmp_path / "big", small):
        (root / "train" / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert big
    opened: list[str] = []
    real_open = Image.open

    def recording_open(fp: Any, *a: Any, **kw: Any) -> Image.Image:
        opened.append(str(fp))
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(Image, "open", recording_open)
    small_pre = Preprocessing(size=8, mean=[0.4] * 3, std=[0.3] * 3)
    for root, weights in (
        (tmp_path / "big", _weights(tmp_path / "big.safetensors")),
        (small, _weights(tmp_path / "small.safetensors", small_pre)),
    ):
        opened.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a skipped corrupt image would warn
            code = main(["eval", "--checkpoint", str(weights), "--data", str(root), "--json"])
        assert code == 0
        assert json.loads(capsys.readouterr().out)["n"] == (5 if root != small else 30)
        assert opened and not [p for p in opened if "/train/" in p], opened[:3]
        assert all("/test/" in p for p in opened if p.endswith(".png"))
    assert not list((tmp_path / "cache").rglob("*train*"))  # no decode cache of train/
    # --split val with a hold-out of train/: train/ is read (and its corrupt file skipped)
    opened.clear()
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        argv = ["eval", "--checkpoint", str(tmp_path / "small.safetensors"), "--data"]
        assert main([*argv, str(small), "--split", "val", "--val-size", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    assert any("/train/" in p for p in opened)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scales", "224"], "error: --scales sets the sizes of --multi-scale; add --multi-scale"),
        (["--multi-scale", "--scales", "0"], "error: --scales must be sides in 1..4096 pixels"),
        (["--multi-scale", "--tta-flip"], "error: --multi-scale has its own views"),
        (["--ten-crop", "--tta-flip"], "error: --ten-crop has its own views"),
        (["--ten-crop", "--multi-scale"], "error: argument --multi-scale: not allowed with"),
        (["--multi-scale", "--data", "cifar10"], "error: --multi-scale runs on image files"),
        (["--scales", "x", "--multi-scale"], "error: argument --scales: invalid int value"),
    ],
)
def test_eval_view_flag_errors_are_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before the model file is read (it does not exist here) or any data."""
    argv = ["eval", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(tmp_path)]
    if "argument" in message:  # argparse's own check: it exits through _Parser.error
        with pytest.raises(SystemExit) as stop:
            main([*argv, *extra])
        assert stop.value.code == 2
    else:
        assert main([*argv, *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1, err


def test_multi_scale_default_scales_are_the_papers() -> None:
    from resnetlab.cli import build_parser

    args = build_parser("eval").parse_args(["eval", "--checkpoint", "m", "--data", "d"])
    assert args.scales is None and not args.multi_scale
    from resnetlab.training.eval_command import _check_eval_args

    args.multi_scale = True
    assert _check_eval_args(args) == [224, 256, 384, 480, 640]
