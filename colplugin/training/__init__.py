"""Training: the Task protocol and the training loop (checkpoints, resume, progress)."""

from .task import Batch, Task
from .trainer import CheckpointError, TrainingDiverged, TrainResult, load_checkpoint, save_checkpoint, train

__all__ = ["Task", "Batch", "train", "TrainResult", "TrainingDiverged", "CheckpointError", "save_checkpoint",
           "load_checkpoint"]
