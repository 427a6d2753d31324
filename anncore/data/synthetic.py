"""Synthetic Cityscapes: procedural street scenes written in exactly the Cityscapes layout (paper Sec. 4 trains on
Cityscapes; the real set needs a login, so this is the embedded default for the course and the tests).

Size (~710 lines): one scene generator, whose parts (street, buildings, vehicles, the cue board) share one
camera, one random stream and one painter style; they are drawn in order, so they stay in one class.

**Scenes.** A pinhole camera 1.6 m above a flat street looks down a road towards a horizon row; every object is
placed in metres (lateral ``X``, depth ``Z``) and projected, so sizes follow perspective. Drawn back to front as
polygons, as Cityscapes annotators did: sky, road (dashed centre line), two sidewalks (paving), building facades
(windows), terrain strips, trees (vegetation), a wall and a fence, poles carrying traffic signs and traffic lights,
persons on the sidewalks, riders on bicycles, vehicles on the road, and the ego-vehicle bonnet at the bottom
(label ``ego vehicle``, train id 255, as in the real set). That is 17 of the 19 classes (no train, no motorcycle).
Colours vary per scene and per object; every region carries low- and high-frequency noise, the image is slightly
blurred and gets pixel noise, so neither colour nor a single pixel gives the class away.

**The distant cue.** Cars, trucks and buses are drawn by *one* generator (one rear-view silhouette, one distribution
of size, body colour, windows, lights and wheels), so a vehicle's own pixels and their neighbourhood do not tell
which of the three it is. All vehicles of a scene share one class, announced by a single large **cue board**
(:data:`CUE_BOARDS`: blue with one white stripe for car, orange with two for truck, magenta with three for bus;
equally likely) on a tall pole near the top corner of the *other* side of the image. The board is ``0.16-0.22 W``
wide (:data:`BOARD_WIDTH`) and lies within ``[0.02 W, 0.28 W]`` of its side (mirrored at random); every vehicle
pixel lies in the other half, at least ``0.22 W`` away (>= 56 px at the course's 128x256): beyond the reach of the
small backbone's ``fcn`` head, well inside a global-context block's. A local model can only guess (a third right); a
model that relates the vehicles to the board labels them all. The training transforms' hue jitter (``hue=0.05``, 18
degrees) keeps the three hues (120 degrees apart) distinct, and the stripe count is a colour-free second cue. A crop
that cuts the board away leaves its vehicles undecidable (label noise, not a bug); validation always sees the whole
image. The board's size and the training recipe that learns the cue (``params/course_model.yaml``) were chosen by
the runs in ``benchmarks/cue_recipe_experiments.md``, measured with :func:`anncore.analysis.cue.board_swap`.
A variant (``cue_variant="stripes"``, :data:`CUE_VARIANTS`, ``params/afnb_variant.yaml``) draws every board in one
colour with the same white area, so only the stripes tell the class; the rest of the scene is unchanged.

**Files** (:func:`write_synthetic_cityscapes`): ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png``
(RGB) and, with the same stem, ``gtFine`` ``_labelIds.png`` (uint8), ``_labelTrainIds.png`` (uint8), ``_color.png``
(RGBA, official colours), ``_instanceIds.png`` (uint16: ``id * 1000 + k`` for the instance classes, else the
label id) and ``_polygons.json`` (``imgHeight``, ``imgWidth``, ``objects: [{label, polygon}]`` in drawing order).
The label images are rasterised from the polygons with PIL's ``ImageDraw.polygon`` in order, exactly as
cityscapesscripts' ``json2labelImg``/``json2instanceImg`` do, so ``csCreateTrainIdLabelImgs`` on the written
polygons reproduces ``_labelTrainIds.png``. Everything is a function of the seed.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from anncore.data.labels import LABELS
from anncore.errors import BadInput, OutputInUse
from anncore.files import disk_full, write_json

#: Bumped whenever the generator's output changes, so :func:`ensure_synthetic` regenerates stale sets.
GENERATOR_VERSION = 2
MANIFEST = "synthetic.json"
CITIES = {"train": ("alphaville", "bravoburg", "charliestadt"), "val": ("deltaheim", "echofeld")}
#: Vehicle class -> (board RGB, number of white stripes): the distant cue.
CUE_BOARDS: dict[str, tuple[tuple[int, int, int], int]] = {
    "car": ((35, 75, 225), 1),
    "truck": ((245, 150, 20), 2),
    "bus": ((205, 40, 195), 3),
}
#: Width of the cue board as a fraction of the image width (version 1: 0.08-0.11, too small to be learnt; see
#: benchmarks/cue_recipe_experiments.md). Its left edge lies in ``[0.02, 0.06] W`` (mirrored when the board is on the
#: right).
BOARD_WIDTH = (0.16, 0.22)
#: How the cue board tells the three classes apart (``cue_variant`` of :func:`write_synthetic_cityscapes`, ``synth
#: --cue-variant``, ``TrainConfig.synthetic_cue``). ``boards`` (the default, every set written before the option
#: existed): :data:`CUE_BOARDS`, colour and stripe count. ``stripes``: one colour (:data:`STRIPES_BOARD`) for all
#: three and the same white area (:data:`STRIPES_INK` of the board's height), split into 1, 2 or 3 stripes; only the
#: stripes' number and thickness, a detail finer than a stride-8 feature cell, tells the class, not the board's mean
#: colour, which is what an average over the board keeps (benchmarks/cue_recipe_experiments.md, "AFNB variant").
CUE_VARIANTS: tuple[str, ...] = ("boards", "stripes")
STRIPES_BOARD = (40, 150, 140)
STRIPES_INK = 0.3
CAMERA_HEIGHT = 1.6  # metres above the street

Painter = Callable[[int, int, int, int], np.ndarray]  # (y0, y1, x0, x1) -> (y1 - y0, x1 - x0, 3) float RGB


@dataclass(frozen=True)
class SceneObject:
    """One annotated polygon: a Cityscapes label name, integer ``(x, y)`` vertices inside the image, a painter."""

    label: str
    polygon: tuple[tuple[int, int], ...]
    paint: Painter


@dataclass(frozen=True)
class Scene:
    """A rendered scene: the RGB image, its objects in drawing order, ``index`` (H, W) int32 with the 1-based
    number of the topmost object per pixel (0: none), and the vehicle class the cue board announces."""

    image: np.ndarray
    objects: tuple[SceneObject, ...]
    index: np.ndarray
    cue: str

    def encode(self, values: Sequence, background: int | tuple[int, ...] = 0) -> np.ndarray:
        """Per-pixel value of the topmost object (``values[k]``, a number or an RGB triple, for object ``k``),
        ``background`` where none."""
        return np.asarray([background, *values], dtype=np.int64)[self.index]

    def label_ids(self) -> np.ndarray:
        """``_gtFine_labelIds`` (uint8)."""
        return self.encode([LABELS[obj.label].id for obj in self.objects]).astype(np.uint8)

    def instance_ids(self) -> np.ndarray:
        """``_gtFine_instanceIds`` (uint16), numbered as ``json2instanceImg`` does: ``id * 1000 + k`` with ``k``
        counting the objects of that label in drawing order, for labels with instances; the label id otherwise."""
        seen: dict[str, int] = {}
        values = []
        for obj in self.objects:
            label = LABELS[obj.label]
            if label.has_instances:
                values.append(label.id * 1000 + seen.get(obj.label, 0))
                seen[obj.label] = seen.get(obj.label, 0) + 1
            else:
                values.append(label.id)
        return self.encode(values).astype(np.uint16)

    def board_mask(self) -> np.ndarray:
        """``(H, W)`` bool: the visible pixels of the cue board (the last traffic sign drawn, see ``cue_board``)."""
        board = max(k for k, obj in enumerate(self.objects, start=1) if obj.label == "traffic sign")
        return self.index == board

    def polygons(self) -> dict:
        """The ``_gtFine_polygons.json`` content."""
        height, width = self.index.shape
        objects = [{"label": obj.label, "polygon": [list(p) for p in obj.polygon]} for obj in self.objects]
        return {"imgHeight": height, "imgWidth": width, "objects": objects}


def _clip_polygon(points: Sequence[tuple[float, float]], width: int, height: int) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clipping of a polygon to ``[0, width-1] x [0, height-1]``."""
    edges = ((0, 0.0, 1), (0, width - 1.0, -1), (1, 0.0, 1), (1, height - 1.0, -1))  # (axis, bound, inside sign)
    out = list(points)
    for axis, bound, sign in edges:
        if not out:
            break
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            cur_in, prev_in = sign * (cur[axis] - bound) >= 0, sign * (prev[axis] - bound) >= 0
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
    return out


