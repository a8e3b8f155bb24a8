"""Data: datasets in (CIFAR archives, Fashion-MNIST IDX, class folders), batches out."""

from resnetlab.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]
