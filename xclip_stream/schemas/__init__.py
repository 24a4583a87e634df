"""Typed messages and configuration: plain data, no behaviour beyond validation and (de)serialisation."""

from .scores import WindowScores

__all__ = ["WindowScores"]
