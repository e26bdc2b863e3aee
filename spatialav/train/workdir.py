"""A run's work directory: who it belongs to.

Pretraining and the probes both resume whatever their ``--workdir`` holds, so both first
check that it holds a run of the same thing: ``claim_workdir`` compares the fields that
make a run itself (its identity: task, model, encoders, ...) with the ``config.json`` found
there, and refuses with one message naming the fields that differ; then it records the
identity and the whole config for the next resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from spatialav.configs import json_safe


def claim_workdir(workdir, identity: dict, config: dict, what: str) -> None:
    """Refuse ``workdir`` if its ``config.json`` records another ``identity`` (the top-level
    fields given); else write ``{**identity, "config": config}`` there (process 0)."""
    path = Path(workdir) / "config.json"
    identity = json_safe(identity)
    if path.exists():
        old = json.loads(path.read_text())
        differ = [k for k, v in identity.items() if old.get(k) != v]
        if differ:
            raise ValueError(f"{workdir} holds another {what} run (its {', '.join(differ)} "
                             f"differ: {old.get(differ[0])!r:.120} here, "
                             f"{identity[differ[0]]!r:.120} now); use another --workdir")
    if jax.process_index() == 0:
        path.write_text(json.dumps({**identity, "config": json_safe(config)}, indent=2))
