"""What the dev screening computes: the reference methods and the shuffle variants.

Fixed by the protocol (docs/shuffle-saliency.md): T = 16 for the screening (shuffle rounds and
SmoothGrad samples alike), seed 0; each shuffle variant changes one option from the library
default of the time (``shuffle-T16``); the same score options are offered to saliency and
SmoothGrad; the smoothing is applied post-hoc to every method alike (bench/shuffle_dev_eval.py).
The order is the order of computation: references and the default first. Shuffle runs pass
``smooth=0``: the maps were made when that was the default (issue 10 made it 0.02), and every
smoothing is applied afterwards, to every method alike.
"""

from __future__ import annotations

from dataclasses import dataclass

T = 16
REFERENCE = "shuffle-T16"


@dataclass(frozen=True)
class Variant:
    """One ``loupe maps`` run. ``sets``: the dev sets it runs on (None = all); ``size``: the
    model input side instead of the set's; ``reference``: what it is compared with besides
    CAM; ``sampling``: takes ``chunk_size``."""

    name: str
    method: str
    options: tuple[str, ...] = ()
    cli: tuple[str, ...] = ()
    size: int | None = None
    sets: tuple[str, ...] | None = None
    reference: str | None = None
    peer: str | None = None  # CAM under the same treatment, compared too (after-test rows)
    tee: bool = False  # computed with others of the same rounds (bench/shuffle_tee.py)

    @property
    def sampling(self) -> bool:
        return self.method in ("smoothgrad", "shuffle", "integrated-gradients")

    def parsed(self) -> dict[str, object]:
        """The options as Python values (ints where they are ints)."""
        out: dict[str, object] = {}
        for option in self.options:
            key, value = option.split("=", 1)
            out[key] = int(value) if value.lstrip("-").isdigit() else value
        return out

    def describe(self) -> str:
        extra = [*self.cli, *([f"--size {self.size}"] if self.size else [])]
        return " ".join([self.method, *self.options, *extra])


def _shuffle(suffix: str, *options: str, **kwargs: object) -> Variant:
    return Variant(f"{REFERENCE}-{suffix}", "shuffle",
                   (f"n_shuffles={T}", "seed=0", "smooth=0", *options),
                   reference=REFERENCE, **kwargs)


def references() -> list[Variant]:
    return [
        Variant("baseline-background", "baseline-background"),
        Variant("baseline-gaussian", "baseline-gaussian"),
        Variant("cam", "cam"),
        Variant("gradcam", "gradcam"),
        Variant("saliency", "saliency"),
        Variant(f"smoothgrad-T{T}", "smoothgrad", (f"n_samples={T}", "seed=0")),
        Variant(REFERENCE, "shuffle", (f"n_shuffles={T}", "seed=0", "smooth=0")),
    ]


def score_variants() -> list[Variant]:
    """The class-discriminative scores, for every gradient method alike."""
    out = []
    for score, tag in (("log-softmax", "lsm"), ("logit-minus-mean", "lmm")):
        out += [
            Variant(f"saliency-{tag}", "saliency", (f"score={score}",), reference="saliency"),
            Variant(f"smoothgrad-T{T}-{tag}", "smoothgrad",
                    (f"n_samples={T}", "seed=0", f"score={score}"),
                    reference=f"smoothgrad-T{T}"),
            _shuffle(tag, f"score={score}"),
        ]
    return out


def shuffle_variants(set_name: str) -> list[Variant]:
    """One option at a time from the default."""
    probability = "sigmoid" if set_name == "loop" else "softmax"  # multi-label BCE classifier
    return [
        _shuffle(f"w{probability}", f"weight={probability}", tee=True),
        _shuffle("wtop5", "weight=top-k", "top_k=5", tee=True),
        _shuffle("square", "accumulate=square", tee=True),
        _shuffle("var", "accumulate=var", tee=True),
        _shuffle("g2", "grids=2"),
        _shuffle("g23", "grids=2,3"),
        _shuffle("g345", "grids=3,4,5"),
        _shuffle("gradcam", "base=gradcam"),
        _shuffle("flip", cli=("--flip",)),
        _shuffle("s320", size=320, sets=("coco", "cats"), peer="cam-s320"),
    ]


def confirmation() -> list[Variant]:
    """Decision rule 3: the chosen defaults confirmed at T = 32, against the T = 32 previous
    default and SmoothGrad at 32 samples (smoothing is post-hoc, so one map run each)."""
    return [
        Variant("smoothgrad-T32", "smoothgrad", ("n_samples=32", "seed=0")),
        Variant("shuffle-T32", "shuffle", ("n_shuffles=32", "seed=0", "smooth=0")),
        Variant("shuffle-T32-lsm", "shuffle",
                ("n_shuffles=32", "seed=0", "smooth=0", "score=log-softmax"),
                reference="shuffle-T32"),
    ]


SCALES = ("--scales", "1.0", "0.5", "1.5")


def after_test() -> list[Variant]:
    """Screened on dev after the test run (exploratory, no default depends on them): maps
    summed over input scales 1, 0.5 and 1.5 (IRN's protocol without its 2.0), and the model
    input at 320 px, each for CAM too, so that shuffle is also compared with CAM under the same
    treatment (``peer``)."""
    sets = ("coco", "cats")
    return [
        Variant("cam-ms", "cam", cli=SCALES, sets=sets, reference="cam"),
        Variant("cam-s320", "cam", size=320, sets=sets, reference="cam"),
        _shuffle("ms", cli=SCALES, sets=sets, peer="cam-ms"),
    ]


def variants(set_name: str) -> list[Variant]:
    every = [*references(), *score_variants(), *shuffle_variants(set_name), *confirmation(),
             *after_test()]
    return [v for v in every if v.sets is None or set_name in v.sets]
