"""bench/speed.py rows of the torchcam Score-CAM variants and the perturbation maps.

``CASES`` (imported by speed.py, which adds them to its own) times loupe's Smooth Grad-CAM++,
SS-CAM and IS-CAM against torchcam, Occlusion against captum, and RISE alone (no installed
library implements it: compare its masked forwards per second, img/s x ``RISE_MASKS``, with
the model's own forward img/s at the chunk size in speed.py's "Model alone" table).

Settings shared by loupe and its peer on each row: ``SAMPLES`` noisy samples / integration
steps for the Score-CAM variants and Smooth Grad-CAM++ (torchcam's Smooth Grad-CAM++ default;
SS-CAM's 35 and IS-CAM's 10 would multiply the slow rows' time by 9 and 2.5), torchcam's
noise levels, ``--chunk`` rows per forward (torchcam ``batch_size``; captum
``perturbations_per_eval = chunk // batch``), Occlusion windows of 16x16 pixels at stride 8
with a zero baseline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from speed_peers import Case, MapFn, PeerFactory, Setup, upsample

SAMPLES = 4
RISE_MASKS = 256
WINDOW, STRIDE = 16, 8


def torchcam_with(class_name: str, **fixed: object) -> PeerFactory:
    """A torchcam extractor with ``fixed`` keyword arguments (plus ``batch_size`` = the chunk
    for the Score-CAM family), run as its documentation shows."""

    @contextlib.contextmanager
    def factory(s: Setup) -> Iterator[MapFn]:
        import torchcam.methods

        kwargs = {"input_shape": (3, s.size, s.size), **fixed}
        scored = class_name in ("SSCAM", "ISCAM")
        if scored:
            kwargs["batch_size"] = s.chunk
        with getattr(torchcam.methods, class_name)(s.model, s.layer, **kwargs) as extractor:

            def run(x: torch.Tensor, classes: torch.Tensor) -> object:
                with torch.no_grad() if scored else contextlib.nullcontext():
                    s.model(x)  # stores the input and the layer's activation
                cams = extractor(class_idx=classes.tolist())
                return upsample(cams[0], s.size)

            yield run

    return factory


@contextlib.contextmanager
def captum_occlusion(s: Setup) -> Iterator[MapFn]:
    from captum.attr import Occlusion

    occlusion = Occlusion(s.model)

    def run(x: torch.Tensor, classes: torch.Tensor) -> object:
        return occlusion.attribute(
            x, target=classes, sliding_window_shapes=(3, WINDOW, WINDOW),
            strides=(3, STRIDE, STRIDE), baselines=0.0,
            perturbations_per_eval=max(1, s.chunk // x.shape[0]),
        )[:, 0]

    yield run


def _chunk(s: Setup) -> dict[str, object]:
    return {"chunk_size": s.chunk}


CASES = [
    Case("smoothgradcam++", lambda s: {"n_samples": SAMPLES, "stdev": 0.3, **_chunk(s)},
         {"torchcam": torchcam_with("SmoothGradCAMpp", num_samples=SAMPLES, std=0.3)}),
    Case("sscam", lambda s: {"n_samples": SAMPLES, "stdev": 2.0, **_chunk(s)},
         {"torchcam": torchcam_with("SSCAM", num_samples=SAMPLES, std=2.0)}, slow=True),
    Case("iscam", lambda s: {"n_samples": SAMPLES, **_chunk(s)},
         {"torchcam": torchcam_with("ISCAM", num_samples=SAMPLES)}, slow=True),
    Case("occlusion", lambda s: {"window": WINDOW, "stride": STRIDE, **_chunk(s)},
         {"captum": captum_occlusion}, slow=True),
    Case("rise", lambda s: {"n_masks": RISE_MASKS, **_chunk(s)}, slow=True),
]
