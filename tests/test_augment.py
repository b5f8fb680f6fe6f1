import torch

from trainables.augment import Augment, cutout, normalize, prepare_batch, random_crop, random_flip


def batch(n=64, size=32):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_flip_mirrors_about_half_and_leaves_the_rest():
    x = batch(256)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all()  # every image is either untouched or exactly mirrored
    assert 80 < flipped.sum() < 176  # p = 0.5


def test_crop_keeps_shape_and_is_a_shifted_window():
    x = batch(32)
    pad = 4
    out = random_crop(x, pad, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
        ]
        assert matches, f"image {i} is not a window of its padded original"
        shifts.add(matches[0])
    assert len(shifts) > 5  # offsets differ per image


def test_crop_with_zero_padding_is_identity():
    x = batch(4)
    assert torch.equal(random_crop(x, 0), x)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(64, 3, 32, 32)
    out = cutout(x, 8, torch.Generator().manual_seed(2))
    zeros = (out == 0).all(1)  # (B, H, W): all channels zeroed together
    per_image = zeros.flatten(1).sum(1)
    assert (per_image <= 64).all() and (per_image > 0).all()
    assert (per_image == 64).float().mean() > 0.4  # centred away from the border: the full 8x8 square
    for i in range(len(x)):
        rows, cols = zeros[i].nonzero(as_tuple=True)
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
        assert zeros[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a solid rectangle


def test_normalize_and_prepare_batch_without_augment():
    x = batch(8)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.2, 0.2]).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    torch.testing.assert_close(normalize(x, mean, std), expected)
    torch.testing.assert_close(prepare_batch(x, mean, std, None), expected)


def test_augment_from_config():
    aug = Augment.from_config({"flip": False, "crop_padding": 2, "cutout": 16, "lr": 0.1})
    assert aug == Augment(flip=False, crop_padding=2, cutout=16)
    out = prepare_batch(batch(8), torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), aug, torch.Generator())
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32


def test_epoch_augment_is_the_shuffled_set_augmented():
    from trainables.augment import EpochAugment

    x = batch(300)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)

    def epoch(aug, images=x):
        return EpochAugment(images, aug, mean, chunk=64)(order, torch.Generator().manual_seed(1))

    plain = epoch(Augment(flip=False, crop_padding=0, cutout=0))
    assert torch.equal(plain, x[order])  # no augmentation: exactly the shuffled images, across chunk borders
    flipped = epoch(Augment(flip=True, crop_padding=0, cutout=0))
    is_flipped = [torch.equal(flipped[i], x[o].flip(2)) for i, o in enumerate(order)]
    assert all(is_flipped[i] or torch.equal(flipped[i], x[o]) for i, o in enumerate(order))
    assert 100 < sum(is_flipped) < 200
    cropped = epoch(Augment(flip=False, crop_padding=3, cutout=0))
    padded = torch.nn.functional.pad(x, (3,) * 4)
    for i, o in enumerate(order[:40]):  # each output is a 32x32 window of its own padded source image
        assert any(
            torch.equal(cropped[i], padded[o, :, dy : dy + 32, dx : dx + 32]) for dy in range(7) for dx in range(7)
        )
    holes = epoch(Augment(flip=False, crop_padding=0, cutout=8), torch.zeros_like(x))
    # cut-out pixels carry the channel means in uint8 (128, 64, 255): they normalise to ~0
    assert (holes.flatten(2).amax(2) == torch.tensor([128, 64, 255], dtype=torch.uint8)).all()
