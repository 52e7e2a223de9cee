"""Class mappings: scores and targets by hand and against a loop, the shipped COCO table."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import loupe
from loupe.data import (
    COCO_CLASSES,
    class_mapping,
    load_name_table,
    mapped_scores,
    mapped_targets,
)

MAPPING = ((), (0, 2), (4,), (), (1, 2, 3))


def test_mapped_scores_and_targets_by_hand() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, -1.0, 2.0], [4.0, 0.0, -2.0, 7.0, -3.0]])
    inf = float("-inf")
    assert mapped_scores(logits, MAPPING).tolist() == [[inf, 3, 2, inf, 5], [inf, 4, -3, inf, 7]]
    assert mapped_targets(logits, MAPPING).tolist() == [[-1, 2, 4, -1, 1], [-1, 0, 4, -1, 3]]
    present = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 1, 0, 0]])
    assert mapped_targets(logits, MAPPING, present).tolist() == [
        [-1, 2, -1, -1, 1], [-1, -1, 4, -1, -1]
    ]


def test_mapped_scores_match_a_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 30, generator=generator)
    mapping = tuple(
        tuple(torch.randperm(30, generator=generator)[: int(k)].tolist())
        for k in torch.randint(0, 6, (12,), generator=generator)
    )
    scores, targets = mapped_scores(logits, mapping), mapped_targets(logits, mapping)
    for b in range(6):
        for c, members in enumerate(mapping):
            if not members:
                assert scores[b, c] == float("-inf") and targets[b, c] == -1
                continue
            best = max(members, key=lambda m: logits[b, m].item())
            assert scores[b, c] == logits[b, best] and targets[b, c] == best


def test_mapping_errors() -> None:
    with pytest.raises(ValueError, match="logits must be"):
        mapped_scores(torch.zeros(3), MAPPING)
    with pytest.raises(ValueError, match="refers to classifier class 4 but logits have 3"):
        mapped_scores(torch.zeros(2, 3), MAPPING)
    with pytest.raises(ValueError, match="present must be"):
        mapped_targets(torch.zeros(2, 5), MAPPING, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"names not in the data set's classes: \['dgo'\]"):
        class_mapping(["background", "dog"], {"dgo": [1]})
    with pytest.raises(ValueError, match=r"'dog' has indices outside 0\.\.9"):
        class_mapping(["background", "dog"], {"dog": [10]}, num_model_classes=10)


def test_class_mapping_aligns_with_class_names() -> None:
    mapping = class_mapping(["background", "cat", "dog", "car"], {"dog": [5, 3, 5], "cat": [1]})
    assert mapping == ((), (1,), (3, 5), ())


def test_load_name_table_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"m\.json: class mapping file not found"):
        load_name_table(tmp_path / "m.json")
    (tmp_path / "m.json").write_text('{"dog": [1, -2]}')
    with pytest.raises(ValueError, match=r"m\.json: expected"):
        load_name_table(tmp_path / "m.json")
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(ValueError, match=r"m\.json: not valid JSON"):
        load_name_table(tmp_path / "m.json")


def test_mapped_targets_drive_explain() -> None:
    """Targets from the mapping give one map per data-set class; -1 gives a zero map."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 5),
    ).eval()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        logits = model(images)
    targets = mapped_targets(logits, MAPPING)
    maps = loupe.explain(model, images, targets, method="gradcam", target_layer="0")
    assert maps.shape == (2, 5, 8, 8)
    assert not maps[:, [0, 3]].any()
    for b in range(2):
        single = loupe.explain(model, images[b:b + 1], int(targets[b, 1]), method="gradcam",
                               target_layer="0")
        assert torch.allclose(maps[b, 1], single[0, 0], atol=1e-6)


