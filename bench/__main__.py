"""Run every benchmark in sequence, each in its own process: `.venv/bin/python -m bench [--quick]`.

    .venv/bin/python -m bench [--quick] [--only intake,ack] [--skip dashboard]

Each benchmark prints its own command line and figures; this prints a summary of the RESULT lines
at the end. A benchmark that fails or outlives its time limit is reported and the rest still run.

Run it from a tree nobody is editing: the workflow sandbox imports workflows/ from disk again for
every new workflow, so a half-saved edit breaks a running benchmark's worker. From a clean copy:

    git archive HEAD | tar -x -C /tmp/rt-src
    cd /tmp/rt-src && PYTHONPATH=. /work/main/.venv/bin/python -m bench
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

#: (name, full-size arguments, quick arguments, time limit in seconds for the full size)
BENCHMARKS: list[tuple[str, list[str], list[str], int]] = [
    ("intake", [], ["--quick"], 1800),
    ("ack", [], ["--quick"], 900),
    ("catchup", [], ["--quick"], 1800),
    ("memory", [], ["--quick"], 1800),
    ("scaleout", [], ["--quick"], 1800),
    ("dashboard", [], ["--referrals", "5000", "--runs", "5"], 900),
    ("lookups", [], ["--pairs", "100", "--rounds", "2"], 300),
    ("projection", [], ["--referrals", "50", "--rounds", "2"], 300),
    ("rebuild", [], ["--replays", "20", "--rounds", "2"], 600),
    ("contention", [], ["--quick"], 900),
]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes in all)")
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out")
    args = parser.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    print(f"command: .venv/bin/python -m bench {' '.join(argv)}".rstrip(), flush=True)
    results: list[str] = []
    failed: list[str] = []
    started = time.monotonic()
    for name, full, quick, limit in BENCHMARKS:
        if (only and name not in only) or name in skip:
            continue
        command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"\n===== bench.{name}", flush=True)
        t0 = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        # The limit: SIGINT, so asyncio.run cancels the benchmark and its clean-up runs (processes
        # stopped, the database dropped); reported as a failure.
        watchdog = threading.Timer(limit if not args.quick else 600, process.send_signal, [signal.SIGINT])
        watchdog.start()
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT"):
                results.append(line.rstrip())
        code = process.wait()
        watchdog.cancel()
        if code != 0:
            failed.append(f"bench.{name} (exit {code})")
        print(f"===== bench.{name}: {time.monotonic() - t0:.0f} s", flush=True)
    print(f"\n===== summary ({time.monotonic() - started:.0f} s in all, shared 2-core machine)")
    for line in results:
        print(line)
    for name in failed:
        print(f"FAILED {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
