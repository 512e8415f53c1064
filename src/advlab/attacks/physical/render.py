"""A small differentiable renderer for a textured 3D object, for EOT over 3D poses (Athalye,
Engstrom, Ilyas and Kwok 2018, "Synthesizing robust adversarial examples", sec. 2 and the 3D case
of eq. 1: for a fixed pose, lighting and background, a rendering is a linear function of the
texture, t(x) = M_t x + b_t, so the classifier's gradient reaches the texture).

The object is an analytic ellipsoid (a sphere, or a flattened "shell" standing in for the paper's
turtle) with a longitude/latitude UV map. Each pixel casts a ray from a pinhole camera at the
origin looking along +z; the ray meets the ellipsoid in closed form (a quadratic), the hit point
gives the UV coordinates at which the texture is sampled (``grid_sample``, bilinear, wrapping
around in longitude) and the surface normal that shades it (Lambert: ambient + directional *
max(0, n . l)). Pixels that miss show a background image. The scene is rendered at
``supersample`` times the output side and averaged down, which anti-aliases the silhouette the way
a camera's sensor integrates light, then camera noise is added. Only the texture (and the
background) carry gradients; the pose enters through the geometry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from advlab.errors import AdvlabError, check_images, check_range

# Semi-axes (x, y, z) of the analytic shapes, in world units.
SHAPES = {"sphere": (1.0, 1.0, 1.0), "shell": (1.0, 0.8, 0.55)}


@dataclass(frozen=True)
class ViewDistribution:
    """Ranges of the random viewing conditions; every value is drawn uniformly per view.

    rotation: max |angle| in degrees about the object's x, y and z axes (180 each: any
    orientation); distance: (near, far) of the object's centre from the camera, in units of the
    object's largest semi-axis; translation: max |shift| of the centre across the view, as a
    share of the distance; ambient and directional: (lo, hi) light intensities; the directional
    light comes from a random direction on the camera's side; noise: max standard deviation of
    the camera's Gaussian noise.
    """

    rotation: tuple[float, float, float] = (180.0, 180.0, 180.0)
    distance: tuple[float, float] = (2.2, 3.0)
    translation: float = 0.08
    ambient: tuple[float, float] = (0.45, 0.75)
    directional: tuple[float, float] = (0.2, 0.55)
    noise: float = 0.02

    def __post_init__(self) -> None:
        if len(self.rotation) != 3:
            raise AdvlabError(f"rotation needs three maximum angles (x, y, z), got {self.rotation}")
        for axis, angle in zip("xyz", self.rotation, strict=True):
            check_range(angle, f"rotation about {axis} (degrees)", 0.0, 180.0)
        near, far = self.distance
        if not 1.2 <= near <= far <= 50:
            raise AdvlabError(f"distance range must satisfy 1.2 <= near <= far <= 50 (in object radii; nearer "
                              f"puts the camera inside or against the object), got ({near:g}, {far:g})")
        check_range(self.translation, "translation (share of the distance)", 0.0, 0.3)
        for name, (lo, hi) in (("ambient", self.ambient), ("directional", self.directional)):
            if not 0 <= lo <= hi <= 2:
                raise AdvlabError(f"{name} light range must satisfy 0 <= lo <= hi <= 2, got ({lo:g}, {hi:g})")
        check_range(self.noise, "camera noise", 0.0, 0.5)

    def to_dict(self) -> dict:
        return asdict(self)

    def sample(self, n: int, backgrounds: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n views: Euler angles (degrees), distance, shift (x, y), light intensities and direction,
        noise level, background index (in range(backgrounds)) and the noise's seed."""
        def uniform(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

        limits = torch.tensor(self.rotation)
        # A light direction on the camera's side (negative z points back toward the camera).
        light = torch.randn(n, 3, generator=generator)
        light[:, 2] = -light[:, 2].abs() - 0.5
        return {
            "angles": (torch.rand(n, 3, generator=generator) * 2 - 1) * limits,
            "distance": uniform(*self.distance),
            "shift": uniform(-self.translation, self.translation, 2),
            "ambient": uniform(*self.ambient),
            "directional": uniform(*self.directional),
            "light": F.normalize(light, dim=1),
            "noise": uniform(0.0, self.noise),
            "background": torch.randint(backgrounds, (n,), generator=generator),
            "noise_seed": torch.randint(2**31 - 1, (n,), generator=generator),
        }


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """R = Rz Ry Rx for Euler angles (N, 3) in degrees, shape (N, 3, 3)."""
    rad = angles * (math.pi / 180)
    cx, cy, cz = torch.cos(rad).unbind(1)
    sx, sy, sz = torch.sin(rad).unbind(1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def check_texture(texture: torch.Tensor, channels: int | None = None) -> None:
    """A texture is (C, H, W) or (N, C, H, W), float in [0, 1]."""
    if isinstance(texture, torch.Tensor) and texture.dim() == 3:
        texture = texture[None]
    check_images(texture, "texture", channels)


class Renderer:
    """Renders a textured ellipsoid over background images from sampled or given views.

    shape: a name from SHAPES or three semi-axes; size: output side (the classifier's input);
    supersample: the internal resolution factor; fov: the camera's horizontal field of view in
    degrees; backgrounds: (M, C, h, w) images in [0, 1] (resized to the render's side); views: the
    ViewDistribution sampled by ``sample``. ``renderer(texture, views)`` returns (N, C, size, size)
    images in [0, 1], differentiable in the texture.
    """

    def __init__(self, backgrounds: torch.Tensor, size: int = 32, supersample: int = 2, shape="shell",
                 fov: float = 50.0, views: ViewDistribution | None = None) -> None:
        check_images(backgrounds, "backgrounds")
        if isinstance(shape, str):
            if shape not in SHAPES:
                raise AdvlabError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
            shape = SHAPES[shape]
        if len(shape) != 3 or min(shape) <= 0:
            raise AdvlabError(f"an ellipsoid needs three positive semi-axes, got {shape}")
        if int(size) != size or size < 4 or int(supersample) != supersample or not 1 <= supersample <= 8:
            raise AdvlabError(f"size must be an integer >= 4 and supersample an integer in 1..8, got {size}, "
                              f"{supersample}")
        check_range(fov, "field of view (degrees)", 5.0, 150.0)
        self.axes = tuple(float(a) for a in shape)
        self.size, self.supersample, self.fov = int(size), int(supersample), float(fov)
        self.views = views or ViewDistribution()
        side = self.size * self.supersample
        self.backgrounds = F.interpolate(backgrounds, size=(side, side), mode="bilinear", align_corners=False,
                                         antialias=True).clamp(0, 1) if backgrounds.shape[-1] != side or \
            backgrounds.shape[-2] != side else backgrounds
        self.channels = backgrounds.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.views.sample(n, len(self.backgrounds), generator)

    def __call__(self, texture: torch.Tensor, views: dict[str, torch.Tensor], full_resolution: bool = False,
                 with_mask: bool = False):
        """Render texture (C, Ht, Wt) or one texture per view (N, C, Ht, Wt) from the N views."""
        if texture.dim() == 3:
            texture = texture[None]
        if texture.dim() != 4 or texture.shape[1] != self.channels:
            raise AdvlabError(f"texture must be shaped ({self.channels}, H, W) like the backgrounds' channels, "
                              f"got {tuple(texture.shape)}")
        dtype, device = texture.dtype, texture.device
        v = {k: t.to(device) for k, t in views.items()}
        v = {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in v.items()}
        n = len(v["distance"])
        if texture.shape[0] not in (1, n):
            raise AdvlabError(f"give one texture or one per view ({n}), got {texture.shape[0]}")
        side = self.size * self.supersample
        axes = torch.tensor(self.axes, dtype=dtype, device=device)
        radius = max(self.axes)

        # Rays through the pixel centres; image rows go down (camera y down), columns right.
        focal = 1.0 / math.tan(math.radians(self.fov) / 2)
        coords = (torch.arange(side, dtype=dtype, device=device) + 0.5) / side * 2 - 1
        py, px = torch.meshgrid(coords, coords, indexing="ij")
        rays = torch.stack([px / focal, py / focal, torch.ones_like(px)], -1).view(1, -1, 3)  # (1, P, 3)

        rot = rotation_matrix(v["angles"])  # object -> world
        distance = v["distance"] * radius
        centre = torch.stack([v["shift"][:, 0] * distance, v["shift"][:, 1] * distance, distance], 1)  # (n, 3)
        # Into the object's frame, scaled to the unit sphere: Q(s) = s a - b, |Q| = 1.
        a = (rays @ rot) / axes  # rows are R^T d
        b = ((rot.transpose(1, 2) @ centre[:, :, None])[:, :, 0] / axes)[:, None, :]
        aa, ab, bb = (a * a).sum(-1), (a * b).sum(-1), (b * b).sum(-1)
        disc = ab * ab - aa * (bb - 1)
        hit = disc > 0
        s = (ab - disc.clamp_min(0).sqrt()) / aa
        hit = hit & (s > 0)
        q = s[..., None] * a - b  # (n, P, 3) on the unit sphere
        q = torch.where(hit[..., None], q, torch.zeros_like(q))

        # UV: longitude and latitude of the unit-sphere point.
        u = torch.atan2(q[..., 1], q[..., 0]) / (2 * math.pi) + 0.5
        lat = torch.acos(q[..., 2].clamp(-1, 1)) / math.pi
        colour = sample_texture(texture.expand(n, -1, -1, -1) if texture.shape[0] == 1 else texture, u, lat)

        # Lambert shading with the world-space normal of the ellipsoid (gradient of |p / axes|^2).
        normal = F.normalize(((q / axes) @ rot.transpose(1, 2)), dim=-1)
        lambert = (normal * v["light"][:, None, :]).sum(-1).clamp_min(0)
        shade = v["ambient"][:, None] + v["directional"][:, None] * lambert  # (n, P)
        obj = colour * shade[:, None, :]
        background = self.backgrounds[v["background"].long()].to(device, dtype).flatten(2)
        mask = hit[:, None, :].to(dtype)
        image = (mask * obj + (1 - mask) * background).view(n, -1, side, side)
        mask = mask.view(n, 1, side, side)
        if not full_resolution and self.supersample > 1:
            image = F.avg_pool2d(image, self.supersample)
            mask = F.avg_pool2d(mask, self.supersample)
        image = image + self._noise(image.shape, v, dtype, device)
        image = image.clamp(0.0, 1.0)
        return (image, mask) if with_mask else image

    @staticmethod
    def _noise(shape, v: dict[str, torch.Tensor], dtype, device) -> torch.Tensor:
        """Camera noise, drawn from each view's own seed so that a view renders the same every time."""
        if not bool((v["noise"] > 0).any()):
            return torch.zeros(shape, dtype=dtype, device=device)
        noise = torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(int(seed)))
                             for seed in v["noise_seed"].tolist()])
        return noise.to(device, dtype) * v["noise"].view(-1, 1, 1, 1)


