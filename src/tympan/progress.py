"""One rich progress bar with a clips/s column, shared by the cache and the commands."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def clips_progress(
    total: int, label: str, *, enabled: bool = True, transient: bool = False
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr showing done/total, clips/s and time left; yields ``advance(n)``.

    With ``enabled=False`` (or nothing to do) ``advance`` is a no-op and nothing prints;
    ``transient`` removes the bar when done.
    """
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} clips/s"), TimeElapsedColumn(),
               TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(label, total=total, rate="-")
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:.1f}")

        yield advance