def _ellipse(cx: float, cy: float, rx: float | np.ndarray, ry: float | np.ndarray, degrees: np.ndarray) -> list:
    """Points ``(cx + rx cos a, cy + ry sin a)`` (image y down, so negative angles are above the centre)."""
    radians = np.deg2rad(degrees)
    return list(zip(cx + rx * np.cos(radians), cy + ry * np.sin(radians), strict=True))


_Coord = TypeVar("_Coord", int, float)


def _bbox(points: Sequence[tuple[_Coord, _Coord]]) -> tuple[_Coord, _Coord, _Coord, _Coord]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


# Outlines. Person: (x, y) in units of body height from the feet, image y down; legs, shoulders, head, one polygon.
_PERSON = (
    [(-0.13, 0.0), (-0.03, 0.0), (0.0, -0.42), (0.03, 0.0), (0.13, 0.0), (0.12, -0.47), (0.17, -0.78), (0.06, -0.83)]
    + _ellipse(0.0, -0.9, 0.075, 0.09, np.array([-20, -55, -90, -125, -160]))
    + [(-0.06, -0.83), (-0.17, -0.78), (-0.12, -0.47)]
)
# Vehicle rear view, (x, up) in fractions of width and height; the same for car, truck and bus (the point).
_VEHICLE = ((-0.5, 0.0), (0.5, 0.0), (0.5, 0.6), (0.42, 1.0), (-0.42, 1.0), (-0.5, 0.6))
# Bicycle rear view, (x, up) in metres: wheel, then handlebar.
_BICYCLE = ((-0.04, 0.0), (0.04, 0.0), (0.04, 0.8), (0.3, 1.0), (0.3, 1.08), (-0.3, 1.08), (-0.3, 1.0), (-0.04, 0.8))
# A traffic sign's dark rim and bar as (u0, v0, u1, v1) fractions of its bounding box (see ``_Street.parts``).
_SIGN_RIM = ((0.0, 0.0, 1.0, 0.12), (0.0, 0.88, 1.0, 1.01), (0.0, 0.0, 0.12, 1.0), (0.88, 0.0, 1.01, 1.0))
_SIGN_BAR = (0.3, 0.42, 0.7, 0.58)


