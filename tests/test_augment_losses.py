"""Batch augmentation and losses on real FER-2013 faces (and FER+ votes) from ../shared/data."""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import decode, real_faces
from ferkit.config import AugmentConfig
from ferkit.errors import FerkitError
from ferkit.labels import FER2013
from ferkit.train.augment import OFF, PRESETS, BatchAugment, _affine_grid, eval_transform, resolve
from ferkit.train.losses import balanced_class_weights, sample_weights, soft_cross_entropy

C = len(FER2013)


@pytest.fixture(scope="module")
def faces(fer_zip) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real training faces per class: uint8 (14, 1, 48, 48) and their labels (14,)."""
    images, labels = [], []
    for cls, files in real_faces(fer_zip, 2).items():
        for _, data in files:
            images.append(decode(data))
            labels.append(FER2013.index(cls))
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


def run(cfg: AugmentConfig, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
    return BatchAugment(cfg, 48, C)(x, y, torch.Generator().manual_seed(seed))


# ---- resolve and presets ----------------------------------------------------------------------------------------


def test_presets_use_config_fields_and_resolve_fully():
    fields = {f.name for f in dataclasses.fields(AugmentConfig)} - {"preset"}
    assert set(OFF) == fields
    for name, values in PRESETS.items():
        assert set(values) <= fields, name
        cfg = resolve(AugmentConfig(preset=name))
        assert all(getattr(cfg, f) is not None for f in fields), name
        assert resolve(cfg) == cfg  # idempotent: the trainer resolves, then BatchAugment resolves again


def test_resolve_user_values_win_and_unset_means_off():
    cfg = resolve(AugmentConfig(preset="s4", rotation=5.0, hflip=False))
    assert (cfg.rotation, cfg.hflip, cfg.shift, cfg.shear, cfg.zoom, cfg.fill) == (5.0, False, 0.2, 0.2, 0.2, "nearest")
    assert (cfg.crop, cfg.brightness, cfg.erasing, cfg.mixup, cfg.cutmix, cfg.trivial) == (0, 0.0, 0.0, 0.0, 0.0, False)
    assert resolve(AugmentConfig(preset="s3")).brightness == 0.2  # Keras brightness_range [0.8, 1.2]
    assert resolve(AugmentConfig(preset="s0_cnn", shear=0.0)).shear == 0.0  # an explicit 0 is not "unset"


@pytest.mark.parametrize("cfg, match", [
    (AugmentConfig(preset="keras"), "unknown augment.preset 'keras'; choose one of: none, s0_cnn"),
    (AugmentConfig(rotation=-10.0), "augment.rotation is -10.0"),
    (AugmentConfig(mixup=-0.2), "augment.mixup"),
    (AugmentConfig(zoom=1.0), "augment.zoom is 1.0; it must be below 1"),
    (AugmentConfig(erasing=1.5), "augment.erasing is 1.5; it must be at most 1"),
    (AugmentConfig(fill="reflect"), "unknown augment.fill 'reflect'; choose one of: nearest, constant"),
])
def test_resolve_rejects_bad_values(cfg, match):
    with pytest.raises(FerkitError, match=match):
        resolve(cfg)


def test_a_crop_as_large_as_the_face_keeps_it_whole(faces):
    x, y = faces
    assert BatchAugment(AugmentConfig(crop=40), 48, C).out_size == 40
    assert BatchAugment(AugmentConfig(), 48, C).out_size == 48
    assert torch.equal(run(AugmentConfig(crop=48), x, y)[0], x.float() / 255)


def test_crop_larger_than_faces_is_rejected_at_build_time(faces):
    with pytest.raises(FerkitError, match="augment.crop 64 is larger than the 48x48 faces"):
        BatchAugment(AugmentConfig(crop=64), 48, C)
    with pytest.raises(FerkitError, match="augment.crop 40 is larger than the 32x32"):
        BatchAugment(AugmentConfig(preset="crop_flip"), 32, C)
    with pytest.raises(FerkitError, match="augment.crop 64"):
        eval_transform(AugmentConfig(crop=64), faces[0])


# ---- every preset ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_shapes_ranges_and_determinism(preset, faces):
    x, y = faces
    cfg = AugmentConfig(preset=preset)
    out, target = run(cfg, x, y)
    size = resolve(cfg).crop or 48
    assert out.shape == (len(x), 1, size, size) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert target.shape == (len(x), C) and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones(len(x)))
    again, target_again = run(cfg, x, y)
    assert torch.equal(out, again) and torch.equal(target, target_again)
    if preset != "none":
        assert not torch.equal(out, run(cfg, x, y, seed=1)[0])


def test_seeded_run_leaves_global_rng_alone(faces):
    state = torch.get_rng_state()
    run(AugmentConfig(preset="trivial", mixup=0.2, erasing=0.5), *faces)
    assert torch.equal(state, torch.get_rng_state())


def test_parameters_are_drawn_per_sample(faces):
    x = faces[0][:1].expand(8, -1, -1, -1)  # one real face, eight times
    out, _ = run(AugmentConfig(preset="s4"), x, torch.zeros(8, dtype=torch.long))
    flat = out.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


# ---- single transforms ------------------------------------------------------------------------------------------


def test_everything_off_is_the_input_scaled(faces):
    x, y = faces
    out, target = run(AugmentConfig(), x, y)
    assert torch.equal(out, x.float() / 255)
    assert torch.equal(target, F.one_hot(y, C).float())
    assert torch.equal(eval_transform(AugmentConfig(preset="s4"), x), x.float() / 255)


def test_hflip_only_gives_exact_flips(faces):
    x, y = faces
    out, _ = run(AugmentConfig(hflip=True), x, y)
    ref = x.float() / 255
    flipped = [torch.equal(o, r.flip(-1)) for o, r in zip(out, ref)]
    kept = [torch.equal(o, r) for o, r in zip(out, ref)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_random_crops_are_exact_sub_windows(faces):
    x, y = faces
    out, _ = run(AugmentConfig(crop=40), x, y)
    ref = x.float() / 255
    offsets = []
    for o, r in zip(out, ref):
        hits = [(i, j) for i in range(9) for j in range(9) if torch.equal(o, r[:, i:i + 40, j:j + 40])]
        assert hits, "a crop is not a window of its input"
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # per-sample offsets
    centre = eval_transform(AugmentConfig(preset="crop_flip"), x)
    assert torch.equal(centre, ref[..., 4:44, 4:44])


def test_flip_and_crop_give_windows_or_mirrored_windows(faces):
    x, y = faces
    out, _ = run(AugmentConfig(preset="crop_flip"), x, y)
    ref = x.float() / 255
    for o, r in zip(out, ref):
        windows = [r[:, i:i + 40, j:j + 40] for i in range(9) for j in range(9)]
        assert any(torch.equal(o, w) or torch.equal(o, w.flip(-1)) for w in windows)


def keras_affine(img: np.ndarray, rot, shear, tr, tc, zr, zc) -> np.ndarray:
    """Keras' apply_affine_transform (scipy, bilinear, fill nearest) with shifts in pixels, angles in degrees."""
    from scipy import ndimage

    th, sh = np.deg2rad(rot), np.deg2rad(shear)
    m = (np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
         @ np.array([[1, 0, tr], [0, 1, tc], [0, 0, 1]])
         @ np.array([[1, -np.sin(sh), 0], [0, np.cos(sh), 0], [0, 0, 1]])
         @ np.diag([zr, zc, 1.0]))
    o = np.array([[1, 0, img.shape[0] / 2 - 0.5], [0, 1, img.shape[1] / 2 - 0.5], [0, 0, 1]])
    m = o @ m @ np.linalg.inv(o)
    return ndimage.affine_transform(img, m[:2, :2], m[:2, 2], order=1, mode="nearest")


