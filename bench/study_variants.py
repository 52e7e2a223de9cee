"""What the shuffle-saliency study computes: map variants and the data sets they run on.

A variant is one ``loupe maps`` run: a registered method with options (``--option``), an
optional target layer, and the images it covers: ``all`` images of the data set, or the first
``subset`` images (in id order) for the costly ablations and Score-CAM on the real images.
Every comparison is paired: two variants are compared on the images both cover.

Choices fixed before any result was seen:

- shuffle saliency's reference is the library default (``n_shuffles=32, grids=(2, 3, 4),
  jitter, offset="cyclic", include_original=False, reduce="abs-max", base="gradient"``);
- its ablations change one option at a time from a ``T = 8`` reference on the real images
  (``T = 32`` for all images would cost 4x the CPU), and from both ``T = 8`` and ``T = 32``
  on the synthetic set, where compute is cheap;
- SmoothGrad and Integrated Gradients use 32 samples / steps, as shuffle's ``T``;
- Score-CAM on MobileNetV2 runs at ``features.17`` (320 channels, 7x7, the last inverted
  residual block) instead of ``features`` (1280 channels): one forward per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

# Chunk sizes only bound memory; maps do not depend on them.
CHUNK = "chunk_size=4"


@dataclass(frozen=True)
class Variant:
    """One map run. ``group``: baseline | cam | gradient | shuffle | ablation (shuffle
    variants compared with their reference ``reference``)."""

    name: str
    method: str
    options: tuple[str, ...] = ()
    target_layer: str | None = None
    images: str = "all"  # "all" or "subset"
    group: str = "cam"
    reference: str | None = None

    def describe(self) -> str:
        """``method opt=value ...`` as the doc's tables show it."""
        shown = [o for o in self.options if not o.startswith("chunk_size")]
        layer = [f"layer={self.target_layer}"] if self.target_layer else []
        return " ".join([self.method, *shown, *layer])


def _shuffle(name: str, t: int, *extra: str, images: str = "all",
             reference: str | None = None) -> Variant:
    options = (f"n_shuffles={t}", "seed=0", CHUNK, *extra)
    group = "shuffle" if reference is None else "ablation"
    return Variant(name, "shuffle", options, images=images, group=group, reference=reference)


def _ablations(t: int, images: str, suffix: str) -> list[Variant]:
    """One-at-a-time changes from the shuffle reference with ``T = t``."""
    ref = f"shuffle{suffix}"
    return [
        _shuffle(f"shuffle{suffix}-g468", t, "grids=4,6,8", images=images, reference=ref),
        _shuffle(f"shuffle{suffix}-pad", t, "offset=pad", images=images, reference=ref),
        _shuffle(f"shuffle{suffix}-orig", t, "include_original=true", images=images,
                 reference=ref),
        _shuffle(f"shuffle{suffix}-gradcam", t, "base=gradcam", images=images, reference=ref),
    ]


def common_variants() -> list[Variant]:
    """The methods every data set gets on all its images (these are also part B's run)."""
    return [
        Variant("baseline-background", "baseline-background", group="baseline"),
        Variant("baseline-gaussian", "baseline-gaussian", group="baseline"),
        Variant("cam", "cam"),
        Variant("gradcam", "gradcam"),
        Variant("gradcam++", "gradcam++"),
        Variant("xgradcam", "xgradcam"),
        Variant("layercam", "layercam"),
        Variant("hirescam", "hirescam"),
        Variant("saliency", "saliency", group="gradient"),
        Variant("gradxinput", "gradxinput", group="gradient"),
        Variant("smoothgrad", "smoothgrad", ("n_samples=32", "seed=0", CHUNK), group="gradient"),
        Variant("integrated-gradients", "integrated-gradients", ("steps=32", CHUNK),
                group="gradient"),
        _shuffle("shuffle", 32),
    ]


def real_variants() -> list[Variant]:
    """MobileNetV2 on real images: the common set on all images; Score-CAM, the T = 8
    reference and its ablations, and the gradcam-based shuffle at T = 32, on the subset."""
    return [
        *common_variants(),
        Variant("scorecam", "scorecam", ("chunk_size=16",), target_layer="features.17",
                images="subset"),
        _shuffle("shuffle-T8", 8, images="subset", reference="shuffle"),
        *_ablations(8, "subset", "-T8"),
        _shuffle("shuffle-gradcam", 32, "base=gradcam", images="subset", reference="shuffle"),
    ]


def synthetic_variants() -> list[Variant]:
    """The small GAP net on the synthetic set: everything on all images, ablations at
    T = 8 and T = 32."""
    return [
        *common_variants(),
        Variant("scorecam", "scorecam", ("chunk_size=64",)),
        _shuffle("shuffle-T8", 8, reference="shuffle"),
        *_ablations(8, "all", "-T8"),
        *_ablations(32, "all", ""),
    ]


# The methods of the main table and plot (one curve each).
MAIN_METHODS = ("cam", "gradcam", "scorecam", "saliency", "smoothgrad", "integrated-gradients",
                "shuffle", "baseline-background", "baseline-gaussian")
