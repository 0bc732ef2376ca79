"""Run glue shared by every agent: config, CLI, run directory, loggers, video, export, atomic IO."""
