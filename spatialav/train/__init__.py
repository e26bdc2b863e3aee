"""The trainer: mesh, jitted step, optimiser, checkpoints, logging and hooks."""

from spatialav.train.checkpoint import Checkpointer
from spatialav.train.optim import OptimConfig
from spatialav.train.trainer import Hook, NonFiniteLossError, TrainConfig, Trainer

__all__ = ["Checkpointer", "Hook", "NonFiniteLossError", "OptimConfig", "TrainConfig", "Trainer"]
