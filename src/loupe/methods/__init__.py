"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import (  # noqa: F401
    ablation,
    baselines,
    cam,
    eigen,
    finer,
    fullgrad,
    gradcam,
    gradients,
    kpca,
    random_cam,
    scorecam,
    shapley,
    shuffle,
)
