"""What the loop reports as it goes: the one seam metrics hang off, and the figures of a round."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RoundStats:
    number: int
    claimed: int
    committed: int
    lost: int
    finalized: int


class RoundObserver(Protocol):
    """What the loop reports as it goes (metrics hang off this); every method must be cheap."""

    def round_finished(self, stats: RoundStats, seconds: float) -> None: ...
    def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None: ...
    def loop_blocked(self, plugin_id: str, seconds: float) -> None: ...
    def loop_starved(self, seconds: float) -> None: ...
    def woken(self) -> None: ...
    def store_error(self) -> None: ...


class NullObserver:
    """Observes nothing; subclass it to hear only some of what the loop reports."""

    def round_finished(self, stats: RoundStats, seconds: float) -> None:
        pass

    def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None:
        pass

    def loop_blocked(self, plugin_id: str, seconds: float) -> None:
        pass

    def loop_starved(self, seconds: float) -> None:
        """A plugin step was slow only because the process waited `seconds` for a CPU."""

    def woken(self) -> None:
        pass

    def store_error(self) -> None:
        pass
