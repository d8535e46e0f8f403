"""The one image reader of efl_d2 (training, evaluation, prediction, pictures), and a cheap check
of an image file for preflights.

detectron2's ``read_image`` converts with PIL's ``Image.convert``, which saturates 16-bit values:
a 16-bit greyscale PNG comes out almost white. :func:`read_image` reads:

- **8-bit modes** ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", ...) exactly
  as detectron2's ``read_image`` does: the same pixels.
- **16-bit greyscale**: modes "I;16", "I;16B", "I;16L", "I;16N", and 32-bit integer "I" whose
  values all lie in 0..65535 (how PIL opens some 16-bit TIFFs). Each value ``v`` becomes
  ``round(v * 255 / 65535)``, i.e. ``(v + 128) // 257``: the full 16-bit range onto the full 8-bit
  range, so ``v * 257`` gives back ``v`` exactly. The result is converted like an 8-bit "L"
  image. (No per-image contrast stretch: an "I" image holding 8-bit values comes out dark.)
- **refused** with :class:`UnsupportedImageModeError` (a ``ValueError``): 32-bit float "F", "I"
  with values outside 0..65535, and modes PIL cannot convert to RGB.

EXIF orientation is applied as detectron2 applies it.
"""

from __future__ import annotations

import numpy as np
from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image, UnidentifiedImageError

__all__ = [
    "SIXTEEN_BIT_MODES",
    "UnsupportedImageModeError",
    "image_file_problem",
    "read_image",
    "sixteen_to_eight_bit",
]

#: PIL modes of 16-bit unsigned greyscale (the byte order differs)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")

_EXIF_ORIENTATION = 274  # the EXIF tag detectron2's _apply_exif_orientation reads
_ORIENTATIONS_SWAPPING_AXES = (5, 6, 7, 8)  # transposes and 90-degree rotations


class UnsupportedImageModeError(ValueError):
    """An image whose pixel mode cannot be mapped to 8 bits meaningfully (e.g. 32-bit float).
    A ``ValueError``, as PIL's errors for bad files, so the callers catching those catch it."""


def _unsupported(path: str, mode: str, why: str) -> UnsupportedImageModeError:
    return UnsupportedImageModeError(
        f"{path!r} has PIL image mode {mode!r} ({why}), which efl_d2 does not read: convert it "
        "to 8-bit RGB or greyscale (or 16-bit integer greyscale) first"
    )


def _mode_problem(mode: str) -> str | None:
    """Why an image of PIL ``mode`` cannot be read, or None. The values of an "I" image are
    only known once decoded: :func:`read_image` checks them."""
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return None
    if mode == "F":
        return "32-bit floating point"
    try:
        Image.new(mode, (1, 1)).convert("RGB")  # a 1-pixel probe: can PIL convert this mode?
    except (ValueError, OSError):
        return "PIL cannot convert it to RGB"
    return None


