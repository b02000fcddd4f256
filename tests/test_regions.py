"""Region stage: masks, the simple providers, and the fallback chain."""

from __future__ import annotations

import numpy as np
import pytest

from mfpo.regions.annotations import AnnotationProvider
from mfpo.regions.base import RegionProvider, RegionRequest
from mfpo.regions.chain import resolve_regions
from mfpo.regions.masks import annotation_mask, box_to_mask, mask_area, mask_box, polygon_to_mask
from mfpo.regions.random_region import RandomProvider, random_box
from mfpo.regions.whole_image import GlobalProvider
from mfpo.schemas import Annotation


def exact_label(keyword, labels):
    return [i for i, label in enumerate(labels) if label == keyword]


def test_box_mask_box_round_trip_is_exact():
    mask = box_to_mask((3, 2, 10, 7), 20, 30)
    assert mask.sum() == 7 * 5
    assert mask[2, 3] and mask[6, 9] and not mask[7, 9] and not mask[6, 10]
    assert mask_box(mask) == (3.0, 2.0, 10.0, 7.0)
    assert mask_area(mask) == pytest.approx(35 / 600)


def test_fractional_box_covers_touched_pixels_and_clips():
    mask = box_to_mask((2.5, 1.2, 4.1, 3.0), 10, 10)
    assert mask_box(mask) == (2.0, 1.0, 5.0, 3.0)
    clipped = box_to_mask((-5, -5, 4, 100), 10, 8)
    assert mask_box(clipped) == (0.0, 0.0, 4.0, 10.0)
    assert not box_to_mask((20, 20, 30, 30), 10, 10).any()
    assert mask_box(np.zeros((3, 3), bool)) == (0.0, 0.0, 0.0, 0.0)


def test_polygon_mask_triangle():
    mask = polygon_to_mask([(0, 0), (9, 0), (0, 9)], 10, 10)
    assert mask[0, 0] and mask[0, 9] and mask[9, 0]
    assert not mask[9, 9]
    assert 45 <= mask.sum() <= 60  # ~ half of the 10x10 square plus the edge pixels
    ann = Annotation(label="roof", polygon=[(0, 0), (9, 0), (0, 9)])
    assert np.array_equal(annotation_mask(ann, 10, 10), mask)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_random_box_has_the_requested_area_and_is_seeded(fraction):
    h, w = 240, 320
    areas = []
    for seed in range(20):
        x0, y0, x1, y1 = random_box(h, w, fraction, (0.5, 2.0), seed)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        areas.append((x1 - x0) * (y1 - y0) / (h * w))
    assert np.allclose(areas, fraction, rtol=0.03)
    assert random_box(h, w, fraction, (0.5, 2.0), 3) == random_box(h, w, fraction, (0.5, 2.0), 3)
    assert len({random_box(h, w, fraction, (0.5, 2.0), s) for s in range(20)}) > 10


def test_providers_satisfy_the_protocol():
    for p in (GlobalProvider(), RandomProvider(), AnnotationProvider(exact_label)):
        assert isinstance(p, RegionProvider)


def _request(annotations=(), keywords=("cup",), seed=0):
    return RegionRequest(image=np.zeros((20, 30, 3), np.uint8), keywords=tuple(keywords),
                         annotations=tuple(annotations), seed=seed)


def test_annotation_provider_unions_the_boxes_of_a_keyword():
    anns = (Annotation(label="cup", box=(0, 0, 5, 5)), Annotation(label="cup", box=(10, 10, 15, 15)),
            Annotation(label="dog", box=(20, 0, 30, 10)))
    [regions] = AnnotationProvider(exact_label).locate([_request(anns, ("cup", "cat"))])
    assert len(regions) == 1  # "cat" names nothing
    assert regions[0].keyword == "cup" and regions[0].source == "annotations"
    assert regions[0].mask.sum() == 50


def test_chain_falls_back_to_global_and_records_it():
    anns = (Annotation(label="cup", box=(0, 0, 5, 5)),)
    reqs = [_request(anns, ("cup",)), _request(anns, ("dog",)), _request((), ("cup",))]
    results = resolve_regions(reqs, [AnnotationProvider(exact_label)], fallback_to_global=True)
    assert [r.fallback for r in results] == [False, True, True]
    assert results[0].regions[0].source == "annotations"
    assert results[1].regions[0].source == "global" and results[1].regions[0].mask.all()


def test_chain_tries_providers_in_order_on_the_unresolved_only():
    seen = []

    class Recording:
        name = "random"

        def locate(self, requests):
            seen.append(len(requests))
            return RandomProvider().locate(requests)

    anns = (Annotation(label="cup", box=(0, 0, 5, 5)),)
    reqs = [_request(anns, ("cup",)), _request((), ("cup",), seed=1)]
    results = resolve_regions(reqs, [AnnotationProvider(exact_label), Recording()])
    assert seen == [1]
    assert results[1].regions[0].source == "random" and not results[1].fallback


def test_without_fallback_nothing_found_means_no_regions():
    results = resolve_regions([_request((), ("cup",))], [AnnotationProvider(exact_label)], False)
    assert results[0].regions == [] and not results[0].fallback
