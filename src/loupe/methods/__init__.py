"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import (  # noqa: F401
    baselines,
    cam,
    eigen,
    gradcam,
    gradients,
    kpca,
    random_cam,
    scorecam,
    shuffle,
)
