"""The out-of-distribution check: tile statistics, distances, the slide verdict, real slides."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.contract import ModelContract
from engine.model import Model
from engine.ood import (
    PCAM_COLOUR,
    TILE_STATS,
    ColourStats,
    Limits,
    OodPolicy,
    judge_ood,
    tile_colour,
)
from engine.pipeline import AnalysisParams, analyse_slide
from engine.slide import ArraySlide, open_slide
from tests.onnx_models import make_contract

REPO = Path(__file__).resolve().parents[2]


def _patch(rgb: tuple[int, int, int], px: int = 8) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (1, px, px, 3)).copy()


def test_tile_colour_of_plain_patches() -> None:
    glass = tile_colour(_patch((255, 255, 255)))
    assert glass.shape == (1, len(TILE_STATS)) and np.isnan(glass).all()
    stats = tile_colour(_patch((100, 50, 150)))[0]
    expected = [-math.log10((v + 1) / 256) for v in (100, 50, 150)]
    # float32 OD table: a few ulps of 1
    np.testing.assert_allclose(stats[:3], expected, rtol=4 * float(np.finfo(np.float32).eps))
    assert stats[4] == 0.0  # a uniform patch has no spread
    purple, pink = tile_colour(np.concatenate([_patch((90, 60, 150)), _patch((240, 120, 190))]))
    assert purple[3] == 1.0 and pink[3] == 0.0  # haematoxylin- vs eosin-dominant


def test_distance_is_about_one_on_the_fitted_sample() -> None:
    rng = np.random.default_rng(0)
    x = rng.multivariate_normal([0.2, 0.4, 0.2, 0.7, 0.5], np.diag([0.01, 0.03, 0.008, 0.03, 0.04]), 20000)
    stats = ColourStats.fit(x)
    d2 = stats.distance(x) ** 2
    # mean of chi2(5)/5 over n samples: 1 within 4 standard errors (sd of chi2(5)/5 = sqrt(2/5))
    assert abs(d2.mean() - 1) < 4 * math.sqrt(2 / 5) / math.sqrt(len(x))
    assert np.isnan(stats.distance(np.array([[np.nan] * 5]))).all()


def test_judge_uses_median_and_far_fraction() -> None:
    policy = OodPolicy(colour_limits=Limits(far_tile=2.0, median=1.4, far_fraction=0.1))
    near = np.full(100, 0.9)
    assert not judge_ood(near, None, policy).out_of_distribution
    some_far = near.copy()
    some_far[:11] = 5.0  # 11% far, median still 0.9
    v = judge_ood(some_far, None, policy)
    assert v.out_of_distribution and v.colour.median == pytest.approx(0.9)
    assert judge_ood(np.full(100, 1.5), None, policy).out_of_distribution
    assert judge_ood(near, np.full(100, 4.0), policy).reasons == ("tissue unlike the training patches",)
    empty = judge_ood(np.array([np.nan]), None, policy)
    assert not empty.out_of_distribution and empty.colour.median is None


def test_contract_carries_the_policy() -> None:
    assert make_contract().ood == OodPolicy()
    custom = OodPolicy(colour_limits=Limits(1.0, 2.0, 0.5), calibration="test")
    back = ModelContract.from_json(make_contract(ood=custom).to_json())
    assert back.ood == custom
    assert back.ood.colour == PCAM_COLOUR


def test_pipeline_reports_ood_for_every_tile(model: Model, tissue_slide: ArraySlide) -> None:
    a = analyse_slide(tissue_slide, model, AnalysisParams(read_threads=1))
    assert a.colour_distances is not None and len(a.colour_distances) == len(a.probs)
    assert a.ood is not None and a.ood.colour.median is not None
    # flat synthetic pink has no texture: far from any PCam patch
    assert a.ood.out_of_distribution


@pytest.fixture(scope="module")
def shipped() -> Model:
    return Model.load(threads=1)


@pytest.mark.parametrize(
    ("slide", "mpp", "flagged"),
    [
        ("demo", None, False),
        ("CMU-1-Small-Region.svs", None, True),
        ("tcga-cr-7395-01a-01-ts1.svs", 0.25, True),
        ("tcga-cr-7395-01a-01-ts1.svs", 0.5, True),
    ],
)
def test_real_slides_are_told_apart(
    shipped: Model, shared_data: Path, slide: str, mpp: float | None, flagged: bool
) -> None:
    path = REPO / "assets" / "demo_slide.tiff" if slide == "demo" else shared_data / "slides" / slide
    with open_slide(path, mpp=mpp) as s:
        a = analyse_slide(s, shipped, AnalysisParams(read_threads=1))
    assert a.ood is not None and a.ood.out_of_distribution is flagged


def _features_model(tmp_path: Path, centre: tuple[float, float, float]) -> Model:
    """The colour test model with its pooled colour exported as features, and feature
    statistics centred on ``centre`` (variance 0.01 in every direction)."""
    import onnx
    from onnx import TensorProto, helper

    from engine.contract import METADATA_KEY
    from engine.ood import FeatureStats
    from tests.onnx_models import colour_graph

    graph = colour_graph()
    graph.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 3]))
    stats = FeatureStats(
        mean=centre,
        components=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
        variances=(0.01, 0.01),
        residual_variance=0.01,
        n_patches=10,
    )
    entry = graph.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = make_contract(features_name="flat", feature_stats=stats).to_json()
    path = tmp_path / f"features-{centre[0]:.4f}.onnx"
    onnx.save(graph, str(path))
    return Model.load(path, threads=1)


def test_feature_distance_joins_the_verdict(tmp_path: Path, tissue_slide: ArraySlide) -> None:
    params = AnalysisParams(read_threads=1)
    model = _features_model(tmp_path, (0.0, 0.0, 0.0))
    # centre the statistics on this slide's own pooled colour: its tiles are near
    patch = tissue_slide.read_region((900, 700), 0, (95, 95))[None]
    from engine.preprocess import prepare

    _, feats = model.infer_prepared(prepare(patch, model.contract))
    assert feats is not None
    own = (float(feats[0, 0]), float(feats[0, 1]), float(feats[0, 2]))
    near = _features_model(tmp_path, own)
    far = _features_model(tmp_path, (own[0] + 5.0, own[1], own[2]))
    a_near = analyse_slide(tissue_slide, near, params)
    a_far = analyse_slide(tissue_slide, far, params)
    assert a_near.ood is not None and a_far.ood is not None
    assert a_near.ood.features is not None and a_far.ood.features is not None
    assert a_near.feature_distances is not None and len(a_near.feature_distances) == len(a_near.probs)
    assert "tissue unlike the training patches" not in a_near.ood.reasons
    assert "tissue unlike the training patches" in a_far.ood.reasons
    assert a_far.ood.features.median is not None and a_far.ood.features.median > 10
