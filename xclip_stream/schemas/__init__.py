"""Typed messages and configuration: plain data, no behaviour beyond validation and (de)serialisation."""

from .activity import ActivityEvent, LabelThresholds
from .scores import WindowScores
from .windows import FrameWindow

__all__ = ["ActivityEvent", "FrameWindow", "LabelThresholds", "WindowScores"]
