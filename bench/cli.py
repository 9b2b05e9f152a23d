"""CLI start-up: the wall time of whole `parallax` commands, beside `python -c pass`.

    python bench/cli.py [--reps N]

Each command runs as a new process (what a person or a script pays), interleaved with the
others and with the floor (`python -c pass`, the interpreter alone), on a store holding one
5,000-agent fan-out run and one small run. Medians of the repetitions, with the spread. Last line:

    RESULT help_ms=A runs_ms=B read_ms=C inspect_ms=D floor_ms=E
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import fanout_plan, parallax_once
from parallax.engine import api
from parallax.streams.sqlite import SqliteStore


async def prepare(db: Path) -> str:
    async with SqliteStore(db) as store:
        await parallax_once(store, fanout_plan(5000))
        small = await api.create_run(store, fanout_plan(5))
        await api.resume_run(store, small)
        return small


def wall_ms(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parallax-cli-") as tmp:
        root = Path(tmp)
        db = root / "parallax.db"
        small = asyncio.run(prepare(db))
        px = [sys.executable, "-m", "parallax", "--store", f"sqlite:///{db}"]
        commands = {
            "floor": [sys.executable, "-c", "pass"],
            "help": [sys.executable, "-m", "parallax", "--help"],
            "runs": [*px, "runs"],
            "read": [*px, "streams", "read", f"runs/{small}/control"],
            "inspect": [*px, "inspect", small],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            wall_ms(command, root)  # warm the page cache and the bytecode
        for _ in range(args.reps):
            for name, command in commands.items():
                times[name].append(wall_ms(command, root))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.reps} reps, medians (min-max) in ms; floor = python -c pass")
    for name, values in times.items():
        print(
            f"{name:>8} {med[name]:8.1f}  ({min(values):.1f}-{max(values):.1f})  floor x{med[name] / med['floor']:.1f}"
        )
    print(
        f"RESULT help_ms={med['help']:.0f} runs_ms={med['runs']:.0f} read_ms={med['read']:.0f} "
        f"inspect_ms={med['inspect']:.0f} floor_ms={med['floor']:.0f}"
    )


if __name__ == "__main__":
    main()
