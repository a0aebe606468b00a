"""fastcnn.augment: exact results against NumPy one-liners, reproducibility from seeds, every argument error."""
import numpy as np
import pytest

from fastcnn import augment as A


@pytest.fixture
def batch():
    return np.random.default_rng(0).random((6, 2, 7, 7), dtype=np.float32)


def shifted(image, dy, dx):
    """np.roll along H and W, with what wrapped around set to zero."""
    h, w = image.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:  # np.roll would wrap around; everything has left the image
        return np.zeros_like(image)
    out = np.roll(image, (dy, dx), axis=(-2, -1))
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., h + dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, w + dx:] = 0
    return out


def test_flip_p1_mirrors_every_image_and_p0_is_the_identity(batch):
    assert np.array_equal(A.RandomHorizontalFlip(p=1)(batch, 0), np.flip(batch, axis=3))
    out = A.RandomHorizontalFlip(p=0)(batch, 0)
    assert np.array_equal(out, batch) and out is not batch


def test_flip_flips_the_images_its_sample_picks(batch):
    flip = A.RandomHorizontalFlip(p=0.5)
    chosen = flip.sample(batch.shape, np.random.default_rng(3))
    assert 0 < chosen.sum() < len(batch)  # this seed flips some and keeps some
    expected = np.where(chosen[:, None, None, None], batch[..., ::-1], batch)
    assert np.array_equal(flip(batch, np.random.default_rng(3)), expected)


def test_crop_of_the_whole_unpadded_image_is_the_identity(batch):
    assert np.array_equal(A.RandomCrop(7)(batch, 5), batch)
    assert np.array_equal(A.RandomCrop((7, 7), padding=0)(batch, np.random.default_rng(9)), batch)


def test_padded_crop_is_a_window_of_the_zero_padded_input(batch):
    crop = A.RandomCrop((5, 6), padding=(2, 1))
    top, left = crop.sample(batch.shape, np.random.default_rng(11))
    assert len(set(top.tolist())) > 1 and len(set(left.tolist())) > 1  # offsets differ per image
    out = crop(batch, np.random.default_rng(11))
    padded = np.zeros((6, 2, 11, 9), np.float32)
    padded[:, :, 2:9, 1:8] = batch
    for i in range(len(batch)):
        assert np.array_equal(out[i], padded[i, :, top[i]:top[i] + 5, left[i]:left[i] + 6])
    assert out.shape == (6, 2, 5, 6) and out.dtype == np.float32


def test_crop_helper_reads_explicit_offsets(batch):
    out = A.crop(batch[:2], top=[0, 3], left=[4, 1], size=3, padding=1)
    padded = np.pad(batch[:2], ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert np.array_equal(out[0], padded[0, :, 0:3, 4:7])
    assert np.array_equal(out[1], padded[1, :, 3:6, 1:4])


@pytest.mark.parametrize("angle, turns", [(90, 1), (-90, -1), (180, 2), (270, 3), (360, 0)])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_quarter_turns_match_rot90_on_square_images(batch, angle, turns, interpolation):
    expected = np.rot90(batch, turns, axes=(2, 3))
    assert np.array_equal(A.rotate(batch, angle, interpolation=interpolation), expected)
    # A degrees range of a single value forces the angle, through the random transform.
    forced = A.RandomRotation((angle, angle), interpolation=interpolation)
    assert np.array_equal(forced(batch, 0), expected)


def test_quarter_turns_on_an_even_sized_image():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert np.array_equal(A.rotate(x, 90), np.rot90(x, 1, axes=(2, 3)))


def test_quarter_turns_stay_exact_on_large_images():
    # cos(270 degrees) is -1.8e-16, not 0: far from the centre that error reaches a whole float64 ulp.
    x = np.random.default_rng(0).random((3, 1, 1000, 1000), dtype=np.float32)
    out = A.rotate(x, [270, 360, 450])
    for image, result, turns in zip(x, out, (3, 0, 1)):
        assert np.array_equal(result, np.rot90(image, turns, axes=(1, 2)))


def test_rotation_angles_are_per_image(batch):
    angles = np.array([0, 90, 180, -90, 0, 270])
    out = A.rotate(batch, angles)
    for image, result, angle in zip(batch, out, angles):
        assert np.array_equal(result, np.rot90(image, angle // 90, axes=(1, 2)))


def test_rotation_fills_with_zeros_and_keeps_the_centre():
    x = np.ones((1, 1, 9, 9), np.float32)
    out = A.rotate(x, 45, interpolation="nearest")
    assert out[0, 0, 4, 4] == 1 and out[0, 0, 0, 0] == 0 and out[0, 0, 0, 4] == 1


@pytest.mark.parametrize("angle", [30, -17])
def test_rotation_agrees_with_pillow(angle):
    Image = pytest.importorskip("PIL.Image", exc_type=ImportError)
    x = np.random.default_rng(0).random((1, 1, 9, 12), dtype=np.float32)
    image = Image.fromarray(x[0, 0])  # mode "F": Pillow rotates float32 without rounding to bytes
    nearest = np.asarray(image.rotate(angle, resample=Image.NEAREST))
    bilinear = np.asarray(image.rotate(angle, resample=Image.BILINEAR))
    assert np.array_equal(A.rotate(x, angle, interpolation="nearest")[0, 0], nearest)
    # Pillow treats the outermost ring differently when blending with the outside; the interior must agree.
    np.testing.assert_allclose(A.rotate(x, angle)[0, 0, 2:-2, 2:-2], bilinear[2:-2, 2:-2], atol=1e-6)


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, 0), (0, -3), (-1, 4), (7, 0), (-9, 2)])
def test_translate_equals_roll_with_zero_fill(batch, dy, dx):
    assert np.array_equal(A.translate(batch, dy, dx), shifted(batch, dy, dx))