def test_affine_matches_keras_reference(faces, monkeypatch):
    from ferkit.train import augment

    x = faces[0][:2]
    cfg = AugmentConfig(rotation=40.0, shift=0.2, shear=20.0, zoom=0.2, hflip=True, fill="nearest")
    # Fixed draws in [0, 1): rotation, shear, row shift, column shift, row zoom, column zoom per sample; the first
    # sample is flipped (draw < 0.5), the second is not.
    u = torch.tensor([[0.9, 0.2, 0.7, 0.1, 0.8, 0.35], [0.15, 0.95, 0.4, 0.6, 0.05, 0.9]])
    flips = torch.tensor([0.2, 0.8])
    monkeypatch.setattr(augment._Rng, "draw", lambda self, *shape: u if shape == (2, 6) else flips)
    out, _ = BatchAugment(cfg, 48, C)(x, torch.zeros(2, dtype=torch.long))
    for o, img, p, flip in zip(out, x.float().numpy()[:, 0], (2 * u - 1).numpy(), (True, False)):
        ref = keras_affine(img, 40 * p[0], 20 * p[1], 0.2 * 48 * p[2], 0.2 * 48 * p[3], 1 + 0.2 * p[4], 1 + 0.2 * p[5])
        ref = ref[:, ::-1] if flip else ref  # Keras flips after the affine transform
        assert np.abs(o[0].numpy() * 255 - ref).max() < 1e-2
        assert np.abs(o[0].numpy() * 255 - img).mean() > 5  # and it did move


