"""faithfulness_table: per-image values equal the metric functions, batches do not matter,
intervals are paired percentile bootstraps of the mean, and errors are clear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loupe import explain
from loupe.metrics.bootstrap import bootstrap_mean_ci
from loupe.metrics.faithfulness import (
    confidence_change,
    deletion_curves,
    energy_pointing_game,
    faithfulness_table,
    list_metrics,
    road,
)
from tests.metrics.faith_models import images, tiny_cnn

FAST = {"deletion": {"steps": 4}, "insertion": {"steps": 4}, "road": {"fractions": (0.3, 0.7)}}


@pytest.fixture(scope="module")
def data():
    model, x = tiny_cnn(), images(5, 16)
    regions = torch.zeros(5, 1, 16, 16, dtype=torch.bool)
    regions[:, :, 4:12, 2:9] = True
    regions[3] = False  # an image without its object: no pointing value
    return model, x, regions


def test_per_image_values_are_the_metric_functions(data):
    model, x, regions = data
    table = faithfulness_table(
        model, x, methods=["gradcam", "saliency"], regions=regions, batch_size=2,
        metric_options=FAST, chunk_size=3,
    )
    assert table.metrics == tuple(list_metrics())
    for method in ("gradcam", "saliency"):
        maps = explain(model, x, None, method=method)
        expected = {
            "deletion": deletion_curves(model, x, maps, steps=4).auc,
            "road": road(model, x, maps, fractions=(0.3, 0.7)).combined,
            "average_drop": confidence_change(model, x, maps).average_drop,
            "energy_pointing_game": energy_pointing_game(maps, regions),
        }
        for metric, value in expected.items():
            torch.testing.assert_close(table.per_image[method, metric], value[:, 0].double(),
                                       rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.isnan(table.per_image["gradcam", "pointing_game"][3])
    interval = table.intervals["gradcam", "pointing_game"]
    assert interval is not None and interval.n == 1000


def test_metrics_default_without_regions_and_batches_as_iterable(data):
    model, x, _ = data
    plain = faithfulness_table(model, x, [1, 2, 0, 1, 4], metrics=["deletion", "average_drop"],
                               metric_options=FAST, batch_size=5)
    batches = [(x[:3], [1, 2, 0], None), (x[3:], [1, 4], None)]
    streamed = faithfulness_table(model, batches, metrics=["deletion", "average_drop"],
                                  metric_options=FAST)
    for key, values in plain.per_image.items():
        torch.testing.assert_close(streamed.per_image[key], values, rtol=1e-5, atol=1e-6)
    default = faithfulness_table(model, x[:2], metrics=None, metric_options=FAST)
    assert "pointing_game" not in default.metrics and "randomization" in default.metrics


def test_records_and_paired_intervals(data):
    model, x, _ = data
    table = faithfulness_table(model, x, methods=["gradcam", "saliency"],
                               metrics=["insertion"], metric_options=FAST, n_boot=200, seed=3)
    records = table.records()
    json.dumps(records)
    assert [(r["method"], r["metric"]) for r in records] == [("gradcam", "insertion"),
                                                            ("saliency", "insertion")]
    values = table.per_image["gradcam", "insertion"]
    interval = bootstrap_mean_ci(values, 200, 3)
    assert records[0]["mean"] == pytest.approx(values.mean().item())
    assert (records[0]["low"], records[0]["high"]) == (interval.low, interval.high)
    assert records[0]["higher_is_better"] is True and records[0]["images"] == 5


def test_several_targets_average_per_image(data):
    model, x, _ = data
    table = faithfulness_table(model, x[:2], [[1, 3], [2]], metrics=["average_drop"])
    maps = explain(model, x[:2], [[1, 3], [2]], method="gradcam")
    drop = confidence_change(model, x[:2], maps, [[1, 3], [2]]).average_drop
    expected = torch.stack([drop[0].mean(), drop[1, 0]]).double()
    torch.testing.assert_close(table.per_image["gradcam", "average_drop"], expected)


def test_bootstrap_mean_ci_matches_a_numpy_loop():
    values = torch.linspace(0, 1, 7) ** 2
    interval = bootstrap_mean_ci(values, n=300, seed=5, level=0.9)
    generator = torch.Generator().manual_seed(5)
    draws = torch.randint(7, (300, 7), generator=generator).numpy()
    means = values.double().numpy()[draws].mean(1)
    low, high = np.quantile(means, [0.05, 0.95])
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert interval.observed == pytest.approx(values.mean().item())
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_ci(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="per-image values"):
        bootstrap_mean_ci(torch.ones(2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ["nope"]}, "unknown metric 'nope'"),
        ({"metrics": ["pointing_game"]}, "need regions"),
        ({"methods": "gradcam"}, "methods must be a non-empty list"),
        ({"methods": ["nope"]}, "unknown method 'nope'"),
        ({"metric_options": {"delete": {}}}, "metric_options has no group 'delete'"),
        ({"regions": torch.zeros(2, 16, 16, dtype=torch.bool)}, "regions cover 2 images"),
    ],
)
def test_errors(data, kwargs, message):
    model, x, _ = data
    with pytest.raises(ValueError, match=message) as info:
        faithfulness_table(model, x, **kwargs)
    assert "\n" not in str(info.value)


def test_iterable_with_targets_is_an_error(data):
    model, x, _ = data
    with pytest.raises(ValueError, match="inside the batches"):
        faithfulness_table(model, [(x, None, None)], 1)
