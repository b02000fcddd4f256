"""Pure box arithmetic of the grounding stage: formats, resize round trips, NMS.

Boxes are float arrays (n, 4). Pixel boxes are ``(x0, y0, x1, y1)`` in the pixel
convention of :mod:`mfpo.regions.masks` (x1, y1 exclusive). Detector outputs are
``(cx, cy, w, h)`` normalized to [0, 1] of the frame the model saw.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.float64]


def cxcywh_to_xyxy(boxes: npt.ArrayLike) -> Boxes:
    """(n, 4) centre/size -> corners, same units."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = b.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def normalized_to_pixels(boxes: npt.ArrayLike, frame_height: float, frame_width: float) -> Boxes:
    """(n, 4) normalized corner boxes -> pixels of a frame of the given size."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return b * np.array([frame_width, frame_height, frame_width, frame_height])


def detector_boxes_to_image(
    boxes_cxcywh: npt.ArrayLike, height: int, width: int, square_padded: bool
) -> Boxes:
    """Normalized (cx, cy, w, h) detector boxes -> pixel (x0, y0, x1, y1) of the original image.

    GroundingDINO normalizes to the (resized, unpadded) image itself: scale by (W, H).
    OWLv2 pads the image to a square at the bottom/right before resizing, so its boxes
    are normalized to a side of max(H, W): scale both axes by max(H, W). The result is
    clipped to the image.
    """
    corners = cxcywh_to_xyxy(boxes_cxcywh)
    if square_padded:
        side = float(max(height, width))
        pixels = normalized_to_pixels(corners, side, side)
    else:
        pixels = normalized_to_pixels(corners, height, width)
    return clip_boxes(pixels, height, width)


def image_boxes_to_detector(boxes_xyxy: npt.ArrayLike, height: int, width: int, square_padded: bool) -> Boxes:
    """Inverse of :func:`detector_boxes_to_image` (without the clip): pixels -> normalized cxcywh."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    sx, sy = (float(max(height, width)),) * 2 if square_padded else (float(width), float(height))
    x0, y0, x1, y1 = (b / np.array([sx, sy, sx, sy])).T
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)


def clip_boxes(boxes: npt.ArrayLike, height: int, width: int) -> Boxes:
    """Clip (n, 4) pixel boxes to [0, W] x [0, H]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def box_area(boxes: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(n,) areas of (n, 4) corner boxes (0 for inverted boxes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(n, m) IoU of corner boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: kept indexes, best score first (ties: lower index)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    keep: list[int] = []
    for i in order:
        if keep and box_iou(b[i], b[keep]).max() > iou_threshold:
            continue
        keep.append(i)
    return keep
