"""Typed messages and configuration: plain data, no behaviour beyond validation and (de)serialisation."""

from .scores import WindowScores
from .windows import FrameWindow

__all__ = ["FrameWindow", "WindowScores"]