def test_affine_grid_equals_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    ours = _affine_grid(theta, 48, 40)
    assert torch.allclose(ours, F.affine_grid(theta, [5, 1, 48, 40], align_corners=False), atol=1e-6)


def test_brightness_is_a_per_sample_factor(faces):
    x, y = faces
    out, _ = run(AugmentConfig(brightness=0.2), x, y)
    ref = x.float() / 255
    for o, r in zip(out, ref):
        keep = r < 0.75  # no clipping below 0.75 * 1.2 < 1
        factor = (o[keep] / r[keep].clamp_min(1e-6))[r[keep] > 0.1]
        assert 0.8 <= factor.mean() <= 1.2 and factor.std() < 1e-4


def test_erasing_replaces_one_rectangle(faces):
    x, y = faces
    out, _ = run(AugmentConfig(erasing=1.0), x, y)
    ref = x.float() / 255
    for o, r in zip(out, ref):
        rows, cols = torch.nonzero((o != r)[0], as_tuple=True)
        assert len(rows), "an image was not erased"
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        area = int((bottom - top) * (right - left))
        assert 0.02 * 48 * 48 * 0.8 <= area <= 0.33 * 48 * 48 * 1.1  # torchvision's area range (h, w rounded)
        assert len(rows) >= 0.9 * area  # the changed pixels fill their bounding box
    assert torch.equal(run(AugmentConfig(erasing=0.0), x, y)[0], ref)


# ---- each operation against a reference, its random draws replayed ----------------------------------------------
# With one operation on, BatchAugment's draws from the generator are that operation's alone, in a documented order:
# replaying them from a generator seeded alike gives the parameters each image got, and the reference computes what
# the operation must then give.


