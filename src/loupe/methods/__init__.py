"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import baselines, cam, gradcam, gradients, scorecam, shuffle  # noqa: F401
from loupe.methods import occlusion, rise, scorecam_variants, smooth_gradcampp  # noqa: F401