def test_random_translate_shifts_each_image_by_its_sampled_amount(batch):
    translate = A.RandomTranslate((2, 3))
    dy, dx = translate.sample(batch.shape, np.random.default_rng(4))
    assert np.abs(dy).max() <= 2 and np.abs(dx).max() <= 3 and len(set(zip(dy, dx))) > 1
    out = translate(batch, np.random.default_rng(4))
    for i in range(len(batch)):
        assert np.array_equal(out[i], shifted(batch[i], dy[i], dx[i]))


def test_fractional_translate_rounds_down_to_pixels():
    x = np.zeros((200, 1, 28, 10), np.float32)
    dy, dx = A.RandomTranslate(0.1).sample(x.shape, np.random.default_rng(0))
    assert set(dy.tolist()) == {-2, -1, 0, 1, 2} and set(dx.tolist()) == {-1, 0, 1}


TRANSFORMS = [
    A.RandomHorizontalFlip(),
    A.RandomCrop(7, padding=2),
    A.RandomRotation(20),
    A.RandomTranslate(2),
    A.Compose([A.RandomCrop(7, padding=1), A.RandomHorizontalFlip(), A.RandomRotation(10), A.RandomTranslate(0.2)]),
]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
def test_seeds_reproduce_and_differ(transform, batch):
    first, again, other = transform(batch, 1), transform(batch, np.random.default_rng(1)), transform(batch, 2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == batch.shape and first.dtype == np.float32
    assert first.flags.c_contiguous and not np.shares_memory(first, batch)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
def test_other_dtypes_become_float32_and_n1_works(transform, batch):
    out = transform(batch[:1].astype(np.float64), 0)
    assert out.dtype == np.float32 and out.shape == (1, 2, 7, 7)
    assert np.allclose(out, transform(batch[:1], 0))


def test_one_generator_gives_different_draws_on_successive_batches(batch):
    rng = np.random.default_rng(0)
    flip = A.RandomHorizontalFlip()
    assert not np.array_equal(flip.sample(batch.shape, rng), flip.sample(batch.shape, rng))


def test_empty_compose_returns_a_copy(batch):
    out = A.Compose([])(batch, 0)
    assert np.array_equal(out, batch) and out is not batch


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: A.RandomHorizontalFlip(p=1.5), ValueError, r"RandomHorizontalFlip: p must be a probability in \[0, 1\]; got 1.5"),
        (lambda: A.RandomHorizontalFlip(p=-0.1), ValueError, r"RandomHorizontalFlip: p must .*got -0.1"),
        (lambda: A.RandomHorizontalFlip(p="half"), ValueError, r"RandomHorizontalFlip: p must .*got 'half'"),
        (lambda: A.RandomHorizontalFlip(p=True), ValueError, r"RandomHorizontalFlip: p must .*got True"),
        (lambda: A.RandomCrop(0), ValueError, r"RandomCrop: size must be an int >= 1 or a pair of ints >= 1; got 0"),
        (lambda: A.RandomCrop((3, 4, 5)), ValueError, r"RandomCrop: size must be .*got \(3, 4, 5\)"),
        (lambda: A.RandomCrop(3, padding=-1), ValueError, r"RandomCrop: padding must be an int >= 0 .*got -1"),
        (lambda: A.RandomCrop(2.5), TypeError, r"RandomCrop: size must be .*got 2.5"),
        (lambda: A.RandomCrop(12, padding=2)(np.zeros((1, 1, 7, 7)), 0), ValueError,
         r"RandomCrop: size \(12, 12\) is larger than the padded input \(11, 11\) \(input \(7, 7\) with padding=\(2, 2\)\)"),
        (lambda: A.RandomRotation(-5), ValueError, r"RandomRotation: degrees must be a number >= 0 or a pair .*got -5"),
        (lambda: A.RandomRotation((10, -10)), ValueError, r"RandomRotation: degrees must be .*got \(10, -10\)"),
        (lambda: A.RandomRotation(float("nan")), ValueError, r"RandomRotation: degrees must be .*got nan"),
        (lambda: A.RandomRotation((1, 2, 3)), ValueError, r"RandomRotation: degrees must be .*got \(1, 2, 3\)"),
        (lambda: A.RandomRotation(10, interpolation="cubic"), ValueError,
         r"RandomRotation: interpolation must be 'bilinear' or 'nearest'; got 'cubic'"),
        (lambda: A.RandomTranslate(-1), ValueError, r"RandomTranslate: max_shift must be an int >= 0 .*got -1"),
        (lambda: A.RandomTranslate(1.5), ValueError, r"RandomTranslate: max_shift must be .*a float in \[0, 1\].*got 1.5"),
        (lambda: A.RandomTranslate((1, 2, 3)), ValueError, r"RandomTranslate: max_shift must be .*got \(1, 2, 3\)"),
        (lambda: A.Compose([A.RandomHorizontalFlip(), "flip"]), TypeError,
         r"Compose: transforms\[1\] must be a callable t\(x, rng\); got 'flip'"),
        (lambda: A.Compose(A.RandomHorizontalFlip()), TypeError, r"Compose: transforms must be a list"),
        (lambda: A.RandomHorizontalFlip()(np.zeros((2, 7, 7)), 0), ValueError,
         r"RandomHorizontalFlip: expected a batch of shape \(N, C, H, W\); got shape \(2, 7, 7\)"),
        (lambda: A.RandomTranslate(1)(np.zeros((1, 1, 4, 4)), rng=np.random.RandomState(0)), TypeError,
         r"RandomTranslate: rng must be a numpy.random.Generator, an int seed or None; got RandomState"),
        (lambda: A.RandomCrop(3)("image", 0), TypeError, r"RandomCrop: input must be an array of numbers; got 'image'"),
        (lambda: A.rotate(np.zeros((2, 1, 4, 4)), [1, 2, 3]), ValueError,
         r"rotate: angle must be a scalar or hold one value per image \(2\); got shape \(3,\)"),
        (lambda: A.rotate(np.zeros((1, 1, 4, 4)), np.inf), ValueError, r"rotate: angle must be finite; got inf"),
        (lambda: A.rotate(np.zeros((1, 1, 4, 4)), 10, interpolation="area"), ValueError,
         r"rotate: interpolation must be 'bilinear' or 'nearest'; got 'area'"),
        (lambda: A.translate(np.zeros((1, 1, 4, 4)), 0.5, 0), TypeError,
         r"translate: shift_y must hold integers \(whole pixels\); got dtype float64"),
        (lambda: A.crop(np.zeros((1, 1, 4, 4)), 3, 0, 2), ValueError,
         r"crop: offsets must keep the crop inside the padded input: top in 0..2, left in 0..2; got top \[3\]"),
        (lambda: A.crop(np.zeros((1, 1, 4, 4)), 0, 0, 5), ValueError,
         r"crop: size \(5, 5\) is larger than the padded input \(4, 4\)"),
    ],
)
def test_errors_name_the_transform_the_argument_and_the_value(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
