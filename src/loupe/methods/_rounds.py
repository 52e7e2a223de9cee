"""How shuffle saliency turns its rounds into one map: per-round weights and the accumulation.

Weights (``weight=``), ``w_tk`` of round ``t`` and target ``k``, from the logits ``z`` of the
round's own (shuffled) input, the same forward as its gradient (no extra pass):

``"none"``     ``w = 1``.
``"softmax"``  ``w = softmax(z)_k``, the target's probability on the shuffled image
               (single-label classifiers): rounds in which shuffling destroyed the evidence
               for the class count less.
``"sigmoid"``  ``w = sigmoid(z_k)``, the same for multi-label classifiers (trained with BCE).
``"top-k"``    ``w = 1`` if the target is among the ``top_k`` largest logits of the shuffled
               image ("still recognised"), else 0 (ties as :func:`torch.topk`).

Where an (image, target)'s weights sum to 0 (no round recognised it), all its rounds count
with weight 1, so every target gets a map. Padding targets (-1) get weight 1 (their maps are 0).

Accumulation (``accumulate=``) of the un-shuffled round maps ``m_t`` with normalised weights
``v_t = w_t / sum_s w_s`` (``v_t = 1/T`` without weights):

``"mean"``    ``sum_t v_t m_t``.
``"square"``  ``sum_t v_t m_t^2`` (SmoothGrad-squared, Hooker et al., NeurIPS 2019).
``"var"``     ``sum_t v_t m_t^2 - (sum_t v_t m_t)^2`` (VarGrad, Adebayo et al., ICLR
              workshop 2018): where the evidence changes from one arrangement to another.

All three are running sums (constant memory in T), order-independent up to float rounding.
"""

from __future__ import annotations

import torch

from loupe.targets import Targets

WEIGHTS = ("none", "softmax", "sigmoid", "top-k")
ACCUMULATIONS = ("mean", "square", "var")


def check_round_options(weight: object, top_k: object, accumulate: object) -> None:
    """ValueErrors naming the option for anything not in :data:`WEIGHTS` /
    :data:`ACCUMULATIONS` or a ``top_k`` that is not an int >= 1."""
    if not isinstance(weight, str) or weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {', '.join(WEIGHTS)}; got {weight!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if not isinstance(accumulate, str) or accumulate not in ACCUMULATIONS:
        raise ValueError(
            f"accumulate must be one of {', '.join(ACCUMULATIONS)}; got {accumulate!r}"
        )


def round_weights(
    output: torch.Tensor, targets: Targets, weight: str, top_k: int = 5
) -> torch.Tensor | None:
    """``(n, K)`` float32 weights of the rows of ``output`` ``(n, N)`` (logits of shuffled
    inputs) for their bound class ``targets``; None for ``weight="none"``."""
    if weight == "none":
        return None
    if targets.classes is None or output.dim() != 2:
        raise ValueError(f"weight={weight!r} needs class targets and class logits (B, N)")
    logits = output.detach().float()
    classes = targets.classes.to(logits.device)
    picked = classes.clamp(min=0)
    if weight == "softmax":
        weights = torch.softmax(logits, dim=1).gather(1, picked)
    elif weight == "sigmoid":
        weights = torch.sigmoid(logits.gather(1, picked))
    else:
        k = min(top_k, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (n, k)
        weights = (top[:, None, :] == picked[:, :, None]).any(-1).float()
    return torch.where(classes >= 0, weights, torch.ones_like(weights))


class RoundSums:
    """Running weighted sums of the round maps of ``B`` images, ``K`` targets, ``P`` pixels;
    :meth:`result` is the accumulation of the module docstring."""

    def __init__(self, batch: int, count: int, pixels: int, *, accumulate: str = "mean",
                 weight: str = "none", top_k: int = 5, device: torch.device | str = "cpu"
                 ) -> None:
        check_round_options(weight, top_k, accumulate)
        shape = (batch, count, pixels)
        self.accumulate, self.weight, self.top_k = accumulate, weight, top_k

        def zeros(*size: int) -> torch.Tensor:
            return torch.zeros(*size, dtype=torch.float32, device=device)

        self.first = zeros(*shape) if accumulate != "square" else None  # sum w m
        self.second = zeros(*shape) if accumulate != "mean" else None  # sum w m^2
        self.total = zeros(batch, count, 1)  # sum w
        # the unweighted sums, for targets whose weights all vanish
        self.plain = (RoundSums(batch, count, pixels, accumulate=accumulate, device=device)
                      if weight != "none" else None)

    def add(self, image_of: torch.Tensor, maps: torch.Tensor, logits: torch.Tensor | None,
            targets: Targets) -> None:
        """Add round maps ``(n, K, P)`` of the images ``image_of`` ``(n,)``, weighted from the
        rounds' ``logits`` ``(n, N)`` for their ``targets`` (None: only ``weight="none"``)."""
        if self.plain is not None:
            self.plain.add(image_of, maps, None, targets)
        weights = None
        if self.weight != "none":
            if targets.classes is None:
                raise ValueError(f"weight={self.weight!r} needs class targets")
            if logits is None:
                raise ValueError(f"weight={self.weight!r} needs the logits of each round")
            weights = round_weights(logits, targets, self.weight, self.top_k)
        w = maps.new_ones(maps.shape[:2]) if weights is None else weights.to(maps)
        w = w[..., None]
        if self.first is not None:
            self.first.index_add_(0, image_of, w * maps)
        if self.second is not None:
            self.second.index_add_(0, image_of, w * maps.square())
        self.total.index_add_(0, image_of, w)

    def result(self) -> torch.Tensor:
        """``(B, K, P)``: the accumulation of the module docstring."""
        total = self.total.clamp(min=torch.finfo(torch.float32).tiny)
        if self.accumulate == "mean":
            out = self.first / total
        elif self.accumulate == "square":
            out = self.second / total
        else:
            out = (self.second / total - (self.first / total).square()).clamp(min=0)
        if self.plain is not None:
            out = torch.where(self.total > 0, out, self.plain.result())
        return out
