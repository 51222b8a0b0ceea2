"""Wait until a server answers GetModelStatus for MODEL with an AVAILABLE version.

    python scripts/wait_for_model.py 127.0.0.1:8500 text --timeout 60 [--min-version 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import wait_for_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("model")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--min-version", type=int, default=1)
    args = parser.parse_args()
    try:
        version = wait_for_model(args.target, args.model, args.timeout, args.min_version)
    except (TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model}: version {version} is available on {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