class _Street:
    """Composes one scene: draws every random number in a fixed order, so a seed fixes the scene."""

    def __init__(
        self, rng: np.random.Generator, height: int, width: int, cue: str | None = None, cue_variant: str = "boards"
    ) -> None:
        self.rng, self.h, self.w, self.cue_variant = rng, height, width, cue_variant
        self.horizon = height * rng.uniform(0.36, 0.46)
        self.vx = width * rng.uniform(0.42, 0.58)
        self.focal = width * rng.uniform(0.8, 1.0)
        self.road = (rng.uniform(4.0, 6.5), rng.uniform(4.0, 6.5))  # half widths left, right (m)
        self.facade = (self.road[0] + rng.uniform(3.0, 5.5), self.road[1] + rng.uniform(3.0, 5.5))
        self.coarse, self.fine = self._noise(4), self._noise(48)
        drawn = str(rng.choice(list(CUE_BOARDS)))  # drawn even when forced, so the rest of the scene is unchanged
        self.cue = drawn if cue is None else cue
        self.cue_left = bool(rng.random() < 0.5)
        self.objects: list[SceneObject] = []
        self.upright: list[tuple[float, int, str, list, Painter]] = []  # depth-sorted before drawing

    # --- geometry -------------------------------------------------------------------------------------------------
    def _noise(self, cells: int) -> np.ndarray:
        """Smooth noise in [-1, 1]: ``cells`` random values across the height, bilinearly upsampled."""
        grid = self.rng.standard_normal((cells + 1, 2 * cells + 1)).astype(np.float32)
        return np.asarray(Image.fromarray(grid).resize((self.w, self.h), Image.Resampling.BILINEAR)).clip(-2, 2) / 2

    def side(self) -> tuple[int, float, float]:
        """A random side of the street: ``(sign, road half width, facade distance)``, -1 is left."""
        sign = int(self.rng.choice([-1, 1]))
        return sign, self.road[(sign + 1) // 2], self.facade[(sign + 1) // 2]

    def project(self, x: float, z: float, up: float = 0.0) -> tuple[float, float]:
        """Image ``(x, y)`` of the point ``x`` m right of the camera axis, ``z`` m ahead, ``up`` m above the street."""
        return self.vx + self.focal * x / z, self.horizon + self.focal * (CAMERA_HEIGHT - up) / z

    def flat(self, x0: float, x1: float, z0: float, z1: float) -> list:
        """A patch of street, lateral ``x0..x1``, depth ``z0..z1``."""
        return [self.project(x0, z0), self.project(x1, z0), self.project(x1, z1), self.project(x0, z1)]

    def along(self, x: float, z0: float, z1: float, up0: float, up1: float) -> list:
        """An upright face parallel to the street at lateral ``x`` (a facade, a wall), depth ``z0..z1``."""
        return [self.project(x, z0, up0), self.project(x, z1, up0), self.project(x, z1, up1), self.project(x, z0, up1)]

    def facing(self, x0: float, x1: float, z: float, up0: float, up1: float) -> list:
        """An upright rectangle facing the camera at depth ``z``: lateral ``x0..x1``, height ``up0..up1``."""
        return [self.project(x0, z, up0), self.project(x1, z, up0), self.project(x1, z, up1), self.project(x0, z, up1)]

    def add(self, label: str, points: Sequence[tuple[float, float]], paint: Painter) -> None:
        """Clip, round to integer vertices (as in Cityscapes JSON) and append; degenerate polygons are dropped."""
        rounded = [(round(x), round(y)) for x, y in _clip_polygon(points, self.w, self.h)]
        polygon = tuple(p for i, p in enumerate(rounded) if p != rounded[i - 1])
        if len(set(polygon)) >= 3:
            self.objects.append(SceneObject(label, polygon, paint))

    def place(self, z: float, label: str, points: list, paint: Painter) -> None:
        """Queue an object standing at depth ``z``; :meth:`compose` draws them far to near (ties in call order)."""
        self.upright.append((z, -len(self.upright), label, points, paint))

    # --- painters -------------------------------------------------------------------------------------------------
    def colour(self, base: Sequence[float] | np.ndarray, jitter: float = 12.0) -> np.ndarray:
        """``base`` RGB with a random brightness shift (sd ``jitter``) and a small tint (sd ``jitter / 4``)."""
        shift = self.rng.normal(0.0, jitter) + self.rng.normal(0.0, jitter / 4, 3)
        return (np.asarray(base, dtype=np.float32) + shift).astype(np.float32)

    def textured(self, base: Sequence[float], coarse: float = 14.0, fine: float = 8.0, jitter: float = 12.0) -> Painter:
        """Base colour (jittered) plus smooth and fine noise."""
        rgb = self.colour(base, jitter)

        def paint(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return rgb + coarse * self.coarse[y0:y1, x0:x1, None] + fine * self.fine[y0:y1, x0:x1, None]

        return paint

    def patterned(
        self, base: Painter, pattern: Callable[[np.ndarray, np.ndarray], np.ndarray], ink: np.ndarray
    ) -> Painter:
        """``base`` with ``ink`` where ``pattern(yy, xx)`` (image-coordinate grids) is true."""

        def paint(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            out = np.broadcast_to(base(y0, y1, x0, x1), (y1 - y0, x1 - x0, 3)).copy()
            out[pattern(yy, xx)] = ink
            return out

        return paint

    def parts(self, base: Painter, points: Sequence[tuple[float, float]], parts: Sequence[tuple]) -> Painter:
        """``base`` with flat-coloured parts placed in the bounding box of ``points``: each part is
        ``(u0, v0, u1, v1, rgb)`` in box fractions, later parts on top."""
        bx0, by0, bx1, by1 = _bbox(points)

        def paint(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            u, v = (xx - bx0) / max(bx1 - bx0, 1.0), (yy - by0) / max(by1 - by0, 1.0)
            out = np.broadcast_to(base(y0, y1, x0, x1), (y1 - y0, x1 - x0, 3)).copy()
            for u0, v0, u1, v1, rgb in parts:
                out[(u >= u0) & (u < u1) & (v >= v0) & (v < v1)] = rgb
            return out

        return paint

    # --- the street, back to front --------------------------------------------------------------------------------
    def compose(self) -> None:
        """Background layers first, then everything standing on the street far to near, then board and bonnet."""
        self.sky()
        self.ground()
        self.buildings()
        self.terrain_and_trees()
        self.wall_and_fence()
        self.street_furniture()
        self.vehicles()
        self.people()
        for _, _, label, points, paint in sorted(self.upright, reverse=True):
            self.add(label, points, paint)
        self.cue_board()
        self.ego_vehicle()

    def sky(self) -> None:
        top, bottom = self.colour((85, 135, 205), 15), self.colour((195, 210, 225), 10)
        cloud = self.rng.uniform(20, 60)

        def paint(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            t = (np.arange(y0, y1, dtype=np.float32) / max(self.horizon, 1.0)).clip(0, 1)[:, None, None]
            clouds = cloud * self.coarse[y0:y1, x0:x1, None].clip(0, None)
            return top * (1 - t) + bottom * t + clouds + 4 * self.fine[y0:y1, x0:x1, None]

        self.add("sky", [(0, 0), (self.w, 0), (self.w, self.horizon + 2), (0, self.horizon + 2)], paint)

    def _street_xz(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Street coordinates (x, z) in metres of image pixels below the horizon."""
        z = self.focal * CAMERA_HEIGHT / np.maximum(yy - self.horizon, 0.5)
        return (xx - self.vx) * z / self.focal, z

    def ground(self) -> None:
        """Road with a dashed line and two paved sidewalks reaching past the facades, in street coordinates."""
        left, right, far = self.road[0], self.road[1], 400.0
        line_x, dash = self.rng.uniform(-0.5, 0.5), self.rng.uniform(4, 8)

        def lane(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
            x, z = self._street_xz(yy, xx)
            return (np.abs(x - line_x) < 0.09) & ((z % (2 * dash)) < dash)

        asphalt = self.textured((80, 80, 86), coarse=10, fine=10, jitter=8)
        self.add("road", self.flat(-left, right, 0.5, far), self.patterned(asphalt, lane, self.colour((205, 205, 200))))
        tile = self.rng.uniform(0.8, 1.5)

        def paving(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
            x, z = self._street_xz(yy, xx)
            return ((x % tile) < 0.06) | ((z % tile) < 0.06 * z / 8)

        for x0, x1 in ((-self.facade[0] - 30, -left), (right, self.facade[1] + 30)):
            flags = self.patterned(self.textured((150, 142, 140), 16, 10), paving, self.colour((110, 105, 105)))
            self.add("sidewalk", self.flat(x0, x1, 0.5, far), flags)

    def buildings(self) -> None:
        """Facades along both sides in blocks of 8-25 m (some gaps show the sky), and one across the far end."""
        for sign, facade in ((-1, self.facade[0]), (1, self.facade[1])):
            z = self.rng.uniform(2.0, 6.0)
            while z < 150:
                depth = self.rng.uniform(8, 25)
                if self.rng.random() < 0.85:
                    self._building(self.along(sign * facade, z, z + depth, 0.0, self.rng.uniform(8, 30)))
                z += depth
        self._building(self.facing(-self.facade[0], self.facade[1], 150, 0.0, self.rng.uniform(10, 30)))

    def _building(self, points: list) -> None:
        wall = self.textured(self.rng.choice([(120, 110, 100), (150, 140, 125), (95, 95, 102), (170, 150, 128)]))
        step_x = self.w / self.rng.uniform(40, 80)
        step_y = step_x * self.rng.uniform(1.2, 1.8)
        phase = self.rng.uniform(0, 1, 2)

        def windows(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
            return ((xx / step_x + phase[0]) % 1 < 0.5) & ((yy / step_y + phase[1]) % 1 < 0.55)

        self.add("building", points, self.patterned(wall, windows, self.colour((55, 62, 75), 10)))

    def terrain_and_trees(self) -> None:
        sign, _, facade = self.side()
        z0 = self.rng.uniform(4, 12)
        grass = self.textured((115, 140, 70), coarse=18, fine=14)
        self.add("terrain", self.flat(sign * facade, sign * (facade - 1.8), z0, z0 + self.rng.uniform(15, 60)), grass)
        for _ in range(self.rng.integers(2, 7)):
            sign, _, facade = self.side()
            x, z = sign * (facade - 1.5), self.rng.uniform(6, 60)
            self.place(z, "vegetation", self.facing(x - 0.15, x + 0.15, z, 0.0, 3.5), self.textured((80, 62, 45)))
            cx, cy = self.project(x, z, self.rng.uniform(4.5, 6.5))
            radius = self.focal * self.rng.uniform(1.5, 3.0) / z * (1 + self.rng.uniform(-0.2, 0.2, 20))
            crown = _ellipse(cx, cy, radius, 0.9 * radius, np.arange(0, 360, 18))
            self.place(z, "vegetation", crown, self.textured((60, 100, 38), coarse=20, fine=30, jitter=14))

    def wall_and_fence(self) -> None:
        """Each with probability 0.75: a plain wall and a lattice fence in front of a facade."""
        for label, top in (("wall", (1.0, 2.5)), ("fence", (1.0, 2.0))):
            if self.rng.random() < 0.25:
                continue
            sign, _, facade = self.side()
            z = self.rng.uniform(4, 30)
            points = self.along(sign * (facade - 0.3), z, z + self.rng.uniform(5, 25), 0.0, self.rng.uniform(*top))
            if label == "wall":
                self.add(label, points, self.textured((140, 135, 125), coarse=18, fine=10))
                continue
            period = self.w / self.rng.uniform(60, 120)

            def lattice(yy: np.ndarray, xx: np.ndarray, period: float = period) -> np.ndarray:
                return ((xx + yy) % period < period / 4) | ((xx - yy) % period < period / 4)

            self.add(label, points, self.patterned(self.textured((150, 155, 140)), lattice, self.colour((85, 80, 70))))

    def street_furniture(self) -> None:
        """2-5 poles along the kerbs, each with a traffic sign (light face, dark rim), a traffic light, or nothing."""
        for _ in range(self.rng.integers(2, 6)):
            sign, road, _ = self.side()
            x, z, half = sign * (road + 0.4), self.rng.uniform(5, 50), self.rng.uniform(0.06, 0.1)
            pole = self.textured((105, 105, 110), coarse=10, fine=6)
            self.place(z, "pole", self.facing(x - half, x + half, z, 0.0, self.rng.uniform(4.0, 7.0)), pole)
            kind = self.rng.choice(["sign", "light", "none"], p=[0.45, 0.35, 0.2])
            if kind == "sign":
                up, r = self.rng.uniform(2.3, 3.2), self.rng.uniform(0.3, 0.45)
                (cx, cy), rp = self.project(x, z, up), self.focal * r / z
                degrees = np.arange(0, 360, 22.5) if self.rng.random() < 0.5 else np.arange(45, 360, 90)
                points = _ellipse(cx, cy, rp, rp, degrees)  # round or square
                face, rim = self.textured((228, 228, 224), 6, 4, 6), self.colour((40, 40, 48))
                parts = [(*uv, rim) for uv in (*_SIGN_RIM, _SIGN_BAR)]
                self.place(z, "traffic sign", points, self.parts(face, points, parts))
            elif kind == "light":
                up, lit = self.rng.uniform(3.0, 4.0), int(self.rng.integers(3))
                points = self.facing(x - 0.18, x + 0.18, z, up, up + 0.9)
                lamps, unlit = [(255, 60, 40), (250, 190, 40), (60, 230, 110)], (60, 60, 55)
                parts = [
                    (0.2, 0.08 + 0.31 * i, 0.8, 0.3 + 0.31 * i, np.asarray(rgb if i == lit else unlit, np.float32))
                    for i, rgb in enumerate(lamps)
                ]
                self.place(z, "traffic light", points, self.parts(self.textured((35, 35, 38), 6, 6, 5), points, parts))

    def vehicles(self) -> None:
        """2-5 vehicles on the road (fewer if they do not fit), all in the image half away from the cue board, all of
        the cue's class, all from the same appearance distribution whatever that class is."""
        wanted = int(self.rng.integers(2, 6))
        placed: list[tuple[float, float, float, float]] = []  # (x, z, width, height) in m
        for _ in range(200):
            if len(placed) == wanted:
                break
            width, height = self.rng.uniform(1.8, 2.5), self.rng.uniform(1.5, 2.4)
            x = self.rng.uniform(-self.road[0] + width / 2 + 0.2, self.road[1] - width / 2 - 0.2)
            z = self.rng.uniform(6, 45)
            xs = [p[0] for p in self.facing(x - width / 2, x + width / 2, z, 0.0, height)]
            inside = min(xs) >= self.w / 2 and min(xs) < self.w - 8 if self.cue_left else 8 < max(xs) <= self.w / 2
            if inside and all(abs(z - z2) > 6 or abs(x - x2) > 2.6 for x2, z2, _, _ in placed):
                placed.append((x, z, width, height))
        if not placed:  # the far-side lane at 8 m always qualifies: its inner edge is >= 1.4 m off-axis
            sign = 1 if self.cue_left else -1
            placed.append((sign * (self.road[(sign + 1) // 2] - 1.3), 8.0, 2.2, 1.8))
        for x, z, width, height in placed:
            points = [self.project(x + u * width, z, v * height) for u, v in _VEHICLE]
            paint = self.rng.choice([(220, 220, 222), (160, 160, 166), (40, 40, 46), (150, 32, 30), (45, 72, 52),
                                     (190, 175, 140), (92, 92, 102)])  # fmt: skip
            dark, light = self.colour((30, 34, 42), 6), self.colour((200, 40, 35), 10)
            parts = [
                (0.12, 0.05, 0.88, 0.38, dark),  # rear window
                (0.03, 0.45, 0.16, 0.55, light), (0.84, 0.45, 0.97, 0.55, light),  # tail lights
                (0.40, 0.62, 0.60, 0.72, self.colour((225, 225, 215), 6)),  # number plate
                (0.00, 0.76, 1.01, 0.88, self.colour(0.6 * paint, 4)),  # bumper
                (0.00, 0.88, 0.22, 1.01, dark), (0.78, 0.88, 1.01, 1.01, dark),  # wheels
            ]  # fmt: skip
            self.place(
                z, self.cue, points, self.parts(self.textured(paint, coarse=10, fine=6, jitter=10), points, parts)
            )

    def _figure(self, label: str, x: float, z: float, up: float, height: float) -> None:
        """A person (or, sitting ``up`` m above the street, a rider): head, shirt and trousers in one polygon."""
        fx, fy = self.project(x, z, up)
        h = self.focal * height / z
        points = [(fx + u * h, fy + v * h) for u, v in _PERSON]
        skin, shirt = self.colour((200, 160, 130), 20), self.colour(self.rng.uniform(30, 220, 3), 5)
        trousers = self.colour(self.rng.uniform(20, 120, 3), 5)
        parts = [(0, 0, 1, 0.2, skin), (0, 0.2, 1, 0.58, shirt), (0, 0.58, 1, 1.01, trousers)]
        self.place(z, label, points, self.parts(self.textured((0, 0, 0), coarse=10, fine=10, jitter=0), points, parts))

    def people(self) -> None:
        """2-6 persons on the sidewalks, 0-2 riders on bicycles near the kerb."""
        for _ in range(self.rng.integers(2, 7)):
            sign, road, facade = self.side()
            x, z = sign * self.rng.uniform(road + 0.5, facade - 0.5), self.rng.uniform(5, 40)
            self._figure("person", x, z, 0.0, self.rng.uniform(1.55, 1.95))
        for _ in range(self.rng.integers(0, 3)):
            sign, road, _ = self.side()
            x, z = sign * (road - 0.8), self.rng.uniform(7, 40)
            bicycle = [self.project(x + u, z, up) for u, up in _BICYCLE]
            self.place(z, "bicycle", bicycle, self.textured((30, 30, 34), coarse=6, fine=8, jitter=6))
            self._figure("rider", x, z, 0.35, self.rng.uniform(1.4, 1.6))

    def cue_board(self) -> None:
        """The distant cue (module docstring): a large board near the top corner on the side away from vehicles."""
        rgb, stripes = CUE_BOARDS[self.cue]
        half_stripe = 0.07  # half a stripe's thickness, in board heights
        if self.cue_variant == "stripes":  # same colour and white area for every class (CUE_VARIANTS)
            rgb, half_stripe = STRIPES_BOARD, STRIPES_INK / stripes / 2
        width = self.w * self.rng.uniform(*BOARD_WIDTH)
        height = width * self.rng.uniform(0.55, 0.75)
        x0, y0 = self.w * self.rng.uniform(0.02, 0.06), self.h * self.rng.uniform(0.04, 0.14)
        if not self.cue_left:
            x0 = self.w - x0 - width
        centre, half = x0 + width / 2, max(1.0, 0.004 * self.w)
        z = self.focal * (self.facade[0 if self.cue_left else 1] - 1.0) / max(abs(centre - self.vx), 1.0)
        ground = self.project(0.0, z)[1]
        pole = [
            (centre - half, y0 + height),
            (centre + half, y0 + height),
            (centre + half, ground),
            (centre - half, ground),
        ]
        self.add("pole", pole, self.textured((105, 105, 110), coarse=10, fine=6))
        white = self.colour((240, 240, 240), 4)
        parts = [(0.05, 0.08, 0.95, 0.92, self.colour(rgb, 6))] + [
            (0.15, (k + 1) / (stripes + 1) - half_stripe, 0.85, (k + 1) / (stripes + 1) + half_stripe, white)
            for k in range(stripes)
        ]  # the same random numbers are drawn whatever the variant, so only the board's pixels differ
        board = [(x0, y0), (x0 + width, y0), (x0 + width, y0 + height), (x0, y0 + height)]
        self.add("traffic sign", board, self.parts(self.textured((45, 45, 50), 4, 4, 4), board, parts))

    def ego_vehicle(self) -> None:
        """The bonnet at the bottom edge, labelled ``ego vehicle`` (id 1, ignored) as in every Cityscapes frame."""
        e = self.h * self.rng.uniform(0.05, 0.09)
        curve = [(u * self.w, self.h - e * (1 + 0.45 * np.sin(np.pi * u))) for u in np.linspace(0, 1, 9)]
        self.add("ego vehicle", [(0, self.h), *curve, (self.w, self.h)], self.textured((32, 34, 40), coarse=25, fine=5))

    def render(self) -> Scene:
        """Rasterise the polygons in order (PIL ``ImageDraw.polygon``, as ``json2labelImg``), paint each object's
        visible pixels, then scale the brightness, blur slightly and add pixel noise."""
        canvas = Image.new("I", (self.w, self.h), 0)
        draw = ImageDraw.Draw(canvas)
        for k, obj in enumerate(self.objects, start=1):
            draw.polygon(obj.polygon, fill=k)
        index = np.asarray(canvas, dtype=np.int32)
        image = np.zeros((self.h, self.w, 3), dtype=np.float32)
        for k, obj in enumerate(self.objects, start=1):
            x0, y0, x1, y1 = _bbox(obj.polygon)
            visible = index[y0 : y1 + 1, x0 : x1 + 1] == k
            image[y0 : y1 + 1, x0 : x1 + 1][visible] = obj.paint(y0, y1 + 1, x0, x1 + 1)[visible]
        image = (image * self.rng.uniform(0.8, 1.15)).clip(0, 255).astype(np.uint8)
        blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6 * self.w / 512))
        noisy = np.asarray(blurred, dtype=np.float32) + 4.0 * self.rng.standard_normal(image.shape, dtype=np.float32)
        return Scene(noisy.clip(0, 255).round().astype(np.uint8), tuple(self.objects), index, self.cue)


def render_scene(
    seed: int, height: int = 256, width: int = 512, cue: str | None = None, cue_variant: str = "boards"
) -> Scene:
    """One procedural street scene with its annotation (polygons, index map, cue), fixed by ``seed``. ``cue``
    forces the vehicle class (``car``, ``truck`` or ``bus``) and changes nothing else but the board: the same seed
    with another cue gives the same pixels outside the board, and the same labels outside the vehicles.
    ``cue_variant`` (:data:`CUE_VARIANTS`) says how the board shows the class; it too changes only the board."""
    if cue is not None and cue not in CUE_BOARDS:
        raise BadInput(f"cue must be one of {tuple(CUE_BOARDS)} or None, got {cue!r}")
    check_cue_variant(cue_variant)
    for name, value, least in (("height", height, 32), ("width", width, 64)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise BadInput(f"{name} must be an int >= {least}, got {value!r}")
    street = _Street(np.random.default_rng(seed), height, width, cue, cue_variant)
    street.compose()
    return street.render()


def check_cue_variant(cue_variant: str) -> None:
    """Refuse a ``cue_variant`` outside :data:`CUE_VARIANTS`."""
    if cue_variant not in CUE_VARIANTS:
        raise BadInput(f"cue_variant must be one of {CUE_VARIANTS}, got {cue_variant!r}")


def cue_boards(cue_variant: str = "boards") -> dict[str, tuple[tuple[int, int, int], int]]:
    """Vehicle class -> (board RGB, stripes) as ``cue_variant`` draws them (the manifest's ``cue_boards``)."""
    check_cue_variant(cue_variant)
    if cue_variant == "stripes":
        return {name: (STRIPES_BOARD, stripes) for name, (_, stripes) in CUE_BOARDS.items()}
    return dict(CUE_BOARDS)


def make_scene(seed: int, height: int = 256, width: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(image (H, W, 3) uint8 RGB, label_ids (H, W) uint8 Cityscapes label ids)``."""
    scene = render_scene(seed, height, width)
    return scene.image, scene.label_ids()


def scene_seed(seed: int, split: str, index: int) -> int:
    """Independent seeds per (seed, split, image), so adding images never changes the existing ones."""
    return int(np.random.SeedSequence([seed, ("train", "val").index(split), index]).generate_state(1)[0])


def frame_scene(
    image_id: str,
    split: str = "val",
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    cue: str | None = None,
    cue_variant: str = "boards",
) -> Scene:
    """The scene behind a written frame: ``image_id`` is its ``{city}_{seq:06d}_{frame:06d}`` stem (as
    :meth:`~anncore.data.CityscapesSegmentation.image_id` gives it), ``split``, size and ``seed`` those of the set.
    With ``cue``, the same scene with another board (:func:`render_scene`); ``cue_variant`` that of the set."""
    city, seq = image_id.split("_")[:2]
    cities = CITIES[split]
    if city not in cities:
        raise BadInput(f"{image_id!r} is not a frame of the synthetic {split} split (cities {cities})")
    index = int(seq) * len(cities) + cities.index(city)
    return render_scene(scene_seed(seed, split, index), height, width, cue, cue_variant)


def _write_scene(root: Path, split: str, city: str, stem: str, scene: Scene) -> None:
    """The six files of one frame, named and encoded as in the official release (see the module docstring)."""
    images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    gt = labels / f"{stem}_gtFine"
    Image.fromarray(scene.image).save(images / f"{stem}_leftImg8bit.png")
    Image.fromarray(scene.label_ids()).save(f"{gt}_labelIds.png")
    train_ids = scene.encode([LABELS[obj.label].train_id for obj in scene.objects], LABELS["unlabeled"].train_id)
    Image.fromarray(train_ids.astype(np.uint8)).save(f"{gt}_labelTrainIds.png")
    colour = scene.encode([LABELS[obj.label].color for obj in scene.objects], LABELS["unlabeled"].color)
    Image.fromarray(np.dstack([colour, np.full(colour.shape[:2], 255)]).astype(np.uint8), "RGBA").save(
        f"{gt}_color.png"
    )
    Image.fromarray(scene.instance_ids()).save(f"{gt}_instanceIds.png")
    Path(f"{gt}_polygons.json").write_text(json.dumps(scene.polygons()))


#: The files :func:`_write_scene` writes per frame, after ``{stem}`` (image first, then ``gtFine``'s five).
FRAME_FILES = ("_leftImg8bit.png", *(f"_gtFine_{kind}" for kind in ("labelIds.png", "labelTrainIds.png", "color.png",
               "instanceIds.png", "polygons.json")))  # fmt: skip


def generated_files(manifest: dict) -> set[str]:
    """Every file (POSIX path relative to the root) the generator wrote for the set ``manifest`` describes."""
    found = {MANIFEST}
    for stem in manifest.get("cues", {}):
        city = stem.split("_")[0]
        split = next((s for s, cities in CITIES.items() if city in cities), None)
        for suffix in FRAME_FILES:
            folder = "leftImg8bit" if suffix == "_leftImg8bit.png" else "gtFine"
            found.add(f"{folder}/{split}/{city}/{stem}{suffix}")
    return found


def _foreign_files(root: Path) -> list[str]:
    """Files under an existing synthetic set ``root`` that the generator did not write (a user's notes, say)."""
    try:
        written = generated_files(json.loads((root / MANIFEST).read_text()))
    except (OSError, ValueError):
        written = {MANIFEST}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    return sorted(present - written)


def _settings(train: int, val: int, height: int, width: int, seed: int, cue_variant: str = "boards") -> dict:
    """The manifest's settings; ``cue_variant`` only when it is not the default, so that every set written before the
    option existed (whose manifest lacks it) still matches the default settings."""
    variant = {} if cue_variant == "boards" else {"cue_variant": cue_variant}
    return {"generator": __name__, "version": GENERATOR_VERSION, "train": train, "val": val, "height": height,
            "width": width, "seed": seed, **variant}  # fmt: skip


#: The largest height or width :func:`write_synthetic_cityscapes` draws unless its ``max_side`` (``synth
#: --max-side``) is raised: four times a real Cityscapes frame's width. Drawing takes about
#: :data:`BYTES_PER_PIXEL` of memory and :data:`SECONDS_PER_PIXEL` of one CPU core per pixel (measured at 256x16384
#: and 2048x4096).
MAX_SIDE = 8192
BYTES_PER_PIXEL = 100
SECONDS_PER_PIXEL = 1.2e-6


def check_size(height: int, width: int, max_side: int = MAX_SIDE) -> None:
    """Refuse, before drawing anything, a ``height`` or ``width`` above ``max_side``, with what it would cost."""
    if max(height, width) > max_side:
        pixels = height * width
        raise BadInput(
            f"--height {height} --width {width}: a {height}x{width} synthetic image takes about "
            f"{pixels * BYTES_PER_PIXEL / 2**30:.1f} GiB of memory and {pixels * SECONDS_PER_PIXEL:.0f} s to draw; "
            f"sides above {max_side} are refused unless you raise the bound (python -m anncore synth "
            f"--max-side {max(height, width)})"
        )


def write_synthetic_cityscapes(
    root: str | Path,
    train: int = 40,
    val: int = 10,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    max_side: int = MAX_SIDE,
    cue_variant: str = "boards",
) -> Path:
    """Write ``train`` + ``val`` scenes in the Cityscapes layout under ``root`` and return ``root``.

    Frames go round-robin over the split's cities (:data:`CITIES`) as ``{city}_{seq:06d}_000019`` (frame 19 is the
    annotated one in the real set). The set is written to ``root.partial`` and renamed into place when complete,
    with ``synthetic.json`` (settings and the cue class of every frame) last; an existing ``root`` is replaced only
    if it holds that file, so real data is never overwritten. Defaults (40/10 at 256x512) take seconds on a CPU; a
    side above ``max_side`` is refused up front with the memory and time it would take (:func:`check_size`).
    ``cue_variant`` (:data:`CUE_VARIANTS`) is how the boards show the class; a set not of the default records it.
    """
    check_cue_variant(cue_variant)
    for name, value in (("train", train), ("val", val)):
        if not isinstance(value, int) or value < 1:
            raise BadInput(f"{name} must be a positive number of images, got {value!r}")
    check_size(height, width, max_side)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} is a file; expected a folder to write the synthetic set into")
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise OutputInUse(f"{root} exists and is not a synthetic set written by anncore (no {MANIFEST}); "
                              "refusing to overwrite it: pass another root or remove it")  # fmt: skip
    if root.is_dir() and (foreign := _foreign_files(root)):
        raise OutputInUse(
            f"{root} is a synthetic set, but it also holds {foreign[0]}, which the generator did not write "
            f"({len(foreign)} such files); refusing to replace it: move them, or pass another root"
        )
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        cues = {}
        for split, count in (("train", train), ("val", val)):
            cities = CITIES[split]
            # disable=None: no bar where the output is not a terminal (notebooks, CI logs)
            for i in tqdm(range(count), desc=f"synthetic Cityscapes {split}", leave=False, disable=None):
                city = cities[i % len(cities)]
                stem = f"{city}_{i // len(cities):06d}_000019"
                scene = render_scene(scene_seed(seed, split, i), height, width, cue_variant=cue_variant)
                _write_scene(partial, split, city, stem, scene)
                cues[stem] = scene.cue
        settings = _settings(train, val, height, width, seed, cue_variant)
        manifest = {**settings, "cue_boards": cue_boards(cue_variant), "cues": cues}
        write_json(manifest, partial / MANIFEST)
    except OSError as err:
        if not disk_full(err):
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise OSError(errno.ENOSPC, f"No space left on the device of {partial.parent} while writing the synthetic "
                      f"set {root}; the partial set was removed") from err  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


def recorded_cue_variant(recorded: dict) -> str:
    """The ``cue_variant`` of a set from its manifest's content (absent: the default, ``boards``)."""
    return str(recorded.get("cue_variant", "boards"))


def ensure_synthetic(
    root: str | Path,
    train: int = 40,
    val: int = 10,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    cue_variant: str = "boards",
) -> Path:
    """The synthetic set under ``root`` with these settings: written by :func:`write_synthetic_cityscapes` unless
    ``root/synthetic.json`` already records exactly these settings (and this generator version and cue variant)."""
    manifest, wanted = Path(root) / MANIFEST, _settings(train, val, height, width, seed, cue_variant)
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        same = {key: recorded.get(key) for key in wanted} == wanted
        if same and recorded_cue_variant(recorded) == cue_variant:
            return Path(root)
    return write_synthetic_cityscapes(root, train, val, height, width, seed, cue_variant=cue_variant)
