"""The training recipe every trainer shares (:class:`Recipe`): data, optimisation, augmentation,
input normalisation and run options. Classifier and segmentation configs add their own model
options to it; so will the coming AMN training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loupe.data.spec import SyntheticSplits
from loupe.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from loupe.training.transforms import Augmentation


@dataclass
class Recipe:
    """What every training run takes. Defaults are the WSSS recipe (IRN on VOC): SGD with
    momentum 0.9 and lr 0.01 (IRN trains with lr 0.1 and no momentum: the same effective step
    ``lr / (1 - momentum)``), the new head at 10x, weight decay 1e-4, poly decay (power 0.9)
    per step, batch 16, IRN's augmentation (long side 320..640, flip, crop 512) plus colour
    jitter, ImageNet normalisation, mixed precision on CUDA. ``max_steps_per_epoch`` shortens
    epochs (tests, demos).

    dataset, root, train_split, val_split, synthetic, data_options: what
    :func:`loupe.data.open_split` opens (``val_split`` None: no validation).
    backbone, pretrained, init: the network and where its weights start (``"imagenet"``:
    torchvision's, downloaded; ``init``: a local state dict).
    out: the run folder; resume: continue from its ``checkpoint.pt``.
    """

    dataset: str = "voc"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    synthetic: SyntheticSplits = field(default_factory=SyntheticSplits)
    data_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet50"
    pretrained: str = "imagenet"
    init: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    resize_long: tuple[int, int] | None = (320, 640)
    crop: int | None = 512
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    amp: bool = True
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    max_steps_per_epoch: int | None = None
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (recorded in ``model.json``)."""
        return asdict(self)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(mean=tuple(self.mean), std=tuple(self.std))

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.resize_long, self.flip, self.jitter, self.crop)

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
