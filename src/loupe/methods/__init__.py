"""Built-in map methods. Importing this package registers each of them once."""

from loupe.methods import cam, gradcam, gradients, scorecam, shuffle  # noqa: F401
