"""bench/speed.py rows of the CAM methods that loupe shares with pytorch-grad-cam only.

``CASES`` (imported by speed.py, which adds them to its own) times loupe's EigenCAM,
EigenGradCAM, Grad-CAM element-wise, KPCA-CAM, RandomCAM, ShapleyCAM, Finer-CAM, FullGrad and
Ablation-CAM against pytorch-grad-cam's classes of the same names, on speed.py's model, input,
target classes and target layer, each run as its documentation shows:

- FullGrad ignores the target layer in both (every convolution and batch norm with a bias);
  pytorch-grad-cam's gets ``target_layers=[]`` (it prints a warning for any other value).
- Finer-CAM: pytorch-grad-cam builds its comparison target only when no targets are given
  (the top-1 class against its three closest classes); it runs that way, loupe with speed.py's
  seeded classes. The work is the same for any class: one forward, the ranking, one backward.
- Ablation-CAM: pytorch-grad-cam runs every layer before the target layer once per ablated
  channel, ``batch_size`` = speed.py's ``--chunk`` rows per forward; loupe replaces the target
  layer's output of one image by its default 256 ablated copies per forward (``chunk_size``
  counts rows of the layers after the target layer only, which are cheap), so the layers
  before it run ``ceil(C / 256)`` times per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import torch
from speed_peers import Case, MapFn, PeerFactory, Setup


def grad_cam_peer(class_name: str, *, layered: bool = True, given_targets: bool = True,
                  **fixed: object) -> PeerFactory:
    """pytorch-grad-cam's ``class_name`` on the setup's target layer (``layered``), with
    ``ClassifierOutputTarget`` of speed.py's classes (or ``None`` unless ``given_targets``)
    and ``fixed`` constructor arguments; ``batch_size = --chunk`` for AblationCAM."""

    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, class_name)
        layers = [dict(s.model.named_modules())[s.layer]] if layered else []
        kwargs = dict(fixed)
        if class_name == "AblationCAM":
            kwargs["batch_size"] = s.chunk
        with cls(s.model, layers, **kwargs) as cam:

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                targets = ([ClassifierOutputTarget(int(c)) for c in classes]
                           if given_targets else None)
                with contextlib.redirect_stderr(io.StringIO()):  # AblationCAM's tqdm bars
                    return cam(x, targets)

            yield run

    return factory


def none(s: Setup) -> dict[str, object]:
    return {}


CASES = [
    Case("eigencam", none, {"grad-cam": grad_cam_peer("EigenCAM")}),
    Case("eigengradcam", none, {"grad-cam": grad_cam_peer("EigenGradCAM")}),
    Case("gradcam-elementwise", none, {"grad-cam": grad_cam_peer("GradCAMElementWise")}),
    Case("kpcacam", none, {"grad-cam": grad_cam_peer("KPCA_CAM")}),
    Case("randomcam", none, {"grad-cam": grad_cam_peer("RandomCAM")}),
    Case("shapleycam", none, {"grad-cam": grad_cam_peer("ShapleyCAM")}),
    Case("finercam", none, {"grad-cam": grad_cam_peer("FinerCAM", given_targets=False)}),
    Case("fullgrad", none, {"grad-cam": grad_cam_peer("FullGrad", layered=False)}),
    Case("ablationcam", none, {"grad-cam": grad_cam_peer("AblationCAM")}, slow=True),
]
