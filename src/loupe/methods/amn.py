"""AMN maps: the class maps of a label-conditioned activation manipulation network.

Lee, Kim and Shim, "Threshold Matters in WSSS: Manipulating the Activation for the Robust and
Accurate Segmentation Model Against Thresholds", CVPR 2022 (``step/make_amn_cam.py``): the
network, told the image's labels ``y``, gives per-pixel logits over background and the
classes; the map of class ``k`` is its softmax probability, min-max normalised over the
image, ``M_k = minmax(softmax(f(x, y))_{1+k})``, read like a CAM (a background threshold).

The model is an AMN run of ``loupe train-amn`` (:class:`loupe.models.AMNModel`) or any model
with ``label_conditioned = True``, ``num_classes`` and ``model(images, labels) -> (B, 1 + N,
h, w)`` logits (background first), ``model(images) -> (B, N)`` image-level logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loupe.context import MapContext
from loupe.masks.normalize import normalize
from loupe.registry import register


def label_vectors(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, N)`` float multi-hot label vectors of the classes ``(B, K)`` of each image
    (-1 = padding, ignored); the union of an image's targets."""
    valid = (classes >= 0).to(torch.float32)
    one_hot = F.one_hot(classes.clamp(min=0), num_classes).to(torch.float32)
    return (one_hot * valid[..., None]).sum(1).clamp(max=1.0)


def amn_maps(logits: torch.Tensor, classes: torch.Tensor, *,
             min_max: bool = True) -> torch.Tensor:
    """Maps ``(B, K, h, w)``: the softmax over the ``1 + N`` channels of ``logits``
    ``(B, 1 + N, h, w)`` (background first) at channel ``1 + classes`` ``(B, K)``, each map
    min-max normalised to [0, 1] when ``min_max``; padding classes (-1) give zero maps."""
    probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
    b, k = classes.shape
    index = classes.clamp(min=0)[..., None, None].expand(b, k, *probabilities.shape[-2:])
    maps = probabilities.gather(1, index.to(probabilities.device))
    if min_max:
        maps = normalize(maps)
    return maps * (classes >= 0)[..., None, None].to(maps.device, maps.dtype)


@register(
    "amn",
    uses_layer=False,
    paper="Lee, Kim and Shim, Threshold Matters in WSSS: Manipulating the Activation for the "
          "Robust and Accurate Segmentation Model Against Thresholds, CVPR 2022",
)
def amn(ctx: MapContext, min_max: bool = True) -> torch.Tensor:
    """AMN: ``M_k = minmax(softmax(f(x, y))_{1+k})``, the network conditioned on labels ``y``.

    ``y`` is each image's targets together (multi-hot): ``loupe maps`` asks for all the
    image-level labels of an image, so the network is told exactly those, as the authors'
    ``make_amn_cam.py`` does; asked for one class, the network is told only that class.
    Without targets the classifier's top-1 class is explained (and is the label).

    Options:
        min_max: min-max normalise each map over the image, as ``make_amn_cam.py`` does
            (default). Trained with label smoothing, the probabilities never fall to 0 (about
            ``eps / N`` where the class is absent), so the raw probabilities
            (``min_max=False``) put a floor under every map that a background threshold
            reads as foreground.

    Returns ``(B, K, h, w)`` maps in [0, 1] at the network's resolution (output stride of the
    backbone); padding targets give zero maps. Class targets only.
    """
    model = ctx.model
    if not getattr(model, "label_conditioned", False):
        raise ValueError(f"method 'amn' explains an AMN run (loupe train-amn), a model "
                         f"called as model(images, labels); {type(model).__name__} is not one")
    if ctx.targets.functions is not None:
        raise ValueError("method 'amn' explains classes through the network's label "
                         "conditioning; score-function targets are not supported")
    num_classes = int(model.num_classes)
    with torch.no_grad():
        if ctx.targets.classes is None:
            targets = ctx.targets.bind(model(ctx.images))
        else:  # checks the classes against the network's
            targets = ctx.targets.bind(ctx.images.new_zeros(ctx.images.shape[0], num_classes))
        classes = targets.classes.to(ctx.images.device)
        logits = model(ctx.images, label_vectors(classes, num_classes))
        return amn_maps(logits, classes, min_max=min_max)
