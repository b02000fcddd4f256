"""Pure parts of the grounded region stage: box formats, resize round trips, NMS, keyword assignment."""

from __future__ import annotations

import numpy as np
import pytest

from mfpo.grounding.boxes import (
    box_iou,
    cxcywh_to_xyxy,
    detector_boxes_to_image,
    image_boxes_to_detector,
    nms,
)
from mfpo.grounding.config import GroundingConfig
from mfpo.grounding.detector import grounding_prompt, select_keyword_boxes, token_spans
from mfpo.segmentation.config import SamConfig
from mfpo.segmentation.masks import dilate, is_degenerate

KNOWN = np.array([[10, 20, 110, 70], [0, 0, 640, 480], [300.5, 100.25, 333.75, 479.0]], dtype=np.float64)


@pytest.mark.parametrize("square_padded", [False, True])
@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (512, 512)])
def test_detector_box_round_trip_is_exact(square_padded, h, w):
    boxes = KNOWN.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    normalized = image_boxes_to_detector(boxes, h, w, square_padded)
    back = detector_boxes_to_image(normalized, h, w, square_padded)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)


def test_owlv2_boxes_are_normalized_to_the_padded_square():
    # a box covering the whole 480-high, 640-wide image, seen by OWLv2 in a 640x640 padded square
    full = np.array([[0.5, 0.375, 1.0, 0.75]])  # cx, cy, w, h relative to the 640 side
    np.testing.assert_allclose(detector_boxes_to_image(full, 480, 640, square_padded=True), [[0, 0, 640, 480]])
    # the same numbers read as GroundingDINO (normalized to the image itself) mean another box
    np.testing.assert_allclose(detector_boxes_to_image(full, 480, 640, square_padded=False), [[0, 0, 640, 360]])


def test_sam_resize_longest_side_box_round_trip():
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(1024)
    for h, w in [(512, 256), (480, 640), (333, 517)]:
        boxes = KNOWN.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        resized = transform.apply_boxes(boxes, (h, w))
        nh, nw = transform.get_preprocess_shape(h, w, 1024)
        back = resized.reshape(-1, 4) / np.array([nw / w, nh / h, nw / w, nh / h])
        np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)
    # exact when the scale is a power of two
    exact = transform.apply_boxes(KNOWN[:1].copy(), (512, 256))
    assert exact.tolist() == [[20.0, 40.0, 220.0, 140.0]]


def test_cxcywh_iou_and_nms_by_hand():
    assert cxcywh_to_xyxy([[5, 5, 4, 2]]).tolist() == [[3, 4, 7, 6]]
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = box_iou(a, a)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0.0 and iou[1, 1] == 1.0
    assert nms(a, [0.9, 0.8, 0.7], iou_threshold=0.3) == [0, 2]
    assert nms(a, [0.9, 0.8, 0.7], iou_threshold=0.5) == [0, 1, 2]
    assert nms(a, [0.1, 0.8, 0.7], iou_threshold=0.3) == [1, 2]


def test_grounding_prompt_and_token_spans():
    prompt, spans = grounding_prompt(["Red  Cup", "dog"])
    assert prompt == "red cup. dog."
    assert [prompt[a:b] for a, b in spans] == ["red cup", "dog"]
    # offsets of "[CLS] red cup . dog . [SEP]"
    offsets = [(0, 0), (0, 3), (4, 7), (7, 8), (9, 12), (12, 13), (0, 0)]
    assert token_spans(offsets, spans) == [[1, 2], [4]]


def test_select_keyword_boxes_thresholds_assigns_and_caps():
    config = GroundingConfig(model_path="x", box_threshold=0.3, text_threshold=0.25, nms_iou=0.5,
                             max_boxes_per_keyword=1)
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [70, 70, 80, 80]], dtype=np.float64)
    box_scores = np.array([0.9, 0.8, 0.6, 0.2])
    keyword_scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.6], [0.1, 0.2]])
    found = select_keyword_boxes(["cup", "dog"], boxes, box_scores, keyword_scores, config, 0.25)
    assert found["cup"].boxes.tolist() == [[0, 0, 10, 10]] and found["cup"].scores.tolist() == [0.9]
    assert found["dog"].boxes.tolist() == [[50, 50, 60, 60]]
    # the 4th box is under box_threshold; a keyword below text_threshold gets nothing
    none = select_keyword_boxes(["cup", "dog"], boxes, box_scores, keyword_scores * 0.1, config, 0.25)
    assert none == {}


def test_mask_dilation_and_degenerate_masks():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    assert dilate(mask, 1).sum() == 9 and dilate(mask, 2).sum() == 25 and dilate(mask, 0) is mask
    assert is_degenerate(np.zeros((4, 4), bool), 0.01, 0.9) == "empty"
    assert "too small" in is_degenerate(mask, 0.05, 0.9)
    assert "whole image" in is_degenerate(np.ones((4, 4), bool), 0.01, 0.9)
    assert is_degenerate(dilate(mask, 2), 0.01, 0.9) is None


def test_sam_config_defaults_and_validation():
    assert SamConfig(checkpoint="x", sam_type="vit_b").effective_batch_size == 16
    assert SamConfig(checkpoint="x", batch_size=3).effective_batch_size == 3
    with pytest.raises(ValueError, match="sam_type"):
        SamConfig(checkpoint="x", sam_type="vit_x")
    with pytest.raises(ValueError, match="min_mask_fraction"):
        SamConfig(checkpoint="x", min_mask_fraction=0.5, max_mask_fraction=0.4)


def test_prefetched_keeps_order_overlaps_and_raises_in_place():
    import threading

    from mfpo.prefetch import prefetched

    seen_threads = set()

    def square(x: int) -> int:
        seen_threads.add(threading.current_thread().name)
        if x == 3:
            raise ValueError("bad item 3")
        return x * x

    assert list(prefetched([0, 1, 2], square)) == [(0, 0), (1, 1), (2, 4)]
    assert all(name.startswith("mfpo-prefetch") for name in seen_threads)
    assert list(prefetched([], square)) == []
    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, value in prefetched([1, 2, 3, 4], square):
            got.append((item, value))
    assert got == [(1, 1), (2, 4)]
