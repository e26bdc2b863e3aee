"""``render_clip``: one synthetic 360° audio-visual clip with its ground truth, from a seed.

Audio: each source's bank excerpt (unit RMS, times its gain, "emitted" at 1 m) is convolved
with its FOA room impulse response (``room``); optional diffuse ambient noise is added at
the sampled SNR (W power of the summed source images over the clip against the noise's);
the mixture, the source images and the dry signals are scaled together so that the largest
peak among them is ``cfg.peak``.

Video: the room panorama with one sprite per object, drawn far to near; a source's sprite
follows the envelope of its dry signal.

Labels: a source is active in a 100 ms frame when its dry signal there is within 40 dB of
its loudest frame; inactive gaps of up to 300 ms between active frames are bridged (event
annotations do not stop between footsteps or knocks).
"""

from __future__ import annotations

import numpy as np

from spatialav.synth import room, source_bank, sprites, video
from spatialav.synth.clip import LABEL_HOP_S, Clip
from spatialav.synth.scene import DEFAULT, SceneConfig, SceneSpec, SourceSpec, sample_scene

_FADE_S = 0.01  # fade in / out of each excerpt, against clicks
_ACTIVE_DB = -40.0
_MAX_GAP_FRAMES = 3


def excerpt(src: SourceSpec, clips, cfg: SceneConfig) -> tuple[np.ndarray, float]:
    """The source's emitted signal ``[T]`` (bank excerpt at unit RMS times its gain) and offset.

    A recording shorter than the sampled active span ends the source early (the offset
    returned, in seconds), unless it is shorter than ``cfg.min_active``: then it repeats.
    """
    fs, total = cfg.sample_rate, cfg.num_samples
    clip = np.asarray(clips[int(src.bank_pick * len(clips))], np.float64)
    start = int(round(src.onset * fs))
    n = min(int(round(src.offset * fs)), total) - start
    if len(clip) < n:
        need = int(np.ceil(cfg.min_active * fs))
        n = max(len(clip), min(n, need))
        clip = np.tile(clip, -(-n // len(clip)))
    begin = int(src.excerpt * (len(clip) - n + 1))
    seg = clip[begin : begin + n].copy()
    fade = min(int(_FADE_S * fs), n // 2)
    ramp = np.linspace(0, 1, fade, endpoint=False)
    seg[:fade] *= ramp
    seg[n - fade :] *= ramp[::-1]
    rms = np.sqrt(np.mean(seg**2))
    out = np.zeros(total)
    out[start : start + n] = seg / max(rms, 1e-12) * 10 ** (src.gain_db / 20)
    return out, (start + n) / fs


def activity(dry, sample_rate: int, num_frames: int) -> np.ndarray:
    """Per-label-frame activity ``[num_frames]`` of a dry signal (module docstring rule)."""
    hop = int(round(LABEL_HOP_S * sample_rate))
    padded = np.zeros(num_frames * hop)
    padded[: min(len(dry), len(padded))] = dry[: len(padded)]
    rms = np.sqrt(np.mean(padded.reshape(num_frames, hop) ** 2, axis=1))
    if rms.max() <= 0:
        return np.zeros(num_frames, bool)
    active = rms > rms.max() * 10 ** (_ACTIVE_DB / 20)
    on = np.flatnonzero(active)
    for a, b in zip(on[:-1], on[1:], strict=True):
        if b - a - 1 <= _MAX_GAP_FRAMES:
            active[a:b] = True
    return active


def sprite_fov(distance: float, cfg: SceneConfig) -> float:
    """Angular size (radians) of a sprite of ``cfg.sprite_size_m`` at ``distance``, clamped."""
    fov = 2 * np.arctan(cfg.sprite_size_m / 2 / distance)
    return float(np.clip(fov, *np.radians(cfg.sprite_fov_deg)))


def sprite_resolution(fov: float, width: int) -> int:
    """Sprite canvas size: about 1.5 canvas pixels per frame pixel (anti-aliased, cheap)."""
    return int(np.clip(round(1.5 * fov / (2 * np.pi / width)), 16, 64))


def render_video(spec: SceneSpec, dry, cfg: SceneConfig):
    """Frames ``[N, H, W, 3]`` uint8 and box rows ``[rows, 7]`` (see ``Clip.boxes``)."""
    h, w = cfg.frame_size
    n = cfg.num_frames
    objects = spec.objects
    layers = []
    for i, obj in enumerate(objects):
        fov = sprite_fov(obj.distance, cfg)
        size = sprite_resolution(fov, w)
        env = (sprites.activity_envelope(dry[i], cfg.sample_rate, cfg.fps, n)
               if i < len(spec.sources) else np.zeros(n))
        anim = sprites.animate(obj.cls, size, env, obj.style_seed)
        layers.append((video.sprite_map(obj.azimuth, obj.elevation, fov, size, h, w), anim))
    order = np.argsort([-o.distance for o in objects], kind="stable")  # far to near
    frames, coverages = video.composite(video.panorama(spec, h, w), [layers[i] for i in order])
    rows = []
    for layer, i in enumerate(order):
        cls = source_bank.class_index(objects[i].cls)
        pixels = layers[i][0].pixels
        for f in range(n):
            box = video.box_from_pixels(pixels[coverages[layer][f] > video.BOX_THRESHOLD], h, w)
            if box is not None:
                rows.append((f, cls, *box, i))
    boxes = np.array(sorted(rows), np.float32).reshape(-1, 7)
    return frames, boxes


def render_clip(seed: int, cfg: SceneConfig = DEFAULT, bank=None) -> Clip:
    """Render the scene ``sample_scene(seed, cfg)``: audio, video and labels.

    ``bank`` maps class names to lists of mono recordings at ``cfg.sample_rate``; by default
    ``source_bank.load_bank(cfg.sample_rate)``.
    """
    spec = sample_scene(seed, cfg)
    fs, total = cfg.sample_rate, cfg.num_samples
    bank = source_bank.load_bank(rate=fs) if bank is None else bank
    emitted, offsets = zip(*(excerpt(s, bank[s.cls], cfg) for s in spec.sources), strict=True)
    emitted = np.stack(emitted)
    rng = np.random.default_rng(spec.noise_seed)
    images, dry = room.render_sources(spec, emitted, fs, total, rng)
    mix = images.sum(0)
    if spec.snr_db is not None:
        noise = room.ambient_noise(rng, total, spec.ambient_color)
        power = np.mean(mix[:, 0] ** 2)
        mix = mix + noise * np.sqrt(power * 10 ** (-spec.snr_db / 10))
    gain = cfg.peak / max(np.abs(mix).max(), np.abs(images).max(), np.abs(dry).max())
    mix, images, dry = mix * gain, images * gain, dry * gain

    n_labels = int(np.ceil(cfg.duration / LABEL_HOP_S - 1e-9))
    act = np.stack([activity(d, fs, n_labels) for d in dry])
    frames, boxes = render_video(spec, dry, cfg)

    classes = np.array([source_bank.class_index(s.cls) for s in spec.sources], np.int32)
    directions = np.array([(s.azimuth, s.elevation) for s in spec.sources], np.float32)
    distances = np.array([s.distance for s in spec.sources], np.float32)
    labels = [(f, classes[s], s, *np.degrees(directions[s]), distances[s] * 100)
              for f in range(n_labels) for s in range(len(spec.sources)) if act[s, f]]
    return Clip(
        audio=mix.astype(np.float32),
        frames=frames,
        sample_rate=fs,
        fps=float(cfg.fps),
        source_images=images.astype(np.float32),
        dry=dry.astype(np.float32),
        source_class=classes,
        source_direction=directions,
        source_distance=distances,
        activity=act,
        distractor_class=np.array([source_bank.class_index(d.cls) for d in spec.distractors],
                                  np.int32),
        distractor_direction=np.array([(d.azimuth, d.elevation) for d in spec.distractors],
                                      np.float32).reshape(-1, 2),
        labels=np.array(labels, np.float32).reshape(-1, 6),
        boxes=boxes,
        room={
            "seed": spec.seed,
            "size": list(spec.room_size),
            "listener": list(spec.listener),
            "listener_yaw": spec.listener_yaw,
            "rt60": spec.rt60,
            "absorption": spec.absorption,
            "snr_db": spec.snr_db,
            "ambient_color": spec.ambient_color,
            "gain": float(gain),
            "onset": [s.onset for s in spec.sources],
            "offset": list(offsets),
            "distractor_distance": [d.distance for d in spec.distractors],
        },
    )