def draws(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_blur_replayed_against_opencv(faces):
    x, y = faces
    out, _ = run(AugmentConfig(blur=0.5), x, y, seed=5)
    u = torch.rand((len(x), 3), generator=draws(5))  # whether, which kind, how strong
    img = x[:, 0].numpy().astype(np.float32) / 255
    kinds = Counter()
    for i in range(len(x)):
        if u[i, 0] >= 0.5:
            kind, expected = "none", img[i]
        elif u[i, 1] < 0.5:  # Gaussian, sigma 0.4-1.2 px, border pixels repeated
            sigma = 0.4 + 0.8 * float(u[i, 2])
            kind, expected = "gauss", cv2.GaussianBlur(img[i], (7, 7), sigma, borderType=cv2.BORDER_REPLICATE)
        else:  # down to 0.45-0.85 of the side by area averaging, back up bilinearly
            f = 0.45 + 0.4 * float(u[i, 2])
            small = F.adaptive_avg_pool2d(torch.from_numpy(img[i])[None, None], (round(48 * f), round(48 * f)))
            kind, expected = "resize", cv2.resize(small[0, 0].numpy(), (48, 48), interpolation=cv2.INTER_LINEAR)
        kinds[kind] += 1
        assert np.allclose(out[i, 0].numpy(), expected, atol=2e-5), (i, kind)
    assert kinds["gauss"] >= 2 and kinds["resize"] >= 2 and kinds["none"] >= 2


def test_jpeg_replayed_against_opencv(faces):
    x, y = faces
    out, _ = run(AugmentConfig(jpeg=0.5), x, y, seed=1)
    g = draws(1)
    chosen, quality = torch.rand(len(x), generator=g) < 0.5, (20 + 70 * torch.rand(len(x), generator=g)).round()
    assert 0 < chosen.sum() < len(x)
    for i in range(len(x)):
        expected = x[i, 0].numpy()
        if chosen[i]:
            ok, buf = cv2.imencode(".jpg", expected, [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
            expected = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        assert torch.equal(out[i, 0], torch.from_numpy(expected).float() / 255), i


def test_random_crop_replayed(faces):
    x, y = faces
    out, _ = run(AugmentConfig(crop=40), x, y, seed=2)
    g = draws(2)
    top, left = (torch.rand(len(x), generator=g) * 9).long(), (torch.rand(len(x), generator=g) * 9).long()
    assert len(set(top.tolist())) > 3 and len(set(left.tolist())) > 3
    for i in range(len(x)):
        assert torch.equal(out[i], x[i, :, top[i]:top[i] + 40, left[i]:left[i] + 40].float() / 255)


def test_framing_and_flip_replayed_against_affine_grid(faces):
    x, y = faces
    B = len(x)
    out, _ = run(AugmentConfig(hflip=True, scale=[0.75, 1.3], aspect=0.1), x, y, seed=4)
    g = draws(4)
    flip = torch.rand(B, generator=g) < 0.5
    torch.rand((B, 6), generator=g)  # rotation, shear, shift and zoom: all off
    v = torch.rand((B, 2), generator=g).double()
    side = torch.exp(math.log(0.75) + (math.log(1.3) - math.log(0.75)) * v[:, 0])  # window / face, log-uniform
    stretch = torch.exp(math.log(1.1) * (2 * v[:, 1] - 1) / 2)  # width / height in [1 / 1.1, 1.1] ** 0.5
    theta = torch.zeros(B, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * side * stretch  # output x -> input x (mirrored when flipped)
    theta[:, 1, 1] = side / stretch
    grid = F.affine_grid(theta.float(), (B, 1, 48, 48), align_corners=False)
    expected = F.grid_sample(x.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)
    assert 0 < flip.sum() < B


@pytest.mark.parametrize("scale", [(0.02, 0.33), (0.8, 0.8)])  # torchvision's; one where many attempts do not fit
def test_erasing_replayed_against_torchvisions_rule(faces, monkeypatch, scale):
    from ferkit.train import augment

    monkeypatch.setattr(augment, "ERASE_SCALE", scale)
    x, y = faces
    B = len(x)
    fitting = erased = 0
    for seed in range(6):
        out, _ = run(AugmentConfig(erasing=0.6), x, y, seed=seed)
        g = draws(seed)
        area = 48 * 48 * (scale[0] + (scale[1] - scale[0]) * torch.rand((B, 10), generator=g))
        ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand((B, 10), generator=g))
        chance, top_u, left_u = (torch.rand(B, generator=g) for _ in range(3))
        ref = x.float() / 255
        attempts = [[(h, w) for h, w in zip(torch.round(torch.sqrt(area[i] * ratio[i])).tolist(),
                                            torch.round(torch.sqrt(area[i] / ratio[i])).tolist())] for i in range(B)]
        fits = [[(h, w) for h, w in a if h < 48 and w < 48] for a in attempts]  # inside the face on both sides
        values = iter(torch.rand((sum(bool(f) and c < 0.6 for f, c in zip(fits, chance)), 1, 48, 48), generator=g))
        for i in range(B):
            expected = ref[i].clone()
            if fits[i] and chance[i] < 0.6:  # the first attempt that fits, placed uniformly
                h, w = map(int, fits[i][0])
                top, left = int(top_u[i] * (48 - h + 1)), int(left_u[i] * (48 - w + 1))
                expected[:, top:top + h, left:left + w] = next(values)[:, top:top + h, left:left + w]
                erased += 1
            assert torch.equal(out[i], expected), (seed, i)
        fitting += sum(map(bool, fits))
    assert 0 < erased < fitting
    if scale == (0.8, 0.8):
        assert fitting < 6 * B  # some faces had no attempt that fits: they were left alone


@pytest.mark.parametrize("field", ["rotation", "shift", "shear", "zoom"])
def test_each_geometric_parameter_alone_moves_the_face(faces, field):
    x, y = faces
    value = {"rotation": 20.0, "shift": 0.1, "shear": 20.0, "zoom": 0.2}[field]
    out, _ = run(AugmentConfig(**{field: value}), x, y)
    assert (out - x.float() / 255).abs().mean() > 0.01


@pytest.mark.parametrize("field, value", [("equalize", 0.5), ("gamma", 0.4), ("contrast", 0.4), ("brightness", 0.3),
                                          ("noise", 0.05)])
def test_lighting_and_noise_replayed(faces, field, value):
    from ferkit.train.augment import equalize_hist

    x, y = faces
    out, _ = run(AugmentConfig(**{field: value}), x, y, seed=9)
    g = draws(9)
    ref = x.float() / 255
    u = torch.rand(len(x), generator=g)[:, None, None, None]
    if field == "equalize":  # on a draw below the probability
        expected = torch.where(u < value, equalize_hist(ref), ref)
        assert 0 < (u < value).sum() < len(x)
    elif field == "gamma":  # log-uniform in [1 / 1.4, 1.4]
        expected = ref.clamp(min=1e-6) ** torch.exp(math.log1p(value) * (2 * u - 1))
    elif field == "contrast":  # about each face's mean, factor in [0.6, 1.4]
        mean = ref.mean(dim=(1, 2, 3), keepdim=True)
        expected = (mean + (ref - mean) * (1 + value * (2 * u - 1))).clamp(0, 1)
        assert (mean + (ref - mean) * (1 + value * (2 * u - 1)) < 0).any()  # some pixels clipped at black
    elif field == "brightness":  # factor in [0.7, 1.3]
        expected = (ref * (1 + value * (2 * u - 1))).clamp(0, 1)
    else:  # Gaussian noise, its standard deviation uniform in [0, 0.05]
        expected = (ref + value * u * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_mixup_replayed(faces):
    x, y = faces
    out, target = run(AugmentConfig(mixup=0.4), x, y, seed=7)
    g = draws(7)
    lam = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g))).beta(0.4, 0.4)
    perm = torch.randperm(len(x), generator=g)
    ref, onehot = x.float() / 255, F.one_hot(y, C).float()
    assert torch.allclose(out, lam * ref + (1 - lam) * ref[perm], atol=1e-6)
    assert torch.allclose(target, lam * onehot + (1 - lam) * onehot[perm], atol=1e-6)


def test_cutmix_replayed(faces):
    x, y = faces
    ref, onehot = x.float() / 255, F.one_hot(y, C).float()
    edges = set()
    for seed in range(12):
        out, target = run(AugmentConfig(cutmix=1.0), x, y, seed=seed)
        g = draws(seed)
        lam = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g))).beta(1.0, 1.0)
        perm = torch.randperm(len(x), generator=g)
        cy, cx = int(torch.rand(1, generator=g) * 48), int(torch.rand(1, generator=g) * 48)
        half = int(0.5 * math.sqrt(1 - lam) * 48)  # torchvision CutMix: a box of area (1 - lam) centred at (cy, cx)
        y1, y2, x1, x2 = max(cy - half, 0), min(cy + half, 48), max(cx - half, 0), min(cx + half, 48)
        edges |= {"top"} if y1 == 0 else set()
        edges |= {"left"} if x1 == 0 else set()
        expected = ref.clone()
        expected[:, :, y1:y2, x1:x2] = ref[perm][:, :, y1:y2, x1:x2]
        kept = 1 - (y2 - y1) * (x2 - x1) / 48**2  # lambda becomes the area kept
        assert torch.equal(out, expected), seed
        assert torch.allclose(target, kept * onehot + (1 - kept) * onehot[perm], atol=1e-6), seed
    assert edges == {"top", "left"}  # boxes cut by the image's edges were among them