def sample_texture(texture: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of texture (N, C, H, W) at UV (N, P) in [0, 1], wrapping around in u
    (longitude) and clamping in v (latitude); returns (N, C, P). Differentiable in the texture."""
    width = texture.shape[-1]
    # One wrapped column on each side makes bilinear interpolation continuous across u = 0 / 1.
    wrapped = torch.cat([texture[..., -1:], texture, texture[..., :1]], -1)
    column = u * width - 0.5 + 1  # pixel coordinate in the wrapped texture (align_corners=False)
    x = (2 * column + 1) / (width + 2) - 1
    y = 2 * v - 1
    grid = torch.stack([x, y], -1)[:, None]  # (N, 1, P, 2)
    return F.grid_sample(wrapped, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def fixed_view(renderer: Renderer, n: int = 1, background: int = 0, yaw: float = 0.0) -> dict[str, torch.Tensor]:
    """A canonical view: the object upright, facing the camera (turned by yaw about the vertical
    axis), at the middle distance, centred, under the middle of the light ranges from the
    camera's direction, without noise; for the single-view baseline and the rotation curves."""
    d = renderer.views
    angles = torch.zeros(n, 3)
    angles[:, 0] = -90.0  # the shell's flat axis (z) along the camera's vertical: seen from the side
    angles[:, 1] = yaw  # then turned about the vertical (world y)
    return {"angles": angles, "distance": torch.full((n,), sum(d.distance) / 2), "shift": torch.zeros(n, 2),
            "ambient": torch.full((n,), sum(d.ambient) / 2), "directional": torch.full((n,), sum(d.directional) / 2),
            "light": F.normalize(torch.tensor([[0.3, -0.4, -1.0]]), dim=1).expand(n, 3).clone(),
            "noise": torch.zeros(n), "background": torch.full((n,), background, dtype=torch.long),
            "noise_seed": torch.zeros(n, dtype=torch.long)}


def turntable_views(renderer: Renderer, yaw: float, n: int, generator: torch.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
    """n random views (distance, shift, light, background, noise) of the object upright and turned
    by yaw degrees about the vertical axis: one point of a success-against-rotation curve."""
    views = renderer.sample(n, generator)
    views["angles"] = fixed_view(renderer, n, yaw=yaw)["angles"]
    return views
