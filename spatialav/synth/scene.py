"""Synthetic scene configuration and the seeded scene sampler.

``SceneConfig`` holds the ranges a dataset draws from (user-facing angles in degrees, as
CLI overrides are); ``sample_scene(seed, cfg)`` turns an integer seed into a ``SceneSpec``:
a shoebox room, a listener inside it, sound sources and silent visual distractors at
directions relative to the listener (radians, docs/DESIGN.md §2). Sampling is pure and
bank-independent: which bank clip a source plays is stored as uniform numbers that the
renderer resolves against the bank it is given.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spatialav import geometry
from spatialav.synth.source_bank import CLASSES

# Sabine: RT60 = 24 ln(10) V / (c S a); pyroomacoustics uses the same constant and c.
SPEED_OF_SOUND = 343.0
_MAX_ABSORPTION = 0.95  # energy absorption; 1 would be an open window on every wall
_MAX_RT60 = 3.0
_SOURCE_WALL_MARGIN = 0.2  # metres kept between an object and any wall
_PLACEMENT_TRIES = 2000


def sabine_absorption(rt60: float, size) -> float:
    """Uniform energy absorption giving ``rt60`` seconds in a shoebox of ``size`` (Sabine)."""
    lx, ly, lz = size
    volume = lx * ly * lz
    surface = 2 * (lx * ly + lx * lz + ly * lz)
    return 24 * np.log(10) * volume / (SPEED_OF_SOUND * surface * rt60)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """What ``sample_scene`` draws from; validated on construction (``ValueError``)."""

    duration: float = 4.0  # seconds
    sample_rate: int = 24000
    fps: float = 10.0
    frame_size: tuple[int, int] = (128, 256)  # equirect (H, W); W = 2 H
    num_sources: tuple[int, int] = (1, 3)  # inclusive range
    num_distractors: tuple[int, int] = (0, 2)
    classes: tuple[str, ...] = tuple(CLASSES)
    rt60: tuple[float, float] = (0.2, 0.8)  # seconds; (0, 0) renders anechoic (direct path only)
    room_min: tuple[float, float, float] = (3.0, 3.0, 2.5)  # metres (x, y, z)
    room_max: tuple[float, float, float] = (12.0, 10.0, 4.0)
    wall_margin: float = 0.5  # listener's minimum distance to any wall, metres
    distance: tuple[float, float] = (0.7, 5.0)  # object distance from the listener, metres
    elevation_deg: float = 45.0  # most objects lie within +-elevation_deg ...
    wide_elevation_deg: float = 75.0  # ... a fraction wide_prob within +-wide_elevation_deg
    wide_prob: float = 0.2
    min_separation_deg: float = 30.0  # between any two objects (sources and distractors)
    min_active: float = 1.0  # seconds each source is at least active
    source_gain_db: tuple[float, float] = (-6.0, 0.0)  # level of each unit-RMS source at 1 m
    ambient_prob: float = 0.5  # probability of diffuse ambient noise ...
    snr_db: tuple[float, float] = (10.0, 30.0)  # ... at this source-to-ambient ratio (W)
    sprite_size_m: float = 0.6  # physical size of a sprite; angular size follows distance
    sprite_fov_deg: tuple[float, float] = (16.0, 30.0)  # clamp of the sprite's angular size
    peak: float = 0.9  # the mixture (and every target) is scaled to this peak

    def __post_init__(self):
        _validate(self)

    @property
    def anechoic(self) -> bool:
        return tuple(self.rt60) == (0, 0)

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))


def _fail(option: str, expected: str, got) -> None:
    raise ValueError(f"SceneConfig.{option}: expected {expected}, got {got!r}")


def _check_range(cfg, name, lo_min, hi_max=np.inf, integer=False):
    value = getattr(cfg, name)
    kind = "integers" if integer else "numbers"
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or (integer and not all(isinstance(v, int | np.integer) for v in value))
    ):
        _fail(name, f"a (low, high) pair of {kind}", value)
    lo, hi = value
    if not lo_min <= lo <= hi <= hi_max:
        _fail(name, f"{lo_min} <= low <= high <= {hi_max}", value)


def _validate(cfg: SceneConfig) -> None:
    if not cfg.duration > 0:
        _fail("duration", "a positive number of seconds", cfg.duration)
    if not (isinstance(cfg.sample_rate, int | np.integer) and cfg.sample_rate >= 8000):
        _fail("sample_rate", "an integer rate >= 8000 Hz", cfg.sample_rate)
    if not cfg.fps > 0:
        _fail("fps", "a positive frame rate", cfg.fps)
    if cfg.num_frames < 1:
        _fail("duration", f"at least one video frame at {cfg.fps} fps", cfg.duration)
    h, w = cfg.frame_size
    if not (h >= 8 and w == 2 * h):
        _fail("frame_size", "(H, W) with W = 2 H and H >= 8 (equirect is 2:1)", cfg.frame_size)
    _check_range(cfg, "num_sources", 1, integer=True)
    _check_range(cfg, "num_distractors", 0, integer=True)
    unknown = [c for c in cfg.classes if c not in CLASSES]
    if not cfg.classes or unknown or len(set(cfg.classes)) != len(cfg.classes):
        _fail("classes", f"distinct names from {list(CLASSES)}", unknown or cfg.classes)
    lo_room, hi_room = np.asarray(cfg.room_min, float), np.asarray(cfg.room_max, float)
    if lo_room.shape != (3,) or hi_room.shape != (3,) or np.any(lo_room > hi_room):
        _fail("room_max", f"3 sizes, each >= room_min {cfg.room_min}", cfg.room_max)
    if not cfg.wall_margin > 0 or np.any(lo_room <= 2 * cfg.wall_margin + 0.1):
        _fail("room_min", f"every size > 2 wall_margin + 0.1 = {2 * cfg.wall_margin + 0.1} m",
              cfg.room_min)
    _check_range(cfg, "distance", 0.3)
    reach = min(lo_room[:2]) / 2 - _SOURCE_WALL_MARGIN
    if cfg.distance[0] > reach:
        _fail("distance", f"a low end <= {reach:.2f} m so objects fit in the smallest room "
              f"{cfg.room_min}", cfg.distance)
    _check_rt60(cfg, lo_room)
    if not 0 < cfg.elevation_deg <= cfg.wide_elevation_deg < 90:
        _fail("wide_elevation_deg", f"elevation_deg ({cfg.elevation_deg}) <= value < 90",
              cfg.wide_elevation_deg)
    if not 0 <= cfg.wide_prob <= 1:
        _fail("wide_prob", "a probability in [0, 1]", cfg.wide_prob)
    if not 0 < cfg.min_active <= cfg.duration:
        _fail("min_active", f"0 < seconds <= duration ({cfg.duration})", cfg.min_active)
    _check_range(cfg, "source_gain_db", -60.0, 20.0)
    if not 0 <= cfg.ambient_prob <= 1:
        _fail("ambient_prob", "a probability in [0, 1]", cfg.ambient_prob)
    _check_range(cfg, "snr_db", -20.0, 80.0)
    if not cfg.sprite_size_m > 0:
        _fail("sprite_size_m", "a positive size in metres", cfg.sprite_size_m)
    _check_range(cfg, "sprite_fov_deg", 1.0, 90.0)
    if cfg.sprite_fov_deg[1] > cfg.min_separation_deg:
        _fail("sprite_fov_deg", f"a largest size <= min_separation_deg "
              f"({cfg.min_separation_deg}) so sprites do not overlap", cfg.sprite_fov_deg)
    if not 0 < cfg.peak <= 1:
        _fail("peak", "a level in (0, 1]", cfg.peak)
    _check_packing(cfg)


def _check_rt60(cfg: SceneConfig, lo_room) -> None:
    _check_range(cfg, "rt60", 0.0, _MAX_RT60)
    lo, hi = cfg.rt60
    if lo == 0 and hi > 0:
        _fail("rt60", "(0, 0) for anechoic or a range of positive seconds", cfg.rt60)
    if lo > 0 and sabine_absorption(lo, lo_room) > _MAX_ABSORPTION:
        shortest = sabine_absorption(1.0, lo_room) / _MAX_ABSORPTION
        _fail("rt60", f"a low end >= {shortest:.3f} s, the shortest the smallest room "
              f"{cfg.room_min} gives (absorption <= {_MAX_ABSORPTION})", cfg.rt60)


def _check_packing(cfg: SceneConfig) -> None:
    """Random sequential placement jams near half coverage: demand caps cover <= 50 %."""
    n = cfg.num_sources[1] + cfg.num_distractors[1]
    cap = 2 * np.pi * (1 - np.cos(np.radians(cfg.min_separation_deg) / 2))
    band = 4 * np.pi * np.sin(np.radians(cfg.elevation_deg))
    if not 0 <= cfg.min_separation_deg < 180 or n * cap > 0.5 * band:
        _fail("min_separation_deg", f"a separation at which {n} objects (max sources + max "
              f"distractors) fit within +-{cfg.elevation_deg} deg elevation, caps of half "
              "the separation covering <= 50 % of that band", cfg.min_separation_deg)


DEFAULT = SceneConfig()


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """A sprite in the scene; directions relative to the listener, radians / metres."""

    cls: str
    azimuth: float
    elevation: float
    distance: float
    style_seed: int  # the sprite's look (colours, variants), fixed for the clip


@dataclasses.dataclass(frozen=True)
class SourceSpec(ObjectSpec):
    """A sounding object: an ``ObjectSpec`` that plays a bank clip from onset to offset."""

    onset: float = 0.0  # seconds
    offset: float = 0.0
    bank_pick: float = 0.0  # in [0, 1): which clip of its class (index = floor(pick * n))
    excerpt: float = 0.0  # in [0, 1): where in that clip the excerpt starts
    gain_db: float = 0.0  # level of the unit-RMS excerpt at 1 m


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """One sampled scene: everything the renderer needs besides the bank's recordings."""

    seed: int
    room_size: tuple[float, float, float]  # metres
    listener: tuple[float, float, float]  # position in the room, metres
    listener_yaw: float  # radians: the listener's front is the room's x axis turned by this
    rt60: float  # seconds (0: anechoic)
    absorption: float  # uniform energy absorption of the walls (0 when anechoic)
    snr_db: float | None  # ambient noise level, None when there is none
    ambient_color: str  # "pink" or "brown"
    sources: tuple[SourceSpec, ...]
    distractors: tuple[ObjectSpec, ...]
    noise_seed: int  # diffuse tails and ambient noise
    visual_seed: int  # background panorama

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        """Sources then distractors: the object index used by the boxes."""
        return self.sources + self.distractors

    def room_vector(self, azimuth: float, elevation: float) -> np.ndarray:
        """Unit vector, in room coordinates, of a direction relative to the listener."""
        return room_vector(self.listener_yaw, azimuth, elevation)