def test_equalize_hist_is_opencvs_at_the_edges(faces):
    from ferkit.train.augment import equalize_hist

    real = faces[0][:4, 0].numpy()
    cases = [*real, (real[0] * 0.5 + 60).astype(np.uint8),  # no pure black: the darkest level is not 0
             np.full((48, 48), 100, np.uint8),  # one level: cv2 leaves it as it is
             np.where(np.arange(48 * 48).reshape(48, 48) == 0, 200, 10).astype(np.uint8),  # one pixel above the rest
             np.where(np.arange(48 * 48).reshape(48, 48) == 0, 30, 90).astype(np.uint8)]  # one pixel below the rest
    got = equalize_hist(torch.from_numpy(np.stack(cases))[:, None].float() / 255)[:, 0].numpy() * 255
    for i, c in enumerate(cases):
        assert np.abs(got[i] - cv2.equalizeHist(c)).max() <= 0.5 + 1e-3, i
    assert np.allclose(got[5], 100, atol=1e-3)  # one level: exactly as it was
    between = torch.full((1, 1, 4, 4), 0.3337)  # off the 1/255 grid, as after a lighting change
    assert torch.equal(equalize_hist(between), between)


def test_int_vote_counts_are_soft_targets_and_labels_need_not_cover_every_class(faces):
    aug = BatchAugment(AugmentConfig(), 48, C)
    x = faces[0][:3]
    votes = torch.tensor([[10, 0, 0, 0, 0, 0, 0], [0, 3, 7, 0, 0, 0, 0], [0, 0, 0, 0, 5, 5, 0]])  # integer counts
    assert torch.equal(aug(x, votes)[1], votes.float())
    assert torch.equal(aug(x, torch.tensor([0, 2, 1]))[1], F.one_hot(torch.tensor([0, 2, 1]), C).float())
    with pytest.raises(ValueError, match=r"^3 images but 2 targets$"):
        aug(x, torch.tensor([0, 1]))


