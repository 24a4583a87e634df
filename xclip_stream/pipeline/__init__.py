"""Pipeline stages as plain Python (testable without Ray): sources, windows, scoring, sinks."""
