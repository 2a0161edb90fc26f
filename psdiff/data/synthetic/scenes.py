"""Procedural scenes for the synthetic benchmark: textured backgrounds, clutter and persons.

An identity's look (clothing colors and pattern, skin, hair, proportions, accessories) is fixed
in an `Appearance`; every time it is drawn, its scale, position, pose (stride, arm swing, facing)
and lighting change. Colors come from small palettes, so two identities often share a shirt or
trousers color and only the combination (with pattern and accessories) tells them apart: a
re-identification model has to learn it. Backgrounds are textured and hold person-sized clutter
(poles, sign posts, bins, cars, blobs in clothing colors) and occluders, so detection has to
learn the person shape, not just "something colored".
"""

from dataclasses import dataclass

import cv2
import numpy as np

# BGR palettes: clothes are drawn from a few named colors so that identities collide on single
# attributes; skin and hair have their own ranges.
CLOTHES = (
    (40, 40, 200), (200, 60, 40), (40, 160, 40), (30, 200, 230), (230, 230, 230), (35, 35, 35),
    (130, 130, 130), (160, 60, 160), (40, 120, 220), (140, 100, 40), (200, 200, 80), (90, 50, 110),
)
SKIN = ((90, 120, 170), (110, 150, 210), (70, 100, 140), (140, 180, 230), (50, 70, 100))
HAIR = ((20, 20, 20), (30, 50, 90), (60, 90, 140), (150, 170, 190), (40, 40, 70))
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "split", "band")


@dataclass(frozen=True)
class Appearance:
    """What stays fixed for one identity across all of its appearances."""

    shirt: tuple
    shirt_alt: tuple  # second color of the shirt pattern
    pattern: str  # one of PATTERNS
    period: float  # stripe / check period as a fraction of the torso height
    pants: tuple
    shoes: tuple
    skin: tuple
    hair: tuple
    width_ratio: float  # box width / box height when standing still
    leg_ratio: float  # legs as a fraction of the body height
    head_ratio: float  # head as a fraction of the body height
    hat: tuple  # hat color, or () for none
    bag: tuple  # bag color, or () for none


