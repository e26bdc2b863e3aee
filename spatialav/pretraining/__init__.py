"""The pretraining library behind ``python -m spatialav.pretrain``.

- ``tasks``: AVC, AVSA-viewpoints and AVSA-objects as trainer loss functions, and the model;
- ``validation``: AVC retrieval and the binary AVSA probe on the validation clips;
- ``runner``: a whole job (``run(cfg, workdir)``): the dataset and its checks, the work
  directory, the loader, the trainer, the summary.
"""

from spatialav.pretraining.runner import run
from spatialav.pretraining.tasks import init_model, make_loss_fn, variance_penalty
from spatialav.pretraining.validation import ValidationHook, validation_hooks

__all__ = ["ValidationHook", "init_model", "make_loss_fn", "run", "validation_hooks",
           "variance_penalty"]
