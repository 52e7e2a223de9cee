"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import (  # noqa: F401
    baselines,
    cam,
    gradcam,
    gradients,
    guided,
    occlusion,
    rise,
    scorecam,
    scorecam_variants,
    shuffle,
    smooth_gradcampp,
)