def room_vector(yaw: float, azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector in room coordinates of a listener-relative direction (listener yawed by yaw)."""
    u = geometry.direction_to_vector(np.float64(azimuth), np.float64(elevation))
    return geometry.rotation_matrix(np.float64(yaw)) @ u


def _sample_room(rng, cfg: SceneConfig):
    lo, hi = np.asarray(cfg.room_min, float), np.asarray(cfg.room_max, float)
    size = rng.uniform(lo, hi)
    if cfg.anechoic:
        return size, 0.0, 0.0
    rt60 = float(rng.uniform(*cfg.rt60))
    # Large rooms cannot be dry enough: shrink toward room_min (feasible by validation).
    for shrink in np.linspace(1.0, 0.0, 21):
        candidate = lo + shrink * (size - lo)
        if sabine_absorption(rt60, candidate) <= _MAX_ABSORPTION:
            return candidate, rt60, float(sabine_absorption(rt60, candidate))
    raise AssertionError("unreachable: validation guarantees room_min is feasible")


def _free_distance(position, vector, size) -> float:
    """Distance from ``position`` along unit ``vector`` to the nearest wall, less a margin."""
    with np.errstate(divide="ignore"):
        t = np.where(vector > 0, (size - position) / vector,
                     np.where(vector < 0, -position / vector, np.inf))
    return float(t.min()) - _SOURCE_WALL_MARGIN


def _sample_object(rng, cfg, size, listener, yaw, placed, cls):
    """Direction and distance of a new object, apart from ``placed`` and inside the room."""
    min_sep = np.radians(cfg.min_separation_deg)
    for _ in range(_PLACEMENT_TRIES):
        band = cfg.wide_elevation_deg if rng.random() < cfg.wide_prob else cfg.elevation_deg
        # Area-uniform within the band: sin(el) uniform.
        el = float(np.arcsin(rng.uniform(-1, 1) * np.sin(np.radians(band))))
        az = float(rng.uniform(-np.pi, np.pi))
        if any(geometry.angular_distance(az, el, a, e) < min_sep for a, e in placed):
            continue
        reach = _free_distance(listener, room_vector(yaw, az, el), size)
        lo, hi = cfg.distance
        if reach < lo:
            continue
        dist = float(rng.uniform(lo, min(hi, reach)))
        return az, el, dist, int(rng.integers(2**31))
    raise RuntimeError(f"could not place a {cls} object after {_PLACEMENT_TRIES} tries")


def sample_scene(seed: int, cfg: SceneConfig = DEFAULT) -> SceneSpec:
    """A random scene, a pure function of the integer ``seed`` and ``cfg``."""
    rng = np.random.default_rng(seed)
    size, rt60, absorption = _sample_room(rng, cfg)
    listener = rng.uniform(cfg.wall_margin, size - cfg.wall_margin)
    yaw = float(rng.uniform(-np.pi, np.pi))
    n_src = int(rng.integers(cfg.num_sources[0], cfg.num_sources[1] + 1))
    n_dis = int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))
    placed: list[tuple[float, float]] = []
    sources, distractors = [], []
    for i in range(n_src + n_dis):
        cls = str(rng.choice(cfg.classes))
        az, el, dist, style = _sample_object(rng, cfg, size, listener, yaw, placed, cls)
        placed.append((az, el))
        if i >= n_src:
            distractors.append(ObjectSpec(cls, az, el, dist, style))
            continue
        active = rng.uniform(cfg.min_active, cfg.duration)
        onset = float(rng.uniform(0, cfg.duration - active))
        sources.append(SourceSpec(
            cls, az, el, dist, style, onset=onset, offset=onset + float(active),
            bank_pick=float(rng.random()), excerpt=float(rng.random()),
            gain_db=float(rng.uniform(*cfg.source_gain_db))))
    ambient = rng.random() < cfg.ambient_prob
    snr = float(rng.uniform(*cfg.snr_db)) if ambient else None
    return SceneSpec(
        seed=int(seed),
        room_size=tuple(float(v) for v in size),
        listener=tuple(float(v) for v in listener),
        listener_yaw=yaw,
        rt60=rt60,
        absorption=absorption,
        snr_db=snr,
        ambient_color=str(rng.choice(["pink", "brown"])),
        sources=tuple(sources),
        distractors=tuple(distractors),
        noise_seed=int(rng.integers(2**31)),
        visual_seed=int(rng.integers(2**31)),
    )
