"""How a library job talks back while it runs: progress counts, warnings and status lines.

Library functions never print; they call these (the CLI turns them into progress bars and stderr
lines, a server into logs). Every field is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Callbacks:
    progress: Callable[[int, int], None] | None = None  # (done, total) frames encoded, or questions answered
    warning: Callable[[str], None] | None = None  # something the user should know (one line)
    status: Callable[[str], None] | None = None  # what is happening ("encoded 60 frames into ...")

    def advance(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def warn(self, text: str) -> None:
        if self.warning is not None:
            self.warning(text)

    def say(self, text: str) -> None:
        if self.status is not None:
            self.status(text)


NO_CALLBACKS = Callbacks()
