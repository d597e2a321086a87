"""Face crops as the model saw faces in training: the square around a box, borders repeated, and detect + crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferkit.data.scan import resize_face
from ferkit.infer import SAMPLE_PHOTO, get_detector
from ferkit.infer.crop import crop_face, crop_faces, find_faces, square_box


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return cv2.imread(str(SAMPLE_PHOTO), cv2.IMREAD_GRAYSCALE)


def test_crop_is_square_and_pads_at_borders(gray):
    assert square_box((10, 20, 40, 60)) == (0, 20, 60)  # centred on the box, longest side
    inside = crop_face(gray, (100, 100, 96, 96), 48)
    assert inside.shape == (48, 48)
    np.testing.assert_array_equal(inside, cv2.resize(gray[100:196, 100:196], (48, 48), interpolation=cv2.INTER_AREA))
    corner = crop_face(gray, (0, 0, 100, 60), 48)  # the square starts 20 px above the image
    assert corner.shape == (48, 48)
    # The rows above the image repeat its first row, so the first output rows are equal to each other.
    np.testing.assert_array_equal(corner[0], corner[8])
    assert not np.array_equal(corner[0], corner[30])


def reference_crop(gray: np.ndarray, box, size: int) -> np.ndarray:
    """The square around ``box`` cut from the image after padding it on every side with its border pixels."""
    left, top, side = square_box(box)
    pad = side + max(gray.shape)
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return resize_face(padded[top + pad:top + pad + side, left + pad:left + pad + side], size)


@pytest.mark.parametrize("box", [
    (100, 100, 96, 96),  # inside
    (-30, 120, 90, 90),  # past the left edge
    (150, -25, 80, 100),  # past the top
    (400, 200, 90, 60),  # past the right edge (the sample photo is 512 wide)
    (200, 400, 60, 90),  # past the bottom
    (-50, -50, 700, 700),  # larger than the photo on every side
    (10, 10, 1, 1),  # one pixel
    (511, 20, 0.4, 0.4),  # under a pixel, on the last column
])
def test_crop_is_the_square_cut_from_the_photo_with_its_border_repeated(gray, box):
    assert gray.shape == (512, 512)
    np.testing.assert_array_equal(crop_face(gray, box, 48), reference_crop(gray, box, 48))


def test_a_one_pixel_box_is_that_pixel():
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    assert (crop_face(gradient, (10, 5, 1, 1), 8) == gradient[5, 10]).all()


@pytest.mark.parametrize("box", [(512, 0, 10, 10), (0, 512, 10, 10), (-20, 0, 10, 10), (0, -20, 10, 10),
                                 (520, 100, 10, 10)])
def test_a_box_outside_the_photo_is_refused(gray, box):
    with pytest.raises(ValueError, match=rf"^box \({box[0]}, {box[1]}, 10, 10\) lies outside the 512x512 image$"):
        crop_face(gray, box, 48)


def test_no_boxes_give_no_crops(gray):
    crops = crop_faces(gray, [], 40)
    assert crops.shape == (0, 40, 40) and crops.dtype == np.uint8


def test_find_faces_gives_the_detectors_boxes_and_their_crops():
    photo = cv2.imread(str(SAMPLE_PHOTO))
    detector = get_detector("haar")
    boxes, crops = find_faces(detector, photo, 48)
    assert boxes == [d.box for d in detector(photo)] and len(boxes) == 1
    np.testing.assert_array_equal(crops, crop_faces(photo, boxes, 48))
    boxes, crops = find_faces(detector, np.full((120, 160, 3), 127, np.uint8), 48)  # nothing to find
    assert boxes == [] and crops.shape == (0, 48, 48) and crops.dtype == np.uint8


def test_fit_faces_resizes_crops_of_any_size_and_colour_like_the_dataset_readers(gray):
    from ferkit.data.formats import to_gray
    from ferkit.infer.crop import fit_faces

    colour = cv2.imread(str(SAMPLE_PHOTO))[30:210, 140:310]  # (180, 170, 3)
    small = gray[:20, :30]  # enlarged
    exact = gray[:48, :48]  # kept as it is
    fitted = fit_faces([colour, small, exact], 48)
    assert fitted.shape == (3, 48, 48) and fitted.dtype == np.uint8
    for got, crop in zip(fitted, [colour, small, exact]):
        np.testing.assert_array_equal(got, resize_face(to_gray(crop), 48))
    np.testing.assert_array_equal(fitted[1], cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR))
    none = fit_faces([], 40)
    assert none.shape == (0, 40, 40) and none.dtype == np.uint8
