"""`make fuzz`: the property suite under the `long` profile, round after round, until the time is spent.

Each round is one pytest run of tests/properties with a fresh seed and its own sidecar;
failing examples are kept in `.pytest_cache/hypothesis` and replayed first by the next
round (or the next `make fuzz`). The run stops at the first failing round (exit 1) or
when another round would not fit in `--minutes` (exit 0).

    python -m tests.properties --minutes 25 --examples 300
"""

import argparse
import os
import random
import subprocess
import sys
import time

from tests.properties.conftest import EXAMPLES_ENV, PROFILE_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="time budget of the whole run (default 25)")
    parser.add_argument("--examples", type=int, default=300, help="sequences per test in one round (default 300)")
    args = parser.parse_args(argv)
    budget = args.minutes * 60
    started = time.monotonic()
    env = {**os.environ, PROFILE_ENV: "long", EXAMPLES_ENV: str(args.examples)}
    last = 0.0
    rounds = 0
    while (spent := time.monotonic() - started) + last < budget:
        rounds += 1
        seed = random.randrange(2**32)
        print(
            f"==> fuzz round {rounds}: seed {seed}, {args.examples} sequences per test, {spent / 60:.1f} min spent",
            flush=True,
        )
        round_started = time.monotonic()
        command = [sys.executable, "-m", "pytest", "tests/properties", "-q", f"--hypothesis-seed={seed}"]
        try:
            code = subprocess.run(command, env=env, timeout=budget - spent + 300, check=False).returncode
        except subprocess.TimeoutExpired:
            print("==> fuzz: the round ran past the budget and was stopped; nothing failed until then")
            return 0
        last = time.monotonic() - round_started
        if code != 0:
            print(f"==> fuzz: round {rounds} (seed {seed}) failed; its examples are replayed by the next run")
            return 1
    print(f"==> fuzz: {rounds} rounds passed in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
