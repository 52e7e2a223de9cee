"""What the command line offers before it imports torch: the registered map methods (for
``--method`` help and ``loupe methods``), the data-set kinds, the halves of ``--split-by-id``
and the synthetic set's defaults. A copy of the library's tables, so that ``loupe --help`` and
argument errors answer at once; ``tests/cli/test_catalog.py`` checks that it equals the
library (and prints the replacement when a method is added)."""

from __future__ import annotations

from typing import NamedTuple


class MethodRow(NamedTuple):
    """A registered method as ``loupe methods`` lists it (:class:`loupe.registry.MethodSpec`)."""

    name: str
    uses_layer: bool
    stochastic: bool
    paper: str


METHODS: tuple[MethodRow, ...] = (
    MethodRow("ablationcam", True, False,
              "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional "
              "Network via Gradient-free Localization, WACV 2020"),
    MethodRow("amn", False, False,
              "Lee, Kim and Shim, Threshold Matters in WSSS: Manipulating the Activation for "
              "the Robust and Accurate Segmentation Model Against Thresholds, CVPR 2022"),
    MethodRow("baseline-background", False, False,
              "model-free baseline (all background): the score of predicting no object"),
    MethodRow("baseline-gaussian", False, False,
              "model-free baseline (centre bias): a centred isotropic Gaussian"),
    MethodRow("cam", True, False,
              "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"),
    MethodRow("eigencam", True, False,
              "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, "
              "IJCNN 2020"),
    MethodRow("eigengradcam", True, False,
              "pytorch-grad-cam's EigenGradCAM: Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) of "
              "activations x gradients"),
    MethodRow("finercam", True, False,
              "Zhang et al., Finer-CAM: Spotting the Difference Reveals Finer Details for Visual "
              "Explanation, CVPR 2025"),
    MethodRow("fullgrad", False, False,
              "Srinivas & Fleuret, Full-Gradient Representation for Neural Network "
              "Visualization, NeurIPS 2019"),
    MethodRow("gradcam", True, False, "Selvaraju et al., Grad-CAM, ICCV 2017"),
    MethodRow("gradcam++", True, False, "Chattopadhay et al., Grad-CAM++, WACV 2018"),
    MethodRow("gradcam-elementwise", True, False,
              "pytorch-grad-cam's GradCAMElementWise (Gildenblat et al., 2021): HiResCAM with a "
              "ReLU per element"),
    MethodRow("gradxinput", False, False,
              "Shrikumar et al., Not Just a Black Box, arXiv 1605.01713, 2016"),
    MethodRow("guided-backprop", False, False,
              "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR-W "
              "2015"),
    MethodRow("guided-gradcam", True, False,
              "Selvaraju et al., Grad-CAM, ICCV 2017 (Guided Grad-CAM, Section 3.1)"),
    MethodRow("hirescam", True, False, "Draelos & Carin, HiResCAM, arXiv 2011.08891"),
    MethodRow("integrated-gradients", False, False,
              "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017"),
    MethodRow("iscam", True, False,
              "Naidu et al., IS-CAM: Integrated Score-CAM, arXiv 2010.03023, 2020"),
    MethodRow("kpcacam", True, False,
              "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models "
              "using Kernel PCA, arXiv 2410.00267, 2024"),
    MethodRow("layercam", True, False, "Jiang et al., LayerCAM, IEEE TIP 2021"),
    MethodRow("occlusion", False, False,
              "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014"),
    MethodRow("randomcam", True, True,
              "sanity baseline (pytorch-grad-cam's RandomCAM): random channel weights U(-1, 1)"),
    MethodRow("rise", False, True,
              "Petsiuk et al., RISE: Randomized Input Sampling for Explanation, BMVC 2018"),
    MethodRow("saliency", False, False,
              "Simonyan et al., Deep Inside Convolutional Networks, ICLR Workshop 2014"),
    MethodRow("scorecam", True, False, "Wang et al., Score-CAM, CVPR-W 2020"),
    MethodRow("shapleycam", True, False,
              "Cai, CAMs as Shapley Value-based Explainers (ShapleyCAM), arXiv 2501.06261, 2025"),
    MethodRow("shuffle", False, True,
              "loupe: gradient saliency averaged over random tile shuffles (no paper)"),
    MethodRow("smoothgrad", False, True,
              "Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv 1706.03825, "
              "2017"),
    MethodRow("smoothgradcam++", True, True,
              "Omeiza et al., Smooth Grad-CAM++, arXiv 1908.01224, 2019"),
    MethodRow("sscam", True, True,
              "Wang et al., SS-CAM: Smoothed Score-CAM, arXiv 2006.14255, 2020"),
    MethodRow("xgradcam", True, False, "Fu et al., Axiom-based Grad-CAM, BMVC 2020"),
)
"""Every registered method, sorted by name (as :func:`loupe.list_methods`)."""

METHOD_NAMES: tuple[str, ...] = tuple(row.name for row in METHODS)

SPEC_KINDS: tuple[str, ...] = ("coco", "folder", "ilsvrc", "voc", "voc-boxes", "wsol", "yolo",
                               "synthetic")
"""The kinds ``maps``, ``masks`` and ``evaluate`` open (:data:`loupe.data.spec.SPEC_KINDS`)."""

SPLIT_KINDS: tuple[str, ...] = ("voc", "coco", "folder", "yolo", "synthetic")
"""The kinds training opens (:data:`loupe.data.spec.SPLIT_KINDS`)."""

ID_HALVES: tuple[str, ...] = ("all", "dev", "test")
"""The values of ``--split-by-id`` (:data:`loupe.data.selection.ID_HALVES`)."""

SYNTHETIC_TRAIN, SYNTHETIC_VAL, SYNTHETIC_SIZE, SYNTHETIC_SEED = 400, 100, 96, 0
"""The defaults of :class:`loupe.data.spec.SyntheticSplits`."""
