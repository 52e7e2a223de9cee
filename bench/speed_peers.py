"""The peers of bench/speed.py: the shared setup, a case (a loupe method and the peers that
implement it) and the peer factories (pytorch-grad-cam, torchcam, captum), so that speed.py and
the case files (cases_*.py) import them from here and not from each other."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MapFn = Callable[[torch.Tensor, torch.Tensor], object]  # (images, classes (B,)) -> maps
PeerFactory = Callable[["Setup"], contextlib.AbstractContextManager[MapFn]]
PEERS = ("grad-cam", "captum", "torchcam")


@dataclass(frozen=True)
class Setup:
    """What every implementation shares."""

    model: nn.Module
    layer: str
    size: int
    chunk: int
    samples: int  # T for SmoothGrad / IG / shuffle


@dataclass(frozen=True)
class Case:
    """One table row family: a loupe method, its options, and the peers that implement it."""

    method: str
    options: Callable[[Setup], dict[str, object]]
    peers: dict[str, PeerFactory] = field(default_factory=dict)
    slow: bool = False
    name: str | None = None  # the row's label when one method has several cases

    @property
    def label(self) -> str:
        return self.name or self.method


# -- peers -----------------------------------------------------------------------------------

def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, h, w)`` or ``(B, 1, h, w)`` -> ``(B, size, size)``, bilinear like loupe."""
    maps = maps if maps.dim() == 4 else maps[:, None]
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def grad_cam(class_name: str) -> PeerFactory:
    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, class_name)
        layer = dict(s.model.named_modules())[s.layer]
        with cls(model=s.model, target_layers=[layer]) as cam:
            if class_name == "ScoreCAM":
                cam.batch_size = s.chunk

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                targets = [ClassifierOutputTarget(int(c)) for c in classes]
                with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM's tqdm bars
                    return cam(input_tensor=x, targets=targets)

            yield run

    return factory


def torchcam(class_name: str) -> PeerFactory:
    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        import torchcam.methods

        cls = getattr(torchcam.methods, class_name)
        kwargs: dict[str, object] = {"input_shape": (3, s.size, s.size)}
        if class_name == "ScoreCAM":
            kwargs["batch_size"] = s.chunk
        if class_name == "CAM":
            kwargs["fc_layer"] = "fc"
        no_grad = class_name in ("CAM", "ScoreCAM")  # they need no gradient of the forward
        with cls(s.model, target_layer=s.layer, **kwargs) as extractor:

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                with torch.no_grad() if no_grad else contextlib.nullcontext():
                    scores = s.model(x)
                cams = extractor(class_idx=classes.tolist(), scores=scores)
                return upsample(cams[0], s.size)

            yield run

    return factory


def captum(kind: str) -> PeerFactory:
    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        from captum.attr import (
            InputXGradient,
            IntegratedGradients,
            LayerAttribution,
            LayerGradCam,
            NoiseTunnel,
            Saliency,
        )

        model = s.model
        if kind == "LayerGradCam":
            method = LayerGradCam(model, dict(model.named_modules())[s.layer])

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                attr = method.attribute(x, target=classes, relu_attributions=True)
                return LayerAttribution.interpolate(attr, (s.size, s.size), "bilinear")[:, 0]
        elif kind == "Saliency":
            method = Saliency(model)

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                return method.attribute(x, target=classes, abs=True).amax(1)
        elif kind == "InputXGradient":
            method = InputXGradient(model)

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                return method.attribute(x, target=classes).sum(1)
        elif kind == "IntegratedGradients":
            method = IntegratedGradients(model)

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                return method.attribute(
                    x, target=classes, n_steps=s.samples, method="gausslegendre",
                    internal_batch_size=s.chunk,
                ).sum(1)
        elif kind == "NoiseTunnel":
            method = NoiseTunnel(Saliency(model))

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                # captum takes one stdev per input tensor: the batch mean of loupe's per-image
                # 0.15 * (max - min); the same number of forwards either way.
                stdev = float(0.15 * (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).mean())
                return method.attribute(
                    x, nt_type="smoothgrad", nt_samples=s.samples, stdevs=stdev,
                    nt_samples_batch_size=max(1, s.chunk // x.shape[0]), target=classes, abs=True,
                ).amax(1)
        else:
            raise ValueError(kind)
        yield run

    return factory


def chunked(s: Setup) -> dict[str, object]:
    return {"chunk_size": s.chunk}
