"""The paper's experiments (and the Neo fit) as tasks: each module defines and registers one.

Every module of this package is imported here, so a task registered with
:func:`colplugin.training.register_task` in a new module ``colplugin/tasks/<name>.py`` is
known to :func:`get_task` and the command line without any other change.
"""

import importlib
import pkgutil

from ..training.task import TASKS, Task, get_task, register_task, task_class
from .decision import Decision, wong_wang
from .digits import Digits
from .fit import FitTarget
from .parity import Parity
from .xor import XOR

#: The task that ``colplugin run`` trains when none is named (the paper's first experiment).
DEFAULT_TASK = XOR.name

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DEFAULT_TASK", "Task", "XOR", "Decision", "Digits", "FitTarget", "Parity", "wong_wang", "TASKS", "get_task",
           "task_class", "register_task"]
