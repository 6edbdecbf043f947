"""A clock the test turns by hand (the only thing the tests fake)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ManualClock:
    """Wall and monotonic time that move only when told; the wall clock may jump alone."""

    wall: float = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    mono: float = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move forward."""
        self.wall += seconds
        self.mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Someone sets the wall clock (forward or back); monotonic time does not move."""
        self.wall += seconds
