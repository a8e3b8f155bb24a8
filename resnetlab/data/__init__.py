"""Data: datasets in (CIFAR archives, Fashion-MNIST IDX, class folders), batches out.

bundle = open_dataset("cifar10", val_size=5000)        # §4.2's 45k/5k split
pre = bundle.preprocessing("pixel")                    # per-pixel mean, as the paper
loader = make_loader(bundle.train, 128, train=True, preprocessing=pre)
for x, y in loader.epoch(0): ...
"""

from resnetlab.data.common import DataWarning, FolderSplit, InMemorySplit, default_data_dir
from resnetlab.data.datasets import (
    NAMED,
    DatasetBundle,
    OpenedSplit,
    holdout,
    open_dataset,
    open_split,
)
from resnetlab.data.images import load_image, read_image
from resnetlab.data.loader import InMemoryLoader, StreamingLoader, make_loader, multiscale_batches
from resnetlab.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnetlab.data.transforms import (
    MULTISCALE_SIDES,
    TRAIN_CROPS,
    CropPlan,
    crop_flip,
    crop_flip_params,
    crop_resize,
    eval_view,
    multiscale_views,
    pca_lighting,
    rrc_plan,
    scale_plan,
    ten_crop,
    ten_crop_view,
    train_view,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MULTISCALE_SIDES",
    "NAMED",
    "TRAIN_CROPS",
    "CropPlan",
    "DataWarning",
    "DatasetBundle",
    "FolderSplit",
    "InMemoryLoader",
    "InMemorySplit",
    "OpenedSplit",
    "Preprocessing",
    "StreamingLoader",
    "crop_flip",
    "crop_flip_params",
    "crop_resize",
    "default_data_dir",
    "eval_view",
    "holdout",
    "load_image",
    "make_loader",
    "multiscale_batches",
    "multiscale_views",
    "open_dataset",
    "open_split",
    "pca_lighting",
    "read_image",
    "rrc_plan",
    "scale_plan",
    "ten_crop",
    "ten_crop_view",
    "train_view",
]
