"""Training augmentation of whole in-memory batches: uint8 faces in, float [0, 1] faces and soft targets out.

Every random parameter is drawn per sample (``torchvision.transforms.v2`` on a batched tensor draws one set for the
whole batch) and from the caller's ``torch.Generator``, so a seeded run is reproducible. The geometric transforms of
the Keras seeds (rotation, shift, shear, zoom, flip) become one (B, 2, 3) matrix per sample and one ``grid_sample``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.config import AugmentConfig
from ferkit.errors import FerkitError, UnknownNameError

# Field sets per preset; fields a preset leaves out are off. Keras ImageDataGenerator semantics throughout: rotation
# and shear in degrees, shift a fraction of the side, zoom drawn per axis in [1 - z, 1 + z], fill "nearest" repeats
# the border pixel.
PRESETS: dict[str, dict] = {
    # No augmentation (S4's model 1).
    "none": {},
    # S0 custom CNN. Keras' shear_range is in degrees, so shear 0.1 is a barely visible 0.1 degree: kept as written.
    "s0_cnn": dict(rotation=10.0, shift=0.1, shear=0.1, zoom=0.1, hflip=True, fill="nearest"),
    # S0 ResNet50V2 transfer.
    "s0_resnet": dict(rotation=10.0, zoom=0.2, shift=0.1, hflip=True, fill="nearest"),
    # S2 (PyTorch: flip, RandomRotation(15), ColorJitter(brightness=0.2)); torchvision rotates with a black fill.
    "s2": dict(hflip=True, rotation=15.0, brightness=0.2, fill="constant"),
    # S3: brightness_range [0.8, 1.2]; shear 0.2 is in degrees (Keras); Keras' default fill is nearest.
    "s3": dict(rotation=30.0, shift=0.2, brightness=0.2, shear=0.2, zoom=0.2, hflip=True, fill="nearest"),
    # S4 model 2 (the "with augmentation" CNN).
    "s4": dict(rotation=40.0, shift=0.2, shear=0.2, zoom=0.2, hflip=True, fill="nearest"),
    # The classic FER-2013 recipe: random 40x40 crop of the 48x48 face and flip; centre crop in evaluation.
    "crop_flip": dict(crop=40, hflip=True),
    # A strong modern recipe: crop and flip, small rotation, random erasing on 1 image in 4, mixup.
    "fer_strong": dict(crop=40, hflip=True, rotation=10.0, erasing=0.25, mixup=0.2),
    # TrivialAugmentWide (one random op of random strength per image, nothing to tune) and flip.
    "trivial": dict(trivial=True, hflip=True),
    # Faces as detectors and real photos give them: framing 0.75-1.3x FER-2013's, shifted, turned, stretched;
    # blurred or down- and up-scaled, JPEG down to quality 20, gamma / contrast / brightness, sensor noise.
    "fer_robust": dict(crop=40, hflip=True, rotation=15.0, shift=0.08, scale=[0.75, 1.3], aspect=0.1, blur=0.25,
                       jpeg=0.25, gamma=0.4, contrast=0.4, brightness=0.3, noise=0.03, erasing=0.25, mixup=0.2),
}

# What a field left unset by both the user and the preset means.
OFF = dict(rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, hflip=False, brightness=0.0, fill="nearest", crop=0,
           trivial=False, erasing=0.0, mixup=0.0, cutmix=0.0, scale=[1.0, 1.0], aspect=0.0, blur=0.0, jpeg=0.0,
           gamma=0.0, contrast=0.0, noise=0.0, equalize=0.0)

# Keras fill mode -> grid_sample padding mode ("nearest" repeats the edge, "constant" pads with black).
FILLS = {"nearest": "border", "constant": "zeros"}

# Upper bounds past which a field stops meaning anything (a zoom of 1 can draw a scale of 0).
_MAX = dict(rotation=(180.0, True), shift=(1.0, True), shear=(90.0, False), zoom=(1.0, False),
            brightness=(1.0, True), erasing=(1.0, True), blur=(1.0, True), jpeg=(1.0, True), contrast=(1.0, True),
            noise=(1.0, True), equalize=(1.0, True))

# Degradations: Gaussian blur sigma (pixels), down-scaling factor before scaling back up, JPEG quality.
BLUR_SIGMA = (0.4, 1.2)
DOWNSCALE = (0.45, 0.85)
JPEG_QUALITY = (20, 90)

# torchvision RandomErasing's defaults: erased area fraction, aspect ratio range and attempts per image.
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
ERASE_TRIES = 10


def resolve(cfg: AugmentConfig) -> AugmentConfig:
    """The config with preset values where the user left None, then the remaining None fields off; validated."""
    if cfg.preset not in PRESETS:
        raise UnknownNameError(f"unknown augment.preset {cfg.preset!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset]
    values = {}
    for name, off in OFF.items():
        value = getattr(cfg, name)
        values[name] = value if value is not None else preset.get(name, off)
    out = dataclasses.replace(cfg, **values)
    _check(out)
    return out


def _check(cfg: AugmentConfig) -> None:
    for name in ("rotation", "shift", "shear", "zoom", "brightness", "crop", "erasing", "mixup", "cutmix", "aspect",
                 "blur", "jpeg", "gamma", "contrast", "noise", "equalize"):
        value = getattr(cfg, name)
        if value < 0:
            raise FerkitError(f"augment.{name} is {value}; it must be 0 (off) or positive")
        if name in _MAX:
            limit, inclusive = _MAX[name]
            if value > limit or (value == limit and not inclusive):
                bound = f"at most {limit:g}" if inclusive else f"below {limit:g}"
                raise FerkitError(f"augment.{name} is {value}; it must be {bound}")
    if len(cfg.scale) != 2 or not 0 < cfg.scale[0] <= cfg.scale[1]:
        raise FerkitError(f"augment.scale is {cfg.scale}; it must be [lo, hi] with 0 < lo <= hi, e.g. [0.75, 1.3]")
    if cfg.fill not in FILLS:
        raise UnknownNameError(f"unknown augment.fill {cfg.fill!r}; choose one of: {', '.join(FILLS)}")


class BatchAugment:
    """Per-sample random augmentation of a uint8 batch (B, 1, H, W), with soft targets (B, C) out.

    Order: TrivialAugmentWide (uint8, per image) -> affine (rotation, shift, shear, zoom, framing scale and aspect,
    flip) -> random crop -> histogram equalization, gamma, contrast, brightness -> noise -> JPEG -> blur -> random
    erasing -> mixup or cutmix (one of them per batch when both are on). Lighting and noise come before JPEG and
    blur, as in a camera whose photo is compressed and then shrunk to a face crop.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, num_classes: int):
        self.cfg = resolve(cfg)
        if self.cfg.crop > image_size:
            raise FerkitError(f"augment.crop {self.cfg.crop} is larger than the {image_size}x{image_size} faces; "
                              f"use a crop of at most {image_size}")
        self.image_size = image_size
        self.num_classes = num_classes
        self.out_size = self.cfg.crop or image_size
        c = self.cfg
        self._framing = c.scale != [1.0, 1.0] or bool(c.aspect)
        self._affine = bool(c.rotation or c.shift or c.shear or c.zoom) or self._framing
        self._trivial = None
        if c.trivial:
            from torchvision.transforms import v2

            self._trivial = v2.TrivialAugmentWide()

    @torch.no_grad()  # not inference_mode: the output must be usable as input of a training forward pass
    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` uint8 (B, 1, H, W), ``y`` int labels (B,) or soft targets (B, C) -> float32 images and targets."""
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"expected uint8 faces (B, C, {self.image_size}, {self.image_size}), "
                             f"got {x.dtype} {tuple(x.shape)}")
        rng = _Rng(generator, x.device)
        c = self.cfg
        if self._trivial is not None:
            x = self._trivial_augment(x, generator)
        x = x.float().div_(255)  # (B, C, H, W)
        flip = rng.draw(len(x)) < 0.5 if c.hflip else None  # (B,)
        if self._affine:
            x = self._affine_transform(x, rng, flip)
        elif flip is not None:
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        if c.crop:
            x = self._random_crop(x, rng)
        x = self._lighting(x, rng)
        if c.noise:
            sigma = c.noise * rng.uniform(len(x))  # (B,)
            x = (x + sigma[:, None, None, None] * rng.normal(*x.shape)).clamp_(0, 1)
        if c.jpeg:
            x = self._jpeg(x, rng)
        if c.blur:
            x = self._blur(x, rng)
        if c.erasing:
            x = self._erase(x, rng)
        y = self._soft_targets(y, len(x))
        if c.mixup or c.cutmix:
            x, y = self._mix(x, y, rng)
        return x, y

    def _soft_targets(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        if y.shape[0] != batch:
            raise ValueError(f"{batch} images but {y.shape[0]} targets")
        if y.ndim == 1 and not y.is_floating_point():
            return F.one_hot(y.long(), self.num_classes).float()  # (B, C)
        if y.ndim == 2 and y.shape[1] == self.num_classes:
            return y.float()
        raise ValueError(f"targets must be int labels (B,) or soft targets (B, {self.num_classes}), "
                         f"got {y.dtype} {tuple(y.shape)}")

    def _trivial_augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # TrivialAugmentWide draws from the global RNG; seed it from the generator inside a fork so the run stays
        # reproducible and the caller's global RNG is left untouched.
        if generator is None:
            return torch.stack([self._trivial(img) for img in x])
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return torch.stack([self._trivial(img) for img in x])

    def _affine_transform(self, x: torch.Tensor, rng: _Rng, flip: torch.Tensor | None) -> torch.Tensor:
        B, C, H, W = x.shape
        c = self.cfg
        # One draw for all parameters (an off field multiplies its column by 0); the (B,) arithmetic runs in numpy,
        # where a tiny op costs a microsecond instead of tens.
        u = (2 * rng.draw(B, 6) - 1).double().cpu().numpy()  # (B, 6) uniform in [-1, 1]
        angle, shear = np.deg2rad(c.rotation * u[:, 0]), np.deg2rad(c.shear * u[:, 1])
        tr, tc = c.shift * H * u[:, 2], c.shift * W * u[:, 3]  # rows, columns (Keras' height and width shift)
        zr, zc = 1 + c.zoom * u[:, 4], 1 + c.zoom * u[:, 5]  # Keras draws the two zooms independently
        if self._framing:  # one window scale for both axes, and an aspect change, both log-uniform
            v = rng.draw(B, 2).double().cpu().numpy()  # (B, 2) uniform in [0, 1)
            lo, hi = np.log(c.scale)
            side = np.exp(lo + (hi - lo) * v[:, 0])
            stretch = np.exp(np.log1p(c.aspect) * (2 * v[:, 1] - 1) / 2)
            zr, zc = zr * side / stretch, zc * side * stretch
        # Keras' rotation @ shift @ shear @ zoom in (row, col) pixels about the centre, mapping output to input
        # positions, multiplied out and written in affine_grid's (x, y) = (col, row) order.
        cos, sin = np.cos(angle), np.sin(angle)
        a_xx, a_xy = zc * np.cos(angle + shear), sin * zr
        a_yx, a_yy = -zc * np.sin(angle + shear), cos * zr
        t_x, t_y = sin * tr + cos * tc, cos * tr - sin * tc
        if flip is not None:  # output x -> -x before the rest, as Keras flips the transformed image
            sign = np.where(flip.cpu().numpy(), -1.0, 1.0)
            a_xx, a_yx = a_xx * sign, a_yx * sign
        # Pixels -> affine_grid's [-1, 1] coordinates (align_corners=False puts +-1 on the outer pixel edges).
        theta = np.stack([a_xx, a_xy * H / W, t_x * 2 / W, a_yx * W / H, a_yy, t_y * 2 / H], -1)  # (B, 6)
        theta = torch.from_numpy(theta).float().view(B, 2, 3).to(x.device)
        grid = _affine_grid(theta, H, W)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=FILLS[c.fill], align_corners=False)

    def _lighting(self, x: torch.Tensor, rng: _Rng) -> torch.Tensor:
        c = self.cfg
        B = len(x)
        if c.equalize:
            chosen = rng.uniform(B) < c.equalize  # (B,)
            x = torch.where(chosen[:, None, None, None], equalize_hist(x), x)
        if c.gamma:
            g = torch.exp(math.log1p(c.gamma) * (2 * rng.uniform(B) - 1))  # (B,) log-uniform
            x = x.clamp_(min=1e-6).pow_(g[:, None, None, None])
        if c.contrast:
            factor = (1 + c.contrast * (2 * rng.uniform(B) - 1))[:, None, None, None]
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (mean + (x - mean) * factor).clamp_(0, 1)
        if c.brightness:
            factor = 1 + c.brightness * (2 * rng.uniform(B) - 1)
            x = (x * factor[:, None, None, None]).clamp_(0, 1)
        return x

    def _jpeg(self, x: torch.Tensor, rng: _Rng) -> torch.Tensor:
        import cv2

        B = len(x)
        chosen = (rng.uniform(B) < self.cfg.jpeg).nonzero()[:, 0].tolist()
        quality = (JPEG_QUALITY[0] + (JPEG_QUALITY[1] - JPEG_QUALITY[0]) * rng.uniform(B)).round().int().tolist()
        if not chosen:
            return x
        pixels = (x[chosen] * 255).round_().to(torch.uint8).cpu().numpy()  # (K, C, H, W)
        out = []
        for img, i in zip(pixels, chosen):
            ok, buf = cv2.imencode(".jpg", img[0], [cv2.IMWRITE_JPEG_QUALITY, quality[i]])
            out.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
        x[chosen] = torch.from_numpy(np.stack(out)).to(x.device, x.dtype)[:, None].div_(255)
        return x

    def _blur(self, x: torch.Tensor, rng: _Rng) -> torch.Tensor:
        """A Gaussian blur or a down- and up-scaling (half of the blurred images each), as shrunk photos look."""
        B, C, H, W = x.shape
        u = rng.uniform(B, 3)  # (B, 3): whether, which kind, how strong
        gauss = ((u[:, 0] < self.cfg.blur) & (u[:, 1] < 0.5)).nonzero()[:, 0]
        resize = ((u[:, 0] < self.cfg.blur) & (u[:, 1] >= 0.5)).nonzero()[:, 0]
        if len(gauss):
            sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[gauss, 2]  # (K,)
            r = torch.arange(-3, 4, device=x.device, dtype=x.dtype)  # 7 taps cover 2 sigma at 1.5
            k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
            k = k / k.sum(1, keepdim=True)  # (K, 7)
            imgs = x[gauss].transpose(0, 1)  # (C, K, H, W): one group per image
            imgs = F.pad(imgs, (3, 3, 3, 3), mode="replicate")
            imgs = F.conv2d(imgs, k[:, None, None, :], groups=len(gauss))  # along rows
            imgs = F.conv2d(imgs, k[:, None, :, None], groups=len(gauss))  # along columns
            x[gauss] = imgs.transpose(0, 1)
        for i, f in zip(resize.tolist(), (DOWNSCALE[0] + (DOWNSCALE[1] - DOWNSCALE[0]) * u[resize, 2]).tolist()):
            small = F.interpolate(x[i:i + 1], size=(max(4, round(H * f)), max(4, round(W * f))), mode="area")
            x[i] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[0]
        return x

    def _random_crop(self, x: torch.Tensor, rng: _Rng) -> torch.Tensor:
        B, C, H, W = x.shape
        size = self.cfg.crop
        top = (rng.uniform(B) * (H - size + 1)).long().clamp_(max=H - size)  # (B,) as randint(0, H - size + 1)
        left = (rng.uniform(B) * (W - size + 1)).long().clamp_(max=W - size)
        return _windows(x, top.to(x.device), left.to(x.device), size)

    def _erase(self, x: torch.Tensor, rng: _Rng) -> torch.Tensor:
        # torchvision RandomErasing, vectorised: all attempts drawn at once, the first that fits is used.
        B, C, H, W = x.shape
        area = H * W * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * rng.uniform(B, ERASE_TRIES))
        lo, hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
        ratio = torch.exp(lo + (hi - lo) * rng.uniform(B, ERASE_TRIES))  # (B, tries)
        h = torch.round(torch.sqrt(area * ratio))
        w = torch.round(torch.sqrt(area / ratio))
        fits = (h < H) & (w < W)
        first = fits.int().argmax(1, keepdim=True)  # (B, 1)
        h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # (B,)
        apply = fits.any(1) & (rng.uniform(B) < self.cfg.erasing)
        top = torch.floor(rng.uniform(B) * (H - h + 1))
        left = torch.floor(rng.uniform(B) * (W - w + 1))
        rows = torch.arange(H, device=x.device)
        cols = torch.arange(W, device=x.device)
        top, left, h, w, apply = (v.to(x.device) for v in (top, left, h, w, apply))
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
        mask = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
        # Random values in the data's own [0, 1] range (torchvision's normal noise assumes normalised input), drawn
        # only for the images that are erased.
        idx = apply.nonzero()[:, 0]  # (E,)
        x[idx] = torch.where(mask[idx, None], rng.uniform(len(idx), C, H, W), x[idx])
        return x

    def _mix(self, x: torch.Tensor, y: torch.Tensor, rng: _Rng) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        B, C, H, W = x.shape
        cutmix = bool(c.cutmix) and (not c.mixup or bool(rng.uniform(1) < 0.5))
        lam = rng.beta(c.cutmix if cutmix else c.mixup)
        perm = rng.permutation(B)
        if cutmix:  # one box for the batch, as torchvision's CutMix; lambda becomes the kept area
            cy, cx = int(rng.uniform(1) * H), int(rng.uniform(1) * W)
            half = 0.5 * math.sqrt(1.0 - lam)
            rh, rw = int(half * H), int(half * W)
            y1, y2, x1, x2 = max(cy - rh, 0), min(cy + rh, H), max(cx - rw, 0), min(cx + rw, W)
            x[:, :, y1:y2, x1:x2] = x[perm.to(x.device), :, y1:y2, x1:x2]
            lam = 1.0 - (y2 - y1) * (x2 - x1) / (H * W)
        else:
            x = lam * x + (1 - lam) * x[perm.to(x.device)]
        y = lam * y + (1 - lam) * y[perm.to(y.device)]
        return x, y


def eval_transform(cfg: AugmentConfig, x: torch.Tensor) -> torch.Tensor:
    """The deterministic part of the augmentation: uint8 (B, 1, H, W) -> float32 [0, 1], centre crop if set."""
    c = resolve(cfg)
    out = x.float().div_(255)
    if c.crop:
        H, W = out.shape[-2:]
        if c.crop > min(H, W):
            raise FerkitError(f"augment.crop {c.crop} is larger than the {H}x{W} faces; use a crop of at most "
                              f"{min(H, W)}")
        top, left = int(round((H - c.crop) / 2)), int(round((W - c.crop) / 2))  # torchvision CenterCrop
        out = out[..., top:top + c.crop, left:left + c.crop]
    return out


def _affine_grid(theta: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` as one (B, 2, 3) @ (3, H*W) matmul: several times
    faster on CPU, where affine_grid's batched (H*W, 3) @ (3, 2) products cost more than the sampling itself."""
    xs = (torch.arange(W, device=theta.device, dtype=theta.dtype) * 2 + 1) / W - 1  # (W,) pixel centres
    ys = (torch.arange(H, device=theta.device, dtype=theta.dtype) * 2 + 1) / H - 1  # (H,)
    base = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W), torch.ones_like(ys)[:, None].expand(H, W)])
    return (theta @ base.view(3, H * W)).transpose(1, 2).view(-1, H, W, 2)  # (B, H, W, 2), a strided view


