"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import (  # noqa: F401
    amn,
    baselines,
    cam,
    gradcam,
    gradients,
    guided,
    scorecam,
    shuffle,
)