def sixteen_to_eight_bit(values: np.ndarray) -> np.ndarray:
    """16-bit values (any integer dtype and byte order, in 0..65535) as uint8 of the same shape:
    ``round(v * 255 / 65535)``, computed exactly in integers as ``(v + 128) // 257`` (``v / 257``
    is never halfway between two integers, so there is no tie to break)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_eight_bit(image: Image.Image, path: str) -> Image.Image:
    """``image`` itself if its mode is read as is; a 16-bit greyscale image as an 8-bit "L" one
    (:func:`sixteen_to_eight_bit`). Raises :class:`UnsupportedImageModeError` for the rest."""
    problem = _mode_problem(image.mode)
    if problem is not None:
        raise _unsupported(path, image.mode, problem)
    if image.mode not in SIXTEEN_BIT_MODES and image.mode != "I":
        return image
    values = np.asarray(image)  # (H, W) uint16 (either byte order), or int32 for "I"
    if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        why = f"32-bit integers, values {values.min()}..{values.max()} outside 0..65535"
        raise _unsupported(path, image.mode, why)
    return Image.fromarray(sixteen_to_eight_bit(values))


def _to_array(image: Image.Image, format: str | None) -> np.ndarray:
    """An 8-bit ``image`` as detectron2's ``convert_PIL_to_numpy(image, format)``, except that an
    RGB image read as "RGB" / "BGR" is not converted to RGB first: that conversion would copy it
    whole, and BGR is a channel-reversed view of the one RGB array (the image is held once)."""
    if format in ("RGB", "BGR") and image.mode == "RGB":
        rgb = np.asarray(image)
        return rgb[:, :, ::-1] if format == "BGR" else rgb
    return convert_PIL_to_numpy(image, format)


def read_image(path: str, format: str | None = "BGR") -> np.ndarray:
    """Read an image file as detectron2's ``read_image(path, format)`` does, with 16-bit
    greyscale mapped to 8 bits instead of saturated (the module docstring has the rule).

    Args:
        path: a file path or anything ``PathManager`` opens.
        format: "BGR", "RGB", "L", another PIL mode, "YUV-BT.601", or None (the file's own mode,
            8 bits).

    Returns:
        An (H, W, C) uint8 array (C = 3 for "RGB"/"BGR", 1 for "L"; float for "YUV-BT.601"),
        EXIF orientation applied. For "RGB" and "BGR" the full image is held once ("BGR" of an
        RGB file is a channel-reversed view: not C-contiguous).

    Raises:
        UnsupportedImageModeError: (a ``ValueError``) for the modes refused, naming file and mode.
        OSError, SyntaxError, ValueError: as PIL raises them for missing, truncated or non-image
            files.
    """
    with PathManager.open(path, "rb") as f:
        image = _apply_exif_orientation(Image.open(f))
        return _to_array(_to_eight_bit(image, path), format)


def _header_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag as far as the file's header has it, or None."""
    try:
        # The base class's getexif reads what was parsed with the header; PNG's override decodes
        # the whole image to look for an eXIf chunk after the pixel data (rare; missed here).
        return Image.Image.getexif(image).get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001  (bad EXIF: detectron2's _apply_exif_orientation ignores it too)
        return None


def image_file_problem(path: str, expected_size: tuple[int, int] | None = None) -> str | None:
    """What keeps :func:`read_image` from reading ``path`` as expected, from the file's header
    only (PIL's ``Image.open``: no pixel is decoded), for preflight checks of a dataset.

    Args:
        path: the image file.
        expected_size: (height, width) the annotation file gives, compared with the image's size
            after EXIF orientation (as detectron2's ``check_image_size`` sees it).

    Returns:
        None if the file looks fine (16-bit greyscale included: it is read correctly), else one
        sentence naming the file: missing, not a file, not an image PIL can open, an unsupported
        mode (naming it), or a size other than ``expected_size`` (both sizes given). A file cut
        short after its header, or an "I" image with values outside 0..65535, is only found when
        read.
    """
    if not PathManager.isfile(path):
        if PathManager.exists(path):
            return f"Image {path!r} is not a file."
        return f"Image file {path!r} does not exist."
    try:
        with PathManager.open(path, "rb") as f, Image.open(f) as image:
            mode, (width, height) = image.mode, image.size
            if _header_orientation(image) in _ORIENTATIONS_SWAPPING_AXES:
                width, height = height, width
    except UnidentifiedImageError:  # its message repeats the file object
        return f"{path!r} is not an image PIL can open."
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{path!r} is not an image PIL can open ({e})."
    problem = _mode_problem(mode)
    if problem is not None:
        return str(_unsupported(path, mode, problem)) + "."
    if expected_size is not None and tuple(expected_size) != (height, width):
        return (
            f"Image {path!r} is {height}x{width} (height x width, EXIF orientation applied) but "
            f"the annotations give {expected_size[0]}x{expected_size[1]}."
        )
    return None
