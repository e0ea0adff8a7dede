"""How an image fits the model's input: stretched to it, or letterboxed (`data.fit`).

"stretch" resizes every image to the input's height and width, whatever its aspect ratio.
"pad" keeps the image's aspect ratio: it is mirrored out (numpy's "symmetric" padding, so the
border continues the texture) to the smallest box of the input's aspect ratio that holds it,
centred, and that box is resized to the input. The model then sees every image scaled by one
factor along both axes. Its anomaly map covers the padded box; `unpad` crops the image's part
out of it and resizes that back to the input, so maps, masks, image scores and metrics stay on
the image's own geometry (docs/ablations.md, "The real-defects yardstick"). Everything here is
NumPy only: the ONNX predict path reads and unpads without torch.
"""

from __future__ import annotations

import numpy as np


def padded_hw(image_hw: tuple[int, int], ratio: float) -> tuple[int, int]:
    """The smallest (height, width) of height / width `ratio` that holds an `image_hw` image."""
    h, w = image_hw
    if h / w < ratio:
        return max(h, round(w * ratio)), w
    return h, max(w, round(h / ratio))


def letterbox(rgb: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) -> (H', W', C) of the input's aspect ratio, the image centred and mirrored out.

    Returns `rgb` itself when it already has that ratio.
    """
    h, w = rgb.shape[:2]
    height, width = padded_hw((h, w), input_hw[0] / input_hw[1])
    if (height, width) == (h, w):
        return rgb
    top, left = (height - h) // 2, (width - w) // 2
    pad = [(top, height - h - top), (left, width - w - left)] + [(0, 0)] * (rgb.ndim - 2)
    return np.pad(rgb, pad, mode="symmetric")


def content_box(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where a letterboxed `image_hw` image lies in the input: (top, left, height, width) pixels."""
    h, w = image_hw
    height, width = padded_hw((h, w), input_hw[0] / input_hw[1])
    kh, kw = input_hw[0] / height, input_hw[1] / width
    top, left = (height - h) // 2, (width - w) // 2
    y0, x0 = round(top * kh), round(left * kw)
    y1, x1 = round((top + h) * kh), round((left + w) * kw)
    return y0, x0, max(1, y1 - y0), max(1, x1 - x0)


def _bilinear(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(..., h, w) -> (..., H, W) float32, bilinear on pixel centres (torch's interpolate with
    align_corners=False, no antialiasing)."""

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, wy = taps(a.shape[-2], out_hw[0])
    x0, x1, wx = taps(a.shape[-1], out_hw[1])
    a = a.astype(np.float32, copy=False)
    rows = a[..., y0, :] * (1 - wy)[:, None] + a[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def unpad(amap: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(..., h, w) map of a letterboxed image -> (..., h, w) float32: the image's part, resized
    back (bilinear) to the input size.

    Args:
        amap: the map (or image channels) at the model's input size, covering the padded box.
        image_hw: the image's original (height, width).
    """
    input_hw = (int(amap.shape[-2]), int(amap.shape[-1]))
    y, x, h, w = content_box(image_hw, input_hw)
    if (h, w) == input_hw:
        return amap.astype(np.float32)
    return _bilinear(amap[..., y : y + h, x : x + w], input_hw)


def unpad_images(images: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """(N, C, h, w) uint8 letterboxed images -> (N, C, h, w) uint8, each image's part resized to
    the input (its stretched view, on the geometry of the unpadded maps: for heat-map panels)."""
    out = [
        unpad(image, (int(hw[0]), int(hw[1]))) for image, hw in zip(images, originals, strict=True)
    ]
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)


def pad_mask(mask: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) bool mask on the image's geometry -> (h, w) on its letterboxed input (nearest; the
    padding is normal): the inverse of `unpad`, for masks a model trains on."""
    input_hw = (int(mask.shape[-2]), int(mask.shape[-1]))
    y, x, h, w = content_box(image_hw, input_hw)
    if (h, w) == input_hw:
        return mask
    rows = np.minimum((np.arange(h) * input_hw[0] / h).astype(np.int64), input_hw[0] - 1)
    cols = np.minimum((np.arange(w) * input_hw[1] / w).astype(np.int64), input_hw[1] - 1)
    out = np.zeros(input_hw, dtype=bool)
    out[y : y + h, x : x + w] = mask[rows][:, cols]
    return out
