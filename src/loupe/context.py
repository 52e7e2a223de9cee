"""What a map method receives: :class:`MapContext`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from loupe._affine_head import layer_head_forward
from loupe._frozen_grad import gradient_forward
from loupe._frozen_layer import layer_inference_forward
from loupe.hooks import Captured
from loupe.layers import Reshape
from loupe.targets import Targets

#: ``LOUPE_INFERENCE_MODE=0`` runs :meth:`MapContext.inference_output` under ``torch.no_grad``.
INFERENCE_ENV = "LOUPE_INFERENCE_MODE"

#: Told how many images of the call are done, as a float (``2.5``: two and a half images'
#: worth of forwards), never more than the batch size; the library prints nothing itself.
Progress = Callable[[float], None]


@dataclass(frozen=True)
class MapContext:
    """What a map method gets: the prepared model, the images, the resolved targets and, for
    layer methods, the target layer's name, its captured activation and the reshape;
    ``progress``, the caller's :data:`Progress` callback or None; and ``memo``, what the method
    keeps between the calls of one :func:`loupe.explainer` block (a fresh dict for each
    ``explain`` call): only what depends on the model alone, checked before each use."""

    model: nn.Module
    images: torch.Tensor
    targets: Targets
    layer: str | None
    captured: Captured
    reshape: Reshape
    progress: Progress | None = None
    memo: dict[object, object] = field(default_factory=dict)
    repeated: bool = False

    def report_rows(self, done: int, total: int) -> None:
        """Report progress of a method that works through ``total`` rows (image-major: the
        rows of image ``b`` are ``b * total / B ...``), ``done`` of them finished."""
        if self.progress is not None and total > 0:
            self.progress(self.images.shape[0] * min(done, total) / total)

    def activation(self) -> torch.Tensor:
        """The target layer's last captured output as a grid ``(B, C, h, w)``."""
        if self.layer is None or self.layer not in self.captured:
            raise RuntimeError("no activation was captured; run the model inside the method")
        return self.reshape(self.captured[self.layer])

    def inference_output(self) -> object:
        """The model's output on the images with nothing recorded for autograd, for the methods
        that make one clean forward and no backward (CAM, EigenCAM, KPCA-CAM, RandomCAM).

        It runs under ``torch.inference_mode``, which also skips the version counters and view
        tracking that ``torch.no_grad`` keeps (0.06-0.13 ms of a 12 ms resnet18 forward at 64x64,
        batch 1; docs/speed.md). The output and the captured activation are then inference
        tensors: read them with out-of-place operations (whose results are ordinary tensors).
        A model that keeps a tensor made in its forward (a cache) keeps an inference tensor,
        which a later backward cannot save; ``LOUPE_INFERENCE_MODE=0`` runs these forwards
        under ``torch.no_grad`` instead.

        On the CPU, in an explainer block or for at least 64 images, the forward may be made by
        a frozen TorchScript copy that also returns the target layer's output, which is then
        what :meth:`activation` reads (:mod:`loupe._frozen_layer`: 1.1-1.2x faster for a
        resnet18, same values to float rounding)."""
        off = os.environ.get(INFERENCE_ENV, "1").strip() == "0"
        with torch.no_grad() if off else torch.inference_mode():
            copied = self._copied_forward()
            return self.model(self.images) if copied is None else copied

    def _copied_forward(self) -> object | None:
        """The output of the frozen copy of :mod:`loupe._frozen_layer` (its layer output
        stored as the captured activation), or None where the model is to run."""
        if self.layer is None:
            return None
        forward = layer_inference_forward(self.model, self.layer, self.images, self.repeated)
        outputs = None if forward is None else forward(self.images)
        if outputs is None:
            return None
        self.captured[self.layer] = outputs[0]
        return outputs[1]

    def gradient_forward(self) -> Callable[[torch.Tensor], object]:
        """The forward for the input-gradient passes (saliency, gradient x input, SmoothGrad,
        Integrated Gradients, shuffle saliency): the model, or in an explainer block on the CPU
        a frozen TorchScript copy that computes what the model computes bit for bit, with less
        Python per call (:mod:`loupe._frozen_grad`)."""
        return gradient_forward(self.model, self.repeated)

    def leaf_and_output(self) -> tuple[torch.Tensor, object] | None:
        """For the gradient-weighted CAMs, on the CPU in an explainer block or for at least 64
        images: the target layer's output from the frozen copy, as a leaf that requires grad
        (also stored as the captured activation), and the model's output computed from it by
        the model's own affine head, with autograd (:mod:`loupe._affine_head`: same gradients
        to float rounding); None where the model is to run, as everywhere else."""
        if self.layer is None or not torch.is_grad_enabled():
            return None
        forward = layer_head_forward(self.model, self.layer, self.images, self.repeated)
        outputs = None if forward is None else forward(self.images)
        if outputs is not None:
            self.captured[self.layer] = outputs[0]
        return outputs
