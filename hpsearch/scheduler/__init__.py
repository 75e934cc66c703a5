"""The scheduler: a pure state machine and the loop that drives it."""

from .loop import SearchProgress, run_scheduler
from .state import SchedulerState

__all__ = ["SchedulerState", "SearchProgress", "run_scheduler"]
