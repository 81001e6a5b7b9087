"""The long profile of the property-based tests of every option, batch field, server field and flag
(tests/test_properties.py): the same properties, many more examples.

    .venv/bin/python benchmarks/fuzz_options.py                # 20,000 examples per property (several minutes)
    .venv/bin/python benchmarks/fuzz_options.py --examples 2000

Prints how many examples each property ran and whether any failed (pytest's report).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=20_000, help="examples per property")
    args = ap.parse_args()
    env = dict(os.environ, LLAMAVID_FUZZ_EXAMPLES=str(args.examples))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", str(ROOT / "tests" / "test_properties.py")],
                          cwd=ROOT, env=env)
    print(f"{args.examples:,} examples per property, {time.perf_counter() - t0:.0f} s: "
          + ("no failure" if proc.returncode == 0 else "FAILED"))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
