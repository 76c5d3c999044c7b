"""Training: the Task protocol and registry, the training settings, and the training loop."""

from .settings import OPTIMIZERS, TrainSettings
from .task import TASKS, Batch, Task, get_task, register_task, task_class
from .trainer import CheckpointError, TrainingDiverged, TrainResult, load_checkpoint, save_checkpoint, train

__all__ = ["Task", "Batch", "TrainSettings", "OPTIMIZERS", "TASKS", "register_task", "get_task", "task_class",
           "train", "TrainResult", "TrainingDiverged", "CheckpointError", "save_checkpoint", "load_checkpoint"]