# Every shipped entry, with a pattern that each member's ImageNet label must match.
LABEL_PATTERNS = {
    "bicycle": r"bicycle|bike", "car": r"wagon|cab|convertible|jeep|limousine|minivan|"
    r"Model T|race car|sports car", "motorcycle": r"moped|scooter",
    "airplane": r"airliner|warplane", "bus": r"bus|trolley coach",
    "train": r"train|locomotive|freight car|passenger car", "truck": r"truck|van",
    "boat": r"aircraft carrier|canoe|catamaran|ship|fireboat|gondola|lifeboat|liner|schooner|"
    r"speedboat|submarine|trimaran|yawl", "traffic light": "traffic light",
    "parking meter": "parking meter", "bench": "park bench", "bird": r".", "cat": r"\bcat\b",
    "dog": r".", "horse": "sorrel", "sheep": r"\bram\b", "cow": r"\box\b",
    "elephant": r"elephant|tusker", "bear": r"\bbear\b", "zebra": "zebra",
    "backpack": "backpack", "umbrella": "umbrella", "handbag": "purse", "tie": r"\btie\b",
    "skis": r"\bski\b", "sports ball": r"ball\b", "tennis racket": "racket",
    "bottle": "bottle", "cup": r"\bcup\b|mug", "spoon": "spoon", "bowl": "bowl",
    "banana": "banana", "apple": "Granny Smith", "orange": "orange", "broccoli": "broccoli",
    "hot dog": "hotdog", "pizza": "pizza", "chair": r"\bchair\b", "couch": "couch",
    "potted plant": "flowerpot", "bed": "four-poster", "dining table": "dining table",
    "toilet": "toilet", "tv": r"television|monitor", "laptop": r"laptop|notebook computer",
    "mouse": "computer mouse", "remote": "remote control", "keyboard": "computer keyboard",
    "cell phone": "cellular telephone", "microwave": "microwave", "toaster": "toaster",
    "sink": "washbasin", "refrigerator": "refrigerator", "clock": r"\bclock\b", "vase": "vase",
    "teddy bear": "teddy", "hair drier": "hair drier",
}


def test_shipped_coco_to_imagenet_table_structure() -> None:
    table = load_name_table()
    assert set(table) == set(LABEL_PATTERNS) and len(table) == 57
    assert set(table) <= set(COCO_CLASSES)
    members = [i for indices in table.values() for i in indices]
    assert len(members) == len(set(members)), "an ImageNet class stands for two COCO classes"
    assert all(0 <= i < 1000 for i in members)
    assert table["dog"] == list(range(151, 269)) and table["cat"] == list(range(281, 286))
    assert table["bird"] == [*range(7, 25), *range(80, 101), *range(127, 147)]
    assert "giraffe" not in table and "kite" not in table and "person" not in table
    mapping = class_mapping(("background", *COCO_CLASSES), table, num_model_classes=1000)
    assert mapping[0] == () and mapping[COCO_CLASSES.index("dog") + 1] == tuple(range(151, 269))


def test_shipped_table_matches_the_imagenet_labels(assets) -> None:
    """Each index read in imagenet_labels_1001.txt (line i + 1 = class i) names its class."""
    lines = (assets / "weights" / "imagenet_labels_1001.txt").read_text().splitlines()
    labels = lines[1:]
    assert len(labels) == 1000 and lines[0] == "background"
    for name, indices in load_name_table().items():
        for i in indices:
            assert re.search(LABEL_PATTERNS[name], labels[i]), (name, i, labels[i])
    assert labels[150].startswith("sea lion") and labels[269].startswith("timber wolf")
    assert labels[151] == "Chihuahua" and labels[268] == "Mexican hairless"
    assert labels[21] == "kite" and labels[850].startswith("teddy")
    assert labels[286].startswith("cougar") and labels[6].startswith("stingray")
    assert labels[25].startswith("European fire salamander")
    assert labels[79] == "centipede" and labels[101] == "tusker"
    assert labels[126].startswith("isopod") and labels[147].startswith("grey whale")
    assert not any("giraffe" in label for label in labels)


def test_shipped_table_serves_a_data_set_with_some_coco_classes() -> None:
    from loupe.data.mapping import load_class_map

    mapping = load_class_map("coco_to_imagenet", ["background", "cat"], 1000)
    assert mapping == ((), (281, 282, 283, 284, 285))
    with pytest.raises(ValueError, match="coco_to_imagenet: no class of the data set"):
        load_class_map("coco_to_imagenet", ["background", "widget"], 1000)
