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
    guided,
    kpca,
    occlusion,
    random_cam,
    rise,
    scorecam,
    scorecam_variants,
    shapley,
    shuffle,
    smooth_gradcampp,
)
