"""Procedural class sprites and their animation by the sound's envelope.

Every class of the source bank has a drawing: a face with long hair and red lips (female
speech), a short-haired face with a collar (male speech), a round laughing face, clapping
hands, a desk telephone, a pair of shoes, a door with a knocking fist, a tap with running
water, a swinging bell, a rotating alarm beacon, a car, a piano keyboard, a guitar and a
violin with its bow. Drawings are signed-distance shapes on a square canvas with
coordinates x (right) and y (up) in [-1, 1], anti-aliased over one canvas pixel, so a sprite
can be drawn at any resolution. The ``activity`` in [0, 1] opens mouths, brings hands
together, rings, flashes, shakes and plays; ``phase`` (the video frame index modulo
``PHASES``) drives oscillations, so an animation has few distinct drawings to cache.

Sprites come back premultiplied: ``[S, S, 4]`` float32 (r a, g a, b a, a), which composites
(and resamples) without dark fringes.
"""

from __future__ import annotations

import numpy as np

# --- a tiny signed-distance drawing kit -----------------------------------------------------


class Canvas:
    """Premultiplied RGBA canvas; shapes are painted back to front with ``paint``."""

    def __init__(self, size: int):
        self.size = size
        # [-1, 1] spans all but a one-pixel transparent border, which the projection fades.
        self.px = 2.0 / (size - 2)
        centres = (np.arange(size) + 0.5 - size / 2) * self.px
        self.x, self.y = np.meshgrid(centres, -centres)  # y up: row 0 is the top
        self.rgba = np.zeros((size, size, 4))

    def paint(self, sdf, color, opacity=1.0):
        m = np.minimum(np.maximum(0.5 - sdf * (1 / self.px), 0.0), 1.0)
        self._blend(m if opacity == 1 else m * opacity, color)

    def soft(self, sdf, color, opacity, width):
        """A glow: opacity falling off over ``width`` outside the shape."""
        m = np.maximum(1 - np.maximum(sdf, 0) * (1 / width), 0) ** 2
        self._blend(m * opacity, color)

    def _blend(self, m, color):
        # "over" in premultiplied form: rgba += m (color, 1) - m rgba
        self.rgba += (np.append(color, 1.0) - self.rgba) * m[..., None]


def moved(c: Canvas, dx=0.0, dy=0.0, angle=0.0, pivot=(0.0, 0.0)):
    """Canvas coordinates seen by a shape translated by (dx, dy) and turned by ``angle`` (CCW)."""
    x, y = c.x - pivot[0] - dx, c.y - pivot[1] - dy
    ca, sa = np.cos(angle), np.sin(angle)
    return ca * x + sa * y + pivot[0], -sa * x + ca * y + pivot[1]


def circle(p, cx, cy, r):
    return np.hypot(p[0] - cx, p[1] - cy) - r


def ellipse(p, cx, cy, rx, ry):
    return (np.hypot((p[0] - cx) / rx, (p[1] - cy) / ry) - 1) * min(rx, ry)


def box(p, cx, cy, hw, hh, r=0.0):
    qx, qy = np.abs(p[0] - cx) - hw + r, np.abs(p[1] - cy) - hh + r
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r


