"""Speed cases of Guided Backpropagation and Guided Grad-CAM for ``bench/speed.py``.

Peers as their documentation shows them: captum's ``GuidedBackprop`` and ``GuidedGradCam``
(batched; ``interpolate_mode="bilinear"`` to match loupe and the paper), and pytorch-grad-cam's
``GuidedBackpropReLUModel`` (one image per call, as in its ``cam.py`` example; for Guided
Grad-CAM multiplied with its batched ``GradCAM`` map, as that example does). Every peer's
``(B, C, H, W)`` attribution is reduced to a map with ``max_c |a_c|``, loupe's default.
pytorch-grad-cam swaps the model's ReLU modules in and out on every call, so it gets a copy.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from speed_peers import Case, MapFn, PeerFactory, Setup


def captum_guided(kind: str) -> PeerFactory:
    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        from captum.attr import GuidedBackprop, GuidedGradCam

        if kind == "GuidedBackprop":
            method = GuidedBackprop(s.model)

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                return method.attribute(x, target=classes).abs().amax(1)
        else:
            method = GuidedGradCam(s.model, s.model.get_submodule(s.layer))

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                attr = method.attribute(x, target=classes, interpolate_mode="bilinear")
                return attr.abs().amax(1)

        yield run

    return factory


def grad_cam_guided(with_cam: bool) -> PeerFactory:
    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model = copy.deepcopy(s.model)
        guided = GuidedBackpropReLUModel(model, device=next(model.parameters()).device)
        with GradCAM(model=model, target_layers=[model.get_submodule(s.layer)]) as cam:

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                gb = [torch.from_numpy(guided(x[i : i + 1].detach().clone(), int(c)))
                      for i, c in enumerate(classes)]  # (H, W, C) each
                attr = torch.stack(gb)
                if with_cam:
                    masks = cam(input_tensor=x,
                                targets=[ClassifierOutputTarget(int(c)) for c in classes])
                    attr = attr * torch.from_numpy(masks)[..., None]
                return attr.abs().amax(-1)

            yield run

    return factory


CASES = [
    Case("guided-backprop", lambda s: {}, {"grad-cam": grad_cam_guided(False),
                                           "captum": captum_guided("GuidedBackprop")}),
    Case("guided-gradcam", lambda s: {}, {"grad-cam": grad_cam_guided(True),
                                          "captum": captum_guided("GuidedGradCam")}),
]
