"""The cyclic collector's work in a benchmark's `referrals worker` process (bench.harness).

With BENCH_GC_PROBE set to a folder, bench.harness puts this folder first on the `referrals`
processes' PYTHONPATH, and Python imports this module at start-up. In a worker process it times
every collection (`gc.callbacks`) and rewrites `gc-<pid>.txt` in that folder every 3 seconds:
the process CPU so far, then per generation the collections and the seconds they took. Other
processes are left alone. SIGUSR2 to such a worker writes `census-<pid>-<n>.txt` beside it: the
objects the collector tracks, counted by type (after a full collection), the most numerous first.

    BENCH_GC_PROBE=/tmp/gc .venv/bin/python -m bench.intake --no-shape --no-profile --no-sync
"""

from __future__ import annotations

import collections
import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _probe(folder: Path) -> None:
    counts = [0, 0, 0]
    seconds = [0.0, 0.0, 0.0]
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            generation = info["generation"]
            counts[generation] += 1
            seconds[generation] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    out = folder / f"gc-{os.getpid()}.txt"

    def write() -> None:
        while True:
            time.sleep(3)
            parts = [f"cpu {time.process_time():.1f} s", f"thresholds {gc.get_threshold()}"]
            parts.append(f"frozen {gc.get_freeze_count()}")
            parts += [f"gen{g} {counts[g]} in {seconds[g]:.2f} s" for g in range(3)]
            parts.append(f"collector {sum(seconds):.2f} s")
            out.write_text(", ".join(parts) + "\n")

    threading.Thread(target=write, name="gc-probe", daemon=True).start()
    taken = [0]

    def census(signum: int, frame: Any) -> None:
        gc.collect()
        objects = gc.get_objects()
        by_type = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
        taken[0] += 1
        lines = [f"{len(objects)} objects tracked, {len(by_type)} types"]
        lines += [f"{n:>9} {name}" for name, n in by_type.most_common(60)]
        (folder / f"census-{os.getpid()}-{taken[0]}.txt").write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR2, census)


_folder = os.environ.get("BENCH_GC_PROBE")
if _folder and "worker" in getattr(sys, "orig_argv", []):
    Path(_folder).mkdir(parents=True, exist_ok=True)
    _probe(Path(_folder))