def test_trivial_augment_without_a_generator(faces):
    x, y = faces
    out, _ = BatchAugment(AugmentConfig(trivial=True), 48, C)(x, y)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, x.float() / 255)


def test_centre_crop_as_large_as_the_face_is_the_face(faces):
    x = faces[0]
    assert torch.equal(eval_transform(AugmentConfig(crop=48), x), x.float() / 255)


# ---- mixing and soft targets ------------------------------------------------------------------------------------


def one_per_class(faces):
    x, y = faces
    first = [int(torch.nonzero(y == c)[0]) for c in range(C)]
    return x[first], y[first]  # labels 0..6, so a target names its partner image


def test_mixup_mixes_images_and_targets_with_one_lambda(faces):
    x, y = one_per_class(faces)
    out, target = run(AugmentConfig(mixup=0.4), x, y, seed=3)
    ref = x.float() / 255
    assert torch.allclose(target.sum(1), torch.ones(C))
    lams = set()
    for i in range(C):
        nonzero = torch.nonzero(target[i] > 1e-6)[:, 0].tolist()
        assert len(nonzero) <= 2 and i in nonzero
        if len(nonzero) == 1:  # paired with itself
            assert torch.allclose(out[i], ref[i], atol=1e-6)
            continue
        j = next(k for k in nonzero if k != i)
        lam = float(target[i, i])
        assert torch.allclose(out[i], lam * ref[i] + (1 - lam) * ref[j], atol=1e-6)
        lams.add(round(lam, 5))
    assert len(lams) == 1 and 0 < lams.pop() < 1


def test_cutmix_pastes_one_box_and_targets_follow_its_area(faces):
    x, y = one_per_class(faces)
    out, target = run(AugmentConfig(cutmix=1.0), x, y, seed=2)
    ref = x.float() / 255
    for i in range(C):
        others = torch.nonzero(target[i] > 1e-6)[:, 0].tolist()
        j = next((k for k in others if k != i), i)
        from_partner = (out[i] == ref[j]) & (out[i] != ref[i])
        assert torch.all((out[i] == ref[i]) | (out[i] == ref[j]))  # every pixel comes from one of the two
        if j != i:
            pasted = (out[i] != ref[i]).float().mean()
            assert float(target[i, j]) >= pasted - 1e-6  # box area >= changed pixels (equal pixels stay)
            assert from_partner.any()


