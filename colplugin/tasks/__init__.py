"""The paper's experiments as reusable tasks: each defines its network, inputs, loss and accuracy."""

from ..training import Task
from .decision import Decision, wong_wang
from .xor import XOR

TASKS = {"xor": XOR, "decision": Decision}

__all__ = ["Task", "XOR", "Decision", "wong_wang", "TASKS", "get_task"]


def get_task(name: str, **kwargs) -> Task:
    """A task by name (``"xor"`` or ``"decision"``)."""
    try:
        return TASKS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use one of {', '.join(TASKS)}") from None
