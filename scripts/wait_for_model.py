"""Wait until a server answers GetModelStatus for MODEL with an AVAILABLE version.

    python scripts/wait_for_model.py 127.0.0.1:8500 text --timeout 60 [--min-version 2]
"""

from __future__ import annotations

import argparse
import sys
import time

from genserve.clients import Client, GenserveError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("model")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--min-version", type=int, default=1)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    with Client(args.target, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                versions = client.status(args.model)
                ready = [v for v, state in versions if state == "AVAILABLE" and v >= args.min_version]
                if ready:
                    print(f"{args.model}: version {max(ready)} is available on {args.target}")
                    return 0
                last = f"versions {versions}"
            except GenserveError as e:
                last = str(e)
            time.sleep(0.5)
    print(f"error: {args.model} not available on {args.target} after {args.timeout:.0f} s ({last})",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