def test_mixup_and_cutmix_together_pick_one_per_batch(faces):
    x, y = one_per_class(faces)
    aug = BatchAugment(AugmentConfig(mixup=1.0, cutmix=1.0), 48, C)
    g = torch.Generator().manual_seed(0)
    ref = x.float() / 255
    kinds = Counter()
    for _ in range(20):
        out, _ = aug(x, y, g)
        boxy = all(bool(torch.all((o == ref).any(0))) for o in out)  # each pixel from some source image
        kinds["cutmix" if boxy else "mixup"] += 1
    assert kinds["cutmix"] > 0 and kinds["mixup"] > 0


@pytest.fixture(scope="module")
def ferplus_votes(ferplus_zip) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real FER+ images and their 8-emotion vote distributions."""
    with zipfile.ZipFile(ferplus_zip) as zf:
        rows = zf.read("FER2013Train/label.csv").decode().splitlines()[:8]
        images, votes = [], []
        for row in rows:
            name, _, rest = row.partition(",")
            counts = [int(v) for v in rest.rsplit('"', 1)[1].strip(",").split(",")][:8]
            images.append(decode(zf.read(f"FER2013Train/{name}")))
            votes.append(np.array(counts) / max(sum(counts), 1))
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(np.stack(votes), dtype=torch.float32)


def test_soft_targets_pass_through_and_mix(ferplus_votes):
    x, soft = ferplus_votes
    aug = BatchAugment(AugmentConfig(preset="crop_flip"), 48, 8)
    _, target = aug(x, soft, torch.Generator().manual_seed(0))
    assert torch.equal(target, soft)
    _, mixed = BatchAugment(AugmentConfig(preset="fer_strong"), 48, 8)(x, soft, torch.Generator().manual_seed(0))
    assert torch.allclose(mixed.sum(1), soft.sum(1)) and not torch.equal(mixed, soft)
    with pytest.raises(ValueError, match=r"soft targets \(B, 7\)"):
        BatchAugment(AugmentConfig(), 48, 7)(x, soft)


# ---- losses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_soft_cross_entropy_equals_torch_for_labels(weighted, eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, C, generator=g) * 3
    y = torch.randint(0, C, (32,), generator=g)
    w = torch.rand(C, generator=g) * 3 + 0.1 if weighted else None
    ours = soft_cross_entropy(logits, F.one_hot(y, C).float(), w, eps)
    assert torch.allclose(ours, F.cross_entropy(logits, y, weight=w, label_smoothing=eps), atol=1e-6)


def test_soft_cross_entropy_is_linear_in_soft_targets():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, C, generator=g)
    a, b = torch.randint(0, C, (16,), generator=g), torch.randint(0, C, (16,), generator=g)
    mixed = 0.3 * F.one_hot(a, C).float() + 0.7 * F.one_hot(b, C).float()
    expected = 0.3 * F.cross_entropy(logits, a, reduction="none") + 0.7 * F.cross_entropy(logits, b, reduction="none")
    assert torch.allclose(soft_cross_entropy(logits, mixed), expected.mean(), atol=1e-6)
    # Weighted: per-sample terms weighted by w . t, normalised by the summed target weights.
    w = torch.rand(C, generator=g) + 0.5
    per = -(mixed * w * F.log_softmax(logits, -1)).sum(1)
    assert torch.allclose(soft_cross_entropy(logits, mixed, w), per.sum() / (mixed @ w).sum(), atol=1e-6)


def test_soft_cross_entropy_runs_in_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, C, generator=g).bfloat16()
    target = torch.softmax(torch.randn(8, C, generator=g), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_cross_entropy(logits, target, torch.ones(C), 0.1)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, soft_cross_entropy(logits.float(), target, torch.ones(C), 0.1))


def test_balanced_weights_on_real_fer2013_counts(fer_zip):
    with zipfile.ZipFile(fer_zip) as zf:
        counts = Counter(n.split("/")[1] for n in zf.namelist() if n.startswith("train/") and n.endswith(".jpg"))
    labels = np.concatenate([np.full(counts[c], i) for i, c in enumerate(FER2013)])
    w = dict(zip(FER2013, balanced_class_weights(labels, C).round(3)))
    assert w == {"angry": 1.027, "disgust": 9.407, "fear": 1.001, "happy": 0.568, "sad": 0.849, "surprise": 1.293,
                 "neutral": 0.826}
    # SEEDS.md S4 lists 1.027, 9.407, 1.001, 0.568, 0.826, 0.849, 1.293: the same numbers in Keras' alphabetical
    # folder order (angry, disgust, fear, happy, neutral, sad, surprise), printed there under FER-2013 CSV names.
    s4 = [1.027, 9.407, 1.001, 0.568, 0.826, 0.849, 1.293]
    assert [w[c] for c in sorted(FER2013)] == s4


def test_absent_class_gets_zero_weight_and_sampler_balances():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])  # class 3 absent
    w = balanced_class_weights(labels, 4)
    assert w[3] == 0 and np.allclose(w[:3], 7 / (3 * np.array([4, 1, 2])))
    s = sample_weights(labels, 4)
    assert s.shape == (7,) and np.isclose(s.mean(), 1.0)
    assert np.allclose([s[labels == c].sum() for c in range(3)], 7 / 3)  # each present class draws equally
    with pytest.raises(FerkitError, match="train set is empty"):
        balanced_class_weights(np.array([], dtype=int), 4)


def test_balanced_class_weights_check_labels_and_name_missing_classes(caplog):
    import logging

    from ferkit.errors import FerkitError

    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 3\), got 0\.\.3$"):
        balanced_class_weights(np.array([0, 1, 3]), 3)  # the class count itself is out of range
    with pytest.raises(ValueError, match=r"got -1\.\.1$"):
        balanced_class_weights(np.array([-1, 1]), 3)
    with pytest.raises(FerkitError, match="^train.class_weights=balanced needs training labels, and the train set"):
        balanced_class_weights(np.array([], int), 3)
    with caplog.at_level(logging.WARNING, logger="ferkit.train.losses"):
        weights = balanced_class_weights(np.array([0, 0, 2]), 3)
        assert caplog.messages == ["classes [1] have no training images; their class weight is 0"]
        caplog.clear()
        balanced_class_weights(np.array([0, 1, 2, 2]), 3)
        assert caplog.messages == []  # every class present: nothing to say
    assert weights.dtype == np.float64 and weights.tolist() == pytest.approx([0.75, 0.0, 1.5])


def test_soft_cross_entropy_refuses_bad_shapes_and_smoothing_and_runs_outside_autocast():
    logits, target = torch.randn(4, 3), torch.eye(3)[[0, 1, 2, 0]]
    with pytest.raises(ValueError, match=r"^logits and target must both be \(B, C\), got \(4, 3\) and \(4, 2\)$"):
        soft_cross_entropy(logits, target[:, :2])
    with pytest.raises(ValueError, match=r"got \(1, 4, 3\) and \(1, 4, 3\)"):  # same shapes, but not (B, C)
        soft_cross_entropy(logits[None], target[None])
    with pytest.raises(ValueError, match=r"^label_smoothing must lie in \[0, 1\], got 1.5$"):
        soft_cross_entropy(logits, target, label_smoothing=1.5)
    uniform = soft_cross_entropy(logits, target, label_smoothing=1.0)  # the target is all smoothing
    assert uniform.item() == pytest.approx(-F.log_softmax(logits, -1).mean(-1).mean().item(), rel=1e-6)
    weights = torch.tensor([1.0, 2.0, 0.5])
    plain = soft_cross_entropy(logits, target, weights, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loss leaves autocast: fp32 whatever the training runs in
        assert soft_cross_entropy(logits.bfloat16(), target, weights, 0.1).item() == pytest.approx(
            soft_cross_entropy(logits.bfloat16().float(), target, weights, 0.1).item(), rel=1e-6)
    assert plain.dtype == torch.float32