def _windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """The size x size window at (top[b], left[b]) of each image b: an exact integer crop."""
    views = x.unfold(2, size, 1).unfold(3, size, 1)  # (B, C, H - size + 1, W - size + 1, size, size), no copy
    return views[torch.arange(len(x), device=x.device), :, top, left]  # (B, C, size, size)


class _Rng:
    """Every random draw of a batch, from one generator (or the global RNG when it is None)."""

    def __init__(self, generator: torch.Generator | None, device: torch.device):
        self.g = generator
        self.device = device  # where results go
        self.draw_device = generator.device if generator is not None else device

    def draw(self, *shape: int) -> torch.Tensor:
        """Uniform in [0, 1) on the generator's device (where the affine matrices are built)."""
        return torch.rand(shape, generator=self.g, device=self.draw_device)

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniform in [0, 1) on the data's device."""
        return self.draw(*shape).to(self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal on the data's device."""
        return torch.randn(shape, generator=self.g, device=self.draw_device).to(self.device)

    def permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.g, device=self.draw_device)

    def beta(self, alpha: float) -> float:
        # torch's Beta sampler takes no generator; a numpy generator seeded from ours keeps the draw reproducible.
        seed = int(torch.randint(2**62, (1,), generator=self.g, device=self.draw_device))
        return float(np.random.default_rng(seed).beta(alpha, alpha))


def equalize_hist(x: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalization of float [0, 1] images (B, C, H, W), as ``cv2.equalizeHist`` maps uint8.

    Any monotone tone curve (exposure, contrast, a camera's gamma, an equalized dataset) gives the same output; an
    image of one level has no histogram to spread and stays as it is (as in OpenCV).
    """
    B = len(x)
    levels = (x.reshape(B, -1) * 255).round_().long().clamp_(0, 255)  # (B, N)
    hist = torch.zeros(B, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    cdf = hist.cumsum(1)  # (B, 256)
    low = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)  # count of the darkest
    n = levels.shape[1]
    lut = ((cdf - low) / (n - low).clamp_(min=1)).clamp_(0, 1)
    one_level = (low == n).view(B, *([1] * (x.ndim - 1)))
    return torch.where(one_level, x, lut.gather(1, levels).view_as(x))
