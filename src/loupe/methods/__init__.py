"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import baselines, cam, gradcam, gradients, guided, scorecam, shuffle  # noqa: F401
