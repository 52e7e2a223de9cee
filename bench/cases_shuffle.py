"""Speed cases of shuffle saliency's options (issue 10) for ``bench/speed.py``.

Each case is shuffle saliency at ``T = --samples`` rounds without the unshuffled image (the
same number of forward + backward passes as captum's ``NoiseTunnel(Saliency)`` with that many
samples, the peer of every row) with one option changed: the class-discriminative scores (a
transform of the logits before the backward), the round weights (from the logits of the same
forward), the SmoothGrad-squared / VarGrad accumulation (a second running sum) and the
relative smoothing (one separable blur of the result). None of them adds a pass, so each row
should be within noise of the plain ``shuffle`` row.
"""

from __future__ import annotations

from speed_peers import Case, Setup, captum, chunked

OPTIONS = (
    {"score": "log-softmax"},
    {"score": "logit-minus-mean"},
    {"weight": "softmax"},
    {"weight": "top-k", "top_k": 5},
    {"accumulate": "square"},
    {"accumulate": "var"},
    {"smooth": 0.04},
)


def _case(extra: dict[str, object]) -> Case:
    def options(s: Setup) -> dict[str, object]:
        return {"n_shuffles": s.samples, "include_original": False, **chunked(s), **extra}

    label = "shuffle " + " ".join(f"{k}={v}" for k, v in extra.items())
    return Case("shuffle", options, {"captum": captum("NoiseTunnel")}, slow=True, name=label)


CASES = [_case(extra) for extra in OPTIONS]