def segment(p, x0, y0, x1, y1, width):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((p[0] - x0) * dx + (p[1] - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(p[0] - x0 - t * dx, p[1] - y0 - t * dy) - width / 2


def polygon(p, points):
    """Convex polygon, vertices counter-clockwise (max of the edges' signed distances)."""
    d = -np.inf
    pts = np.asarray(points, float)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        nx, ny = y1 - y0, x0 - x1  # outward normal of a CCW edge
        n = np.hypot(nx, ny)
        d = np.maximum(d, ((p[0] - x0) * nx + (p[1] - y0) * ny) / n)
    return d


def ring(p, cx, cy, r, width):
    return np.abs(circle(p, cx, cy, r)) - width / 2


def union(*d):
    return np.minimum.reduce(d)


def intersect(*d):
    return np.maximum.reduce(d)


def subtract(a, b):
    return np.maximum(a, -b)


def _jitter(rng, color, amount=0.06):
    return np.clip(np.asarray(color, float) + rng.uniform(-amount, amount, 3), 0, 1)


def _pick(rng, options):
    return np.asarray(options[rng.integers(len(options))], float)


SKIN = [(0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.70, 0.50, 0.36), (0.48, 0.33, 0.23)]
DARK = np.array([0.08, 0.06, 0.06])
PHASES = 4  # animation steps that repeat
ACTIVITY_LEVELS = 8
WHITE = np.array([0.97, 0.97, 0.95])


def _sound_arcs(c, cx, cy, a, color, side=(1, -1), r0=0.55):
    """Arcs radiating sideways from (cx, cy): a ringing / sounding cue."""
    for s in side:
        for i, r in enumerate((r0, r0 + 0.16)):
            arc = intersect(ring((c.x, c.y), cx, cy, r, 0.06), s * (cx - c.x) + 0.6 * r,
                            np.abs(c.y - cy) - 0.5 * r)
            c.paint(arc, color, opacity=float(np.clip(2 * a - i * 0.5, 0, 1)))


# --- the classes ---------------------------------------------------------------------------


def _speech_eyes(c, p, skin, rng, lashes):
    for s in (-1, 1):
        c.paint(ellipse(p, s * 0.16, 0.14, 0.085, 0.055), WHITE)
        c.paint(circle(p, s * 0.16, 0.135, 0.04), _pick(rng, [(0.25, 0.45, 0.7),
                                                              (0.35, 0.25, 0.12)]))
        c.paint(circle(p, s * 0.16, 0.135, 0.018), DARK)
        if lashes:
            c.paint(segment(p, s * 0.08, 0.19, s * 0.25, 0.19, 0.025), DARK)
    c.paint(segment(p, 0.0, 0.08, 0.0, -0.04, 0.04), skin * 0.85)  # nose


def female_speech(c: Canvas, a, phase, rng):
    hair = _jitter(rng, _pick(rng, [(0.25, 0.13, 0.06), (0.08, 0.06, 0.05), (0.62, 0.25, 0.1),
                                    (0.85, 0.68, 0.35)]))
    skin = _jitter(rng, _pick(rng, SKIN), 0.03)
    dress = _jitter(rng, _pick(rng, [(0.78, 0.15, 0.45), (0.55, 0.2, 0.7), (0.9, 0.35, 0.3)]))
    p = (c.x, c.y)
    c.paint(ellipse(p, 0.0, -0.05, 0.62, 0.82), hair)  # long hair behind the head
    c.paint(box(p, 0.0, -0.76, 0.55, 0.13, 0.1), dress)
    c.paint(box(p, 0.0, -0.55, 0.1, 0.15), skin * 0.9)
    c.paint(ellipse(p, 0.0, 0.06, 0.38, 0.5), skin)
    c.paint(intersect(ellipse(p, 0.0, 0.38, 0.44, 0.28), -(c.y - 0.3)), hair)  # fringe
    _speech_eyes(c, p, skin, rng, lashes=True)
    for s in (-1, 1):
        c.paint(circle(p, s * 0.39, -0.1, 0.045), (0.95, 0.8, 0.2))  # earrings
    c.paint(ellipse(p, 0.0, -0.25, 0.17, 0.05 + 0.13 * a), (0.85, 0.1, 0.2))  # lips
    c.paint(ellipse(p, 0.0, -0.25, 0.12, 0.01 + 0.12 * a), (0.25, 0.02, 0.05))  # mouth


def male_speech(c: Canvas, a, phase, rng):
    hair = _jitter(rng, _pick(rng, [(0.12, 0.09, 0.07), (0.35, 0.22, 0.12), (0.55, 0.55, 0.55)]))
    skin = _jitter(rng, _pick(rng, SKIN), 0.03)
    shirt = _jitter(rng, _pick(rng, [(0.15, 0.3, 0.65), (0.2, 0.5, 0.3), (0.35, 0.35, 0.4)]))
    p = (c.x, c.y)
    c.paint(box(p, 0.0, -0.74, 0.72, 0.15, 0.12), shirt)  # broad shoulders
    c.paint(polygon(p, [(-0.16, -0.6), (0.0, -0.84), (0.16, -0.6)]), WHITE)  # collar
    c.paint(box(p, 0.0, -0.52, 0.13, 0.12), skin * 0.9)
    for s in (-1, 1):
        c.paint(ellipse(p, s * 0.41, 0.05, 0.07, 0.12), skin * 0.95)  # ears
    c.paint(union(ellipse(p, 0.0, 0.12, 0.4, 0.44), box(p, 0.0, -0.12, 0.34, 0.28, 0.16)), skin)
    c.paint(intersect(ellipse(p, 0.0, 0.3, 0.44, 0.36), -(c.y - 0.34)), hair)  # short hair
    if rng.random() < 0.5:  # beard
        c.paint(intersect(box(p, 0.0, -0.2, 0.36, 0.26, 0.18), c.y + 0.1), hair)
    for s in (-1, 1):
        c.paint(segment(p, s * 0.08, 0.24, s * 0.26, 0.25, 0.05), hair)  # eyebrows
    _speech_eyes(c, p, skin, rng, lashes=False)
    c.paint(ellipse(p, 0.0, -0.23, 0.15, 0.015 + 0.14 * a), (0.2, 0.03, 0.04))  # mouth


def laughter(c: Canvas, a, phase, rng):
    skin = _jitter(rng, _pick(rng, SKIN), 0.03)
    bob = 0.05 * a * np.sin(np.pi / 2 * phase)
    p = moved(c, 0.0, bob, angle=0.12 * a * np.cos(np.pi / 2 * phase))
    c.paint(circle(p, 0.0, 0.0, 0.72), skin)
    for s in (-1, 1):
        c.paint(circle(p, s * 0.4, -0.12, 0.12), (0.95, 0.45, 0.45), opacity=0.6)  # cheeks
        # Eyes squeezed shut: arches (rings cut to their upper half).
        c.paint(intersect(ring(p, s * 0.25, 0.18, 0.11, 0.05), -(p[1] - 0.2)), DARK)
        c.paint(ellipse(p, s * 0.38, 0.02, 0.035, 0.06), (0.4, 0.7, 1.0), opacity=a)  # tears
    open_ = 0.1 + 0.28 * a
    mouth = intersect(ellipse(p, 0.0, -0.16, 0.42, open_), p[1] + 0.16)  # D shape
    c.paint(mouth, (0.35, 0.02, 0.05))
    c.paint(intersect(mouth, -(p[1] + 0.16 + 0.07)), WHITE)  # upper teeth
    c.paint(intersect(mouth, ellipse(p, 0.0, -0.16 - open_, 0.25, 0.14)), (0.9, 0.35, 0.4))
    c.paint(ellipse(p, 0.0, 0.78, 0.18, 0.08), DARK * 3)  # a tuft of hair


def clapping(c: Canvas, a, phase, rng):
    skin = _jitter(rng, _pick(rng, SKIN), 0.03)
    sleeve = _jitter(rng, _pick(rng, [(0.8, 0.5, 0.1), (0.3, 0.3, 0.7), (0.6, 0.1, 0.15)]))
    closed = a * (phase % 2 == 0)  # hands meet on alternate frames while it sounds
    gap = 0.04 + 0.3 * (1 - closed)
    for s in (-1, 1):
        q = moved(c, s * (gap / 2 + 0.2), -0.05, angle=-s * 0.18 * (1 - closed))
        q = (s * q[0], q[1])  # mirror the left hand
        c.paint(box(q, 0.02, -0.62, 0.22, 0.14, 0.04), sleeve)
        c.paint(box(q, 0.0, -0.2, 0.2, 0.3, 0.08), skin * 0.97)  # palm
        for i, fy in enumerate((0.45, 0.5, 0.47, 0.38)):
            fx = -0.15 + 0.1 * i
            c.paint(segment(q, fx, 0.0, fx, fy, 0.09), skin)
        c.paint(segment(q, 0.18, -0.15, 0.36, 0.1, 0.1), skin)  # thumb
    for ang in np.linspace(0.4, np.pi - 0.4, 4):  # impact lines
        r0, r1 = 0.6, 0.85
        c.paint(segment((c.x, c.y), r0 * np.cos(ang), r0 * np.sin(ang), r1 * np.cos(ang),
                        r1 * np.sin(ang), 0.06), (1.0, 0.85, 0.1), opacity=float(closed))


def telephone(c: Canvas, a, phase, rng):
    body = _jitter(rng, _pick(rng, [(0.8, 0.1, 0.1), (0.1, 0.1, 0.1), (0.9, 0.85, 0.7)]))
    p = (c.x, c.y)
    c.paint(polygon(p, [(-0.6, -0.7), (0.6, -0.7), (0.42, 0.1), (-0.42, 0.1)]), body)
    c.paint(box(p, 0.0, -0.7, 0.62, 0.06, 0.03), body * 0.7)
    c.paint(circle(p, 0.0, -0.32, 0.26), WHITE)  # dial
    for k in range(8):
        ang = 0.5 + k * 0.68
        c.paint(circle(p, 0.17 * np.cos(ang), -0.32 + 0.17 * np.sin(ang), 0.04), DARK * 4)
    c.paint(circle(p, 0.0, -0.32, 0.06), body)
    lift = 0.1 * a * (phase % 2)  # the handset rattles while it rings
    q = moved(c, 0.0, lift, angle=0.1 * a * ((phase % 2) - 0.5))
    c.paint(segment(q, -0.45, 0.3, 0.45, 0.3, 0.16), body * 0.8)
    for s in (-1, 1):
        c.paint(box(q, s * 0.5, 0.2, 0.15, 0.12, 0.06), body * 0.8)
    _sound_arcs(c, 0.0, 0.28, a, (1.0, 0.9, 0.2), r0=0.66)


def footsteps(c: Canvas, a, phase, rng):
    upper = _jitter(rng, _pick(rng, [(0.35, 0.2, 0.1), (0.1, 0.1, 0.12), (0.75, 0.1, 0.1)]))
    for i, (dx, dy) in enumerate(((-0.3, 0.15), (0.1, -0.35))):
        step = a * ((phase + 2 * i) % 4 == 0)  # one shoe at a time lifts its heel
        q = moved(c, dx, dy + 0.12 * step, angle=0.35 * step, pivot=(dx + 0.45, dy - 0.2))
        c.paint(ellipse((c.x, c.y), dx + 0.1, dy - 0.32, 0.5, 0.06), DARK, opacity=0.35)
        c.paint(box(q, 0.1, -0.2, 0.48, 0.06, 0.04), WHITE)  # sole
        c.paint(union(box(q, -0.12, -0.05, 0.25, 0.16, 0.1), ellipse(q, 0.28, -0.1, 0.3, 0.1)),
                upper)
        c.paint(segment(q, -0.05, 0.06, 0.15, -0.02, 0.04), WHITE)  # laces


def knock(c: Canvas, a, phase, rng):
    wood = _jitter(rng, _pick(rng, [(0.55, 0.33, 0.16), (0.4, 0.24, 0.12), (0.7, 0.5, 0.3)]))
    skin = _jitter(rng, _pick(rng, SKIN), 0.03)
    p = (c.x, c.y)
    c.paint(box(p, -0.2, 0.0, 0.48, 0.88, 0.02), wood * 0.7)  # frame
    c.paint(box(p, -0.2, 0.0, 0.42, 0.84), wood)
    for cy in (0.45, -0.35):
        for cx in (-0.41, 0.01):
            c.paint(box(p, cx, cy, 0.15, 0.3, 0.03), wood * 0.8)  # panels
    c.paint(circle(p, 0.12, -0.02, 0.06), (0.95, 0.8, 0.25))  # knob
    hit = a * (phase % 2)  # the fist touches the door on alternate frames
    fx = 0.45 - 0.12 * hit
    c.paint(box(p, fx + 0.25, 0.2, 0.15, 0.1, 0.05), (0.2, 0.3, 0.6))  # sleeve
    c.paint(box(p, fx, 0.25, 0.14, 0.16, 0.07), skin)  # fist
    for k in range(3):
        c.paint(segment(p, fx - 0.12, 0.34 - 0.09 * k, fx - 0.02, 0.34 - 0.09 * k, 0.03),
                skin * 0.75)
    for dy in (-0.15, 0.0, 0.15):  # impact marks
        c.paint(segment(p, 0.3, 0.25 + dy, 0.2, 0.25 + 2.2 * dy, 0.04), DARK,
                opacity=float(hit))


def water_tap(c: Canvas, a, phase, rng):
    metal = _jitter(rng, (0.75, 0.77, 0.8), 0.04)
    p = (c.x, c.y)
    c.paint(box(p, -0.7, 0.5, 0.08, 0.22, 0.03), metal * 0.8)  # wall mount
    c.paint(segment(p, -0.7, 0.5, 0.2, 0.5, 0.16), metal)  # spout
    c.paint(segment(p, 0.2, 0.5, 0.2, 0.3, 0.16), metal)
    c.paint(segment(p, -0.5, 0.54, 0.25, 0.54, 0.03), WHITE, opacity=0.7)  # highlight
    c.paint(segment(p, -0.25, 0.55, -0.25, 0.8, 0.08), metal * 0.85)
    c.paint(segment(p, -0.42, 0.82, -0.08, 0.82, 0.09), (0.8, 0.15, 0.15))  # handle
    basin = intersect(ellipse(p, 0.0, -0.55, 0.75, 0.33), c.y + 0.55)
    c.paint(basin, WHITE * 0.95)
    c.paint(ellipse(p, 0.0, -0.55, 0.7, 0.08), (0.8, 0.85, 0.9))
    if a > 0.05:  # the stream, thicker when louder, with ripples
        width = 0.05 + 0.12 * a
        wobble = 0.01 * np.sin(25 * c.y + np.pi / 2 * phase)
        c.paint(box((c.x - wobble, c.y), 0.2, -0.12, width, 0.36), (0.3, 0.6, 1.0),
                opacity=0.6 + 0.4 * a)
        for s in (-1, 1):
            c.paint(circle(p, 0.2 + s * (0.2 + 0.05 * (phase % 2)), -0.45, 0.04),
                    (0.3, 0.6, 1.0), opacity=a)


def bell(c: Canvas, a, phase, rng):
    gold = _jitter(rng, (0.9, 0.7, 0.15), 0.05)
    swing = 0.3 * a * np.sin(np.pi / 2 * phase + 0.5)
    q = moved(c, angle=swing, pivot=(0.0, 0.7))
    c.paint(ring(q, 0.0, 0.72, 0.1, 0.06), gold * 0.7)  # hanger
    shape = union(circle(q, 0.0, 0.25, 0.33),
                  polygon(q, [(-0.52, -0.45), (0.52, -0.45), (0.33, 0.25), (-0.33, 0.25)]))
    c.paint(shape, gold)
    c.paint(ellipse(q, 0.0, -0.47, 0.55, 0.1), gold * 0.8)  # lip
    c.paint(segment(q, -0.15, 0.35, -0.25, -0.3, 0.07), WHITE, opacity=0.5)  # shine
    c.paint(circle(q, 0.0, -0.62, 0.1), DARK * 3)  # clapper
    _sound_arcs(c, 0.0, 0.0, a, (1.0, 0.85, 0.3), r0=0.7)


def alarm(c: Canvas, a, phase, rng):
    lens = _jitter(rng, _pick(rng, [(0.9, 0.1, 0.05), (1.0, 0.5, 0.0)]), 0.04)
    flash = a * (0.55 + 0.45 * (phase % 2))
    p = (c.x, c.y)
    c.soft(ellipse(p, 0.0, -0.05, 0.42, 0.5), lens, 0.45 * flash, 0.4)  # glow
    c.paint(box(p, 0.0, -0.6, 0.55, 0.14, 0.04), (0.2, 0.2, 0.22))  # base
    dome = union(intersect(ellipse(p, 0.0, -0.46, 0.42, 0.8), -(c.y + 0.46)),
                 box(p, 0.0, -0.4, 0.42, 0.06))
    c.paint(dome, lens * (0.45 + 0.55 * flash) + (1 - lens) * 0.5 * flash)
    c.paint(segment(p, -0.2, 0.05, -0.1, 0.2, 0.07), WHITE, opacity=0.5 + 0.5 * flash)
    for ang in np.linspace(0.3, np.pi - 0.3, 5):  # rays
        c.paint(segment(p, 0.62 * np.cos(ang), -0.1 + 0.62 * np.sin(ang),
                        0.88 * np.cos(ang), -0.1 + 0.85 * np.sin(ang), 0.06), lens,
                opacity=float(flash))


def engine(c: Canvas, a, phase, rng):
    paint_ = _jitter(rng, _pick(rng, [(0.15, 0.35, 0.75), (0.2, 0.6, 0.25), (0.95, 0.75, 0.1)]))
    shake = 0.025 * a * (1 if phase % 2 else -1)
    q = moved(c, 0.0, shake)
    c.paint(box(q, 0.05, -0.15, 0.8, 0.2, 0.1), paint_)  # body
    c.paint(polygon(q, [(-0.45, 0.03), (0.45, 0.03), (0.25, 0.35), (-0.3, 0.35)]), paint_)
    for x0, x1 in ((-0.38, -0.05), (0.02, 0.35)):
        c.paint(polygon(q, [(x0, 0.07), (x1, 0.07), (x1 - 0.06 * (x1 > 0), 0.3),
                            (x0 + 0.06 * (x0 < -0.2), 0.3)]), (0.7, 0.85, 0.95))  # windows
    c.paint(circle(q, 0.8, -0.12, 0.05), (1.0, 0.95, 0.5))  # headlight
    for wx in (-0.48, 0.52):
        c.paint(circle((c.x, c.y), wx, -0.36, 0.18), DARK * 2)
        c.paint(circle((c.x, c.y), wx, -0.36, 0.08), (0.7, 0.7, 0.7))
    for k in range(3):  # exhaust puffs
        c.paint(circle((c.x, c.y), -0.78, -0.15 + 0.2 * k + 0.05 * (phase % 2),
                       0.05 + 0.03 * k), (0.6, 0.6, 0.6), opacity=float(np.clip(2 * a - k * 0.5,
                                                                                  0, 1)))


def piano(c: Canvas, a, phase, rng):
    case = _jitter(rng, _pick(rng, [(0.08, 0.07, 0.07), (0.35, 0.2, 0.12)]), 0.03)
    p = (c.x, c.y)
    c.paint(box(p, 0.0, -0.1, 0.92, 0.42, 0.05), case)
    c.paint(box(p, 0.0, -0.2, 0.84, 0.26), WHITE)
    keys = np.arange(10)
    pressed = np.random.default_rng(phase).random(10) < 0.35 * a if a > 0.1 else keys < 0
    for k in keys:  # white keys; some pressed
        x = -0.84 + 0.168 * (k + 0.5)
        c.paint(box(p, x, -0.2, 0.08, 0.26), (0.55, 0.75, 1.0) if pressed[k] else WHITE)
        c.paint(segment(p, x + 0.084, -0.46, x + 0.084, 0.06, 0.015), DARK * 4)
    for k in (0, 1, 3, 4, 5, 7, 8):
        c.paint(box(p, -0.84 + 0.168 * (k + 1), -0.06, 0.045, 0.12), DARK)
    for i, (nx, ny) in enumerate(((-0.4, 0.4), (0.3, 0.48))):  # notes float up while playing
        ny = ny + 0.04 * ((phase + i) % 4)
        col = (0.1, 0.1, 0.1)
        c.paint(union(ellipse(p, nx, ny, 0.08, 0.06), segment(p, nx + 0.07, ny, nx + 0.07,
                                                             ny + 0.22, 0.035)),
                col, opacity=float(np.clip(1.5 * a - 0.2 * i, 0, 1)))


def guitar(c: Canvas, a, phase, rng):
    wood = _jitter(rng, _pick(rng, [(0.85, 0.5, 0.15), (0.7, 0.3, 0.1), (0.9, 0.65, 0.3)]))
    q = moved(c, angle=-0.6)
    c.soft(union(circle(q, 0.0, -0.35, 0.42), circle(q, 0.0, 0.08, 0.3)), (1.0, 0.8, 0.3),
           0.4 * a, 0.25)  # glow while playing
    c.paint(segment(q, 0.0, 0.0, 0.0, 0.86, 0.13), (0.3, 0.18, 0.08))  # neck
    c.paint(box(q, 0.0, 0.86, 0.09, 0.1, 0.03), DARK * 2)  # head
    c.paint(union(circle(q, 0.0, -0.35, 0.42), circle(q, 0.0, 0.08, 0.3)), wood)
    c.paint(circle(q, 0.0, -0.02, 0.12), DARK)  # sound hole
    c.paint(box(q, 0.0, -0.45, 0.15, 0.035), DARK * 2)  # bridge
    vibrate = 0.008 + 0.03 * a * (phase % 2)
    for s in (-0.045, -0.015, 0.015, 0.045):
        c.paint(box(q, s, 0.2, 0.006 + vibrate / 2, 0.65), (0.95, 0.95, 0.85), opacity=0.9)


def violin(c: Canvas, a, phase, rng):
    wood = _jitter(rng, _pick(rng, [(0.55, 0.15, 0.05), (0.45, 0.12, 0.04)]), 0.04)
    q = moved(c, angle=0.35)
    c.soft(ellipse(q, 0.0, -0.25, 0.35, 0.5), (1.0, 0.6, 0.3), 0.4 * a, 0.25)
    body = union(ellipse(q, 0.0, -0.45, 0.3, 0.25), ellipse(q, 0.0, -0.02, 0.25, 0.22),
                 box(q, 0.0, -0.24, 0.19, 0.12))
    c.paint(body, wood)
    c.paint(segment(q, 0.0, -0.35, 0.0, 0.8, 0.08), DARK)  # fingerboard
    c.paint(circle(q, 0.0, 0.84, 0.07), wood * 0.8)  # scroll
    for s in (-1, 1):  # f-holes
        c.paint(segment(q, s * 0.13, -0.1, s * 0.11, -0.38, 0.025), DARK)
    slide = 0.2 * a * np.sin(np.pi / 2 * phase)  # the bow travels along itself
    bx, by = np.cos(-0.35 - 0.9), np.sin(-0.35 - 0.9)
    c.paint(segment((c.x, c.y), -0.6 * bx + slide * bx - 0.25, -0.6 * by + slide * by - 0.1,
                    0.6 * bx + slide * bx - 0.25, 0.6 * by + slide * by - 0.1, 0.04),
            (0.75, 0.6, 0.4))


DRAW = {
    "female_speech": female_speech,
    "male_speech": male_speech,
    "clapping": clapping,
    "telephone": telephone,
    "laughter": laughter,
    "footsteps": footsteps,
    "knock": knock,
    "water_tap": water_tap,
    "bell": bell,
    "alarm": alarm,
    "engine": engine,
    "piano": piano,
    "guitar": guitar,
    "violin": violin,
}


def draw_sprite(cls: str, size: int, activity: float = 0.0, phase: int = 0,
                style_seed: int = 0) -> np.ndarray:
    """One premultiplied RGBA sprite ``[size, size, 4]`` of class ``cls``.

    ``phase`` in [0, PHASES) is the animation step; ``style_seed`` fixes the object's look
    (colours, variants) across frames.
    """
    if cls not in DRAW:
        raise ValueError(f"no sprite for class {cls!r}; expected one of {sorted(DRAW)}")
    c = Canvas(size)
    DRAW[cls](c, float(np.clip(activity, 0, 1)), int(phase) % PHASES,
              np.random.default_rng(style_seed))
    return c.rgba.astype(np.float32)


def animate(cls: str, size: int, envelope, style_seed: int) -> np.ndarray:
    """Sprites ``[N, size, size, 4]`` following an activity ``envelope [N]`` in [0, 1].

    Activity is quantised to 1 / ACTIVITY_LEVELS; identical (level, phase) drawings are
    drawn once. A silent object (all-zero envelope) stands still.
    """
    levels = np.round(np.clip(np.asarray(envelope, float), 0, 1) * ACTIVITY_LEVELS)
    cache: dict[tuple[int, int], np.ndarray] = {}
    out = []
    for n, level in enumerate(levels.astype(int)):
        key = (level, n % PHASES if level else 0)
        if key not in cache:
            cache[key] = draw_sprite(cls, size, level / ACTIVITY_LEVELS, key[1], style_seed)
        out.append(cache[key])
    return np.stack(out)


def activity_envelope(signal, sample_rate: int, fps: float, num_frames: int,
                      range_db: float = 30.0) -> np.ndarray:
    """Loudness at each video frame time n / fps, mapped to [0, 1] over ``range_db``.

    RMS over one frame period centred on the frame time, in dB relative to the loudest frame:
    0 dB -> 1, -range_db (or silence) -> 0.
    """
    signal = np.asarray(signal, np.float64)
    half = int(round(sample_rate / fps / 2))
    centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(int)
    energy = np.concatenate([[0.0], np.cumsum(signal**2)])
    lo = np.clip(centres - half, 0, len(signal))
    hi = np.clip(centres + half, 0, len(signal))
    rms = np.sqrt((energy[hi] - energy[lo]) / np.maximum(hi - lo, 1))
    if rms.max() <= 0:
        return np.zeros(num_frames)
    level = 20 * np.log10(np.maximum(rms / rms.max(), 1e-12))
    return np.clip(1 + level / range_db, 0, 1)