def _pick(rng: np.random.Generator, palette: tuple) -> tuple:
    """One color of a palette, slightly jittered so equal names are not equal pixels."""
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 8, 3), 0, 255))


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Draw the fixed look of a new identity."""
    shirt = _pick(rng, CLOTHES)
    alt = _pick(rng, CLOTHES)
    return Appearance(
        shirt=shirt,
        shirt_alt=alt,
        pattern=PATTERNS[rng.integers(len(PATTERNS))],
        period=float(rng.uniform(0.12, 0.3)),
        pants=_pick(rng, CLOTHES),
        shoes=_pick(rng, CLOTHES[4:7]),
        skin=_pick(rng, SKIN),
        hair=_pick(rng, HAIR),
        width_ratio=float(rng.uniform(0.3, 0.42)),
        leg_ratio=float(rng.uniform(0.4, 0.52)),
        head_ratio=float(rng.uniform(0.12, 0.17)),
        hat=_pick(rng, CLOTHES) if rng.random() < 0.25 else (),
        bag=_pick(rng, CLOTHES) if rng.random() < 0.3 else (),
    )


def person_width(appearance: Appearance, height: int, stride: float) -> int:
    """Box width of a person of `height` px walking with `stride` in [0, 1]."""
    return max(3, int(round(height * appearance.width_ratio * (1.0 + 0.35 * stride))))


def _pattern(appearance: Appearance, height: int, width: int, top: float, torso_h: float):
    """The shirt texture over the whole patch (it is used inside the torso mask only)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    period = max(2.0, appearance.period * torso_h)
    name = appearance.pattern
    if name == "hstripes":
        alt = ((ys - top) // (period / 2)) % 2 == 1
    elif name == "vstripes":
        alt = (xs // (period / 2)) % 2 == 1
    elif name == "checks":
        alt = ((ys - top) // period + xs // period) % 2 == 1
    elif name == "split":
        alt = xs >= width / 2
    elif name == "band":
        alt = np.abs(ys - (top + 0.45 * torso_h)) < 0.12 * torso_h
    else:
        alt = np.zeros((height, width), dtype=bool)
    texture = np.empty((height, width, 3), dtype=np.uint8)
    texture[:] = appearance.shirt
    texture[alt] = appearance.shirt_alt
    return texture


def render_person(appearance: Appearance, height: int, width: int, stride: float, rng):
    """Draw one person filling a `height` x `width` box; returns (BGR patch, bool mask).

    The head touches the top of the box, the feet its bottom, and hands or feet reach its sides,
    so the box is tight. `stride` in [0, 1] spreads the feet (the width already allows for it);
    arm swing, facing and lighting are drawn from `rng`.
    """
    h, w = height, width
    patch = np.zeros((h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    cx = w / 2 + rng.uniform(-0.04, 0.04) * w
    head_h = appearance.head_ratio * h
    hip_y = h * (1 - appearance.leg_ratio)
    shoulder_y = head_h * 1.05
    shoulder = 0.3 * w
    hip = 0.22 * w
    facing = 1 if rng.random() < 0.5 else -1
    thick_leg = max(2, int(round(0.16 * w)))
    thick_arm = max(2, int(round(0.1 * w)))

    def shape(draw, color, *args, thickness=-1):  # the same shape on the patch and the mask
        draw(patch, *args, color=color, thickness=thickness)
        draw(mask, *args, color=255, thickness=thickness)

    def pt(x, y):
        return int(round(x)), int(round(y))

    # Legs: stride spreads the feet towards the box sides.
    spread = (0.1 + 0.32 * stride) * w
    foot_y = h - max(2, 0.03 * h)
    for side in (-1, 1):
        hip_pt, foot = pt(cx + side * hip / 2, hip_y), pt(cx + side * spread, foot_y)
        shape(cv2.line, appearance.pants, hip_pt, foot, thickness=thick_leg)
        shoe = pt(cx + side * spread + facing * 0.04 * w, h - 1 - 0.02 * h)
        axes = (max(1, int(0.09 * w)), max(1, int(0.025 * h)))
        shape(cv2.ellipse, appearance.shoes, shoe, axes, 0, 0, 360)
    # Torso (trapezoid) with the identity's shirt pattern.
    torso = np.array(
        [pt(cx - shoulder, shoulder_y), pt(cx + shoulder, shoulder_y),
         pt(cx + hip, hip_y + 0.03 * h), pt(cx - hip, hip_y + 0.03 * h)], dtype=np.int32
    )
    torso_mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillConvexPoly(torso_mask, torso, 255)
    texture = _pattern(appearance, h, w, shoulder_y, hip_y - shoulder_y)
    patch[torso_mask > 0] = texture[torso_mask > 0]
    mask |= torso_mask
    # Arms swing; the hands stay inside the box.
    for side in (-1, 1):
        swing = rng.uniform(-0.15, 0.15) * h
        start = pt(cx + side * shoulder * 0.9, shoulder_y + 0.03 * h)
        hand = pt(np.clip(cx + side * rng.uniform(0.32, 0.48) * w, 2, w - 3), hip_y + swing)
        shape(cv2.line, appearance.shirt, start, hand, thickness=thick_arm)
        radius = max(1, thick_arm // 2 + 1)
        shape(cv2.circle, appearance.skin, hand, radius)
    if appearance.bag:
        bag_x = cx + facing * hip * 1.1
        corner_a = pt(bag_x - 0.12 * w, hip_y - 0.1 * h)
        corner_b = pt(bag_x + 0.12 * w, hip_y + 0.05 * h)
        shape(cv2.rectangle, appearance.bag, corner_a, corner_b)
    # Head, hair or hat.
    head = pt(cx, head_h / 2)
    axes = (max(1, int(head_h * 0.38)), max(1, int(head_h / 2)))
    shape(cv2.ellipse, appearance.skin, head, axes, 0, 0, 360)
    shape(cv2.ellipse, appearance.hair, head, axes, 0, 180, 360)
    if appearance.hat:
        top_a, top_b = pt(cx - axes[0] * 1.2, 0), pt(cx + axes[0] * 1.2, head_h * 0.25)
        shape(cv2.rectangle, appearance.hat, top_a, top_b)
    # Lighting: overall gain and a top-to-bottom shading ramp.
    gain = rng.uniform(0.65, 1.3) * np.linspace(1.08, 0.9, h)[:, None, None]
    patch = np.clip(patch * gain, 0, 255).astype(np.uint8)
    return patch, mask > 0


def paste(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Copy the masked pixels of `patch` into `image` at (x, y), clipping at the image borders."""
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    sub = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    image[y0:y1, x0:x1][sub] = patch[y0 - y : y1 - y, x0 - x : x1 - x][sub]


def _noise_texture(rng: np.random.Generator, height: int, width: int, cell: int, amp: float):
    """Smooth random texture: low-resolution noise upscaled (blotches of about `cell` px)."""
    small = rng.normal(0, amp, (max(2, height // cell), max(2, width // cell), 1))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A street-like scene: sky gradient, buildings with windows, textured ground, trees."""
    h, w = height, width
    horizon = int(h * rng.uniform(0.3, 0.55))
    image = np.zeros((h, w, 3), dtype=np.float64)
    sky_top, sky_bottom = rng.uniform(120, 255, 3), rng.uniform(120, 255, 3)
    ramp = np.linspace(0, 1, max(1, horizon))[:, None, None]
    image[:horizon] = sky_top * (1 - ramp) + sky_bottom * ramp
    ground = rng.uniform(50, 180, 3)
    image[horizon:] = ground
    image += _noise_texture(rng, h, w, int(rng.integers(3, 12)), rng.uniform(5, 20))
    image = np.clip(image, 0, 255).astype(np.uint8)
    x = int(rng.integers(-20, 0))
    while x < w:  # a row of buildings on the horizon
        bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(horizon // 3, horizon + 1))
        color = tuple(int(v) for v in rng.uniform(40, 220, 3))
        cv2.rectangle(image, (x, horizon - bh), (x + bw, horizon), color, -1)
        step = max(4, bw // 5)
        window = tuple(int(v) for v in rng.uniform(20, 255, 3))
        for wx in range(x + step // 2, x + bw - step // 2, step):
            for wy in range(horizon - bh + step // 2, horizon - step // 2, step):
                cv2.rectangle(image, (wx, wy), (wx + step // 3, wy + step // 3), window, -1)
        x += bw + int(rng.integers(0, w // 8))
    for _ in range(int(rng.integers(2, 7))):  # paving lines, converging to the horizon
        bottom = int(rng.integers(-w, 2 * w))
        color = tuple(int(v) for v in rng.uniform(60, 230, 3))
        cv2.line(image, (bottom, h), (w // 2 + (bottom - w // 2) // 6, horizon), color, 1)
    for _ in range(int(rng.integers(0, 3))):  # trees
        tx, ty = int(rng.integers(0, w)), horizon - int(rng.integers(0, horizon // 2 + 1))
        axes = (int(rng.integers(6, w // 8 + 7)), int(rng.integers(6, h // 6 + 7)))
        green = (int(rng.integers(20, 80)), int(rng.integers(90, 180)), int(rng.integers(20, 80)))
        cv2.ellipse(image, (tx, ty), axes, 0, 0, 360, green, -1)
    return image


def draw_clutter(image: np.ndarray, rng: np.random.Generator, count: int, height_range) -> None:
    """Person-sized distractors: poles, sign posts (a head-like disc on a stick), bins, cars and
    upright blobs in clothing colors, so that color alone does not make a person."""
    h, w = image.shape[:2]
    for _ in range(count):
        size = int(rng.uniform(*height_range))
        x, bottom = int(rng.integers(0, w)), int(rng.integers(h // 2, h + 1))
        color = _pick(rng, CLOTHES)
        kind = rng.integers(5)
        if kind == 0:  # pole
            cv2.rectangle(image, (x, bottom - size), (x + max(2, size // 25), bottom), color, -1)
        elif kind == 1:  # sign post
            cv2.line(image, (x, bottom), (x, bottom - size), (90, 90, 90), max(1, size // 30))
            cv2.circle(image, (x, bottom - size), max(3, size // 8), color, -1)
        elif kind == 2:  # bin
            cv2.rectangle(image, (x, bottom - size // 3), (x + size // 4, bottom), color, -1)
        elif kind == 3:  # car
            top = bottom - size // 2
            cv2.rectangle(image, (x, top), (x + size, bottom - size // 10), color, -1)
            for wheel in (x + size // 5, x + 4 * size // 5):
                centre = (wheel, bottom - size // 10)
                cv2.circle(image, centre, max(2, size // 10), (20, 20, 20), -1)
        else:  # upright blob in clothing colors
            axes = (max(2, size // 7), max(3, size // 3))
            cv2.ellipse(image, (x, bottom - axes[1]), axes, 0, 0, 360, color, -1)
            cv2.ellipse(image, (x, bottom - axes[1]), (axes[0], axes[1] // 2), 0, 0, 360,
                        _pick(rng, CLOTHES), -1)


def draw_occluder(image: np.ndarray, rng: np.random.Generator, box: tuple) -> None:
    """Cover part of a person (box x, y, w, h) with a low wall, a bench or a pole in front."""
    x, y, w, h = box
    color = _pick(rng, CLOTHES[4:7] + ((60, 90, 120),))
    if rng.random() < 0.5:  # low object over the legs
        top = y + int(h * rng.uniform(0.65, 0.85))
        left = x + int(w * rng.uniform(-0.5, 0.3))
        right = left + int(w * rng.uniform(0.6, 1.5))
        cv2.rectangle(image, (left, top), (right, y + h), color, -1)
    else:  # pole in front of the body
        px = x + int(w * rng.uniform(0.1, 0.8))
        cv2.rectangle(image, (px, y - h // 4), (px + max(2, w // 8), y + h), color, -1)


def finish(image: np.ndarray, rng: np.random.Generator, light: float) -> np.ndarray:
    """Scene-wide lighting, slight blur and sensor noise."""
    blurred = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    noisy = blurred.astype(np.float64) * light + rng.normal(0, rng.uniform(2, 6), image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _iou(a: tuple, b: tuple) -> float:
    """IoU of two (x, y, w, h) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _place(rng, height: int, width: int, appearance: Appearance, placed: list, outside: bool):
    """A box (x, y, w, h) and stride for a new person: taller when lower in the frame (a ground
    plane seen in perspective), overlapping earlier persons by IoU < 0.3 when possible."""
    for _ in range(50):
        bottom = int(rng.uniform(0.55, 1.0) * height)
        size = height * (0.3 + 0.5 * (bottom / height - 0.55) / 0.45) * rng.uniform(0.85, 1.1)
        box_h = max(8, min(int(size), bottom))
        stride = float(rng.random())
        box_w = person_width(appearance, box_h, stride)
        low, high = (-box_w * 0.4, width - box_w * 0.6) if outside else (0, width - box_w)
        box = (int(rng.uniform(low, max(low, high))), bottom - box_h, box_w, box_h)
        if all(_iou(box, other) < 0.3 for other in placed):
            break
    return box, stride


def render_scene(rng, background: np.ndarray, appearances: list, outside: bool = False):
    """Draw persons of `appearances` over a copy of `background` with clutter and occluders.

    Returns (image, boxes): boxes are integer (x, y, w, h) in the order of `appearances`, each
    tight around its drawn person; with `outside`, persons may stand partly beyond the left or
    right border (their box then extends past the image, as in PRW's annotations).
    """
    height, width = background.shape[:2]
    image = background.copy()
    draw_clutter(image, rng, int(rng.integers(1, 5)), (0.2 * height, 0.7 * height))
    boxes, strides = [], []
    for appearance in appearances:
        box, stride = _place(rng, height, width, appearance, boxes, outside)
        boxes.append(box)
        strides.append(stride)
    for i in sorted(range(len(boxes)), key=lambda i: boxes[i][1] + boxes[i][3]):  # far first
        x, y, w, h = boxes[i]
        patch, mask = render_person(appearances[i], h, w, strides[i], rng)
        paste(image, patch, mask, x, y)
        if rng.random() < 0.15:
            draw_occluder(image, rng, boxes[i])
    return finish(image, rng, float(rng.uniform(0.75, 1.2))), boxes
