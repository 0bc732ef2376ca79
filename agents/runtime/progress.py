"""Progress output for the trainers: the current env steps/s, for the tqdm bar and, without a
terminal (logs, CI), a plain line at least every PROGRESS_EVERY_S."""
from __future__ import annotations

PROGRESS_EVERY_S = 20.0     # without a terminal, a progress line at least this often


class ProgressRate:
    """Current env steps/s for the progress output, not the average since the start (which hides a
    slowdown once updates begin after ``learning_starts``): ``batch_rate`` since the previous batch
    (the bar), ``line_rate`` since the previous plain line, or None while no line is due (one every
    ``every_s`` seconds and one at the end)."""

    def __init__(self, now: float, frames: int, every_s: float | None = None):
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.batch_at = self.line_at = (now, frames)

    def batch_rate(self, now: float, frames: int) -> float:
        (t, f), self.batch_at = self.batch_at, (now, frames)
        return (frames - f) / max(now - t, 1e-9)

    def line_rate(self, now: float, frames: int, final: bool = False) -> float | None:
        t, f = self.line_at
        if now - t < self.every_s and not final:
            return None
        self.line_at = (now, frames)
        return (frames - f) / max(now - t, 1e-9)
