"""``./stack bench [name ...] [options]``: run the named benchmarks (all when none is named).

Options belong to one benchmark (``./stack bench scheduler_place --vfs=8000``) and are parsed
by its own parser, which refuses flags it does not know.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    chosen, options = argv[:split] or names, argv[split:]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    if options and len(chosen) != 1:
        if options in (["-h"], ["--help"]):
            print(f"{__doc__.strip()}\n\nbenchmarks: {', '.join(names)}")
            return 0
        print(f"options {' '.join(options)} belong to one benchmark: name it first "
              f"(./stack bench NAME {' '.join(options)})", file=sys.stderr)  # fmt: skip
        return 2
    for name in chosen:
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"bench.{name}").main(options)
        print(f"== bench {name} done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
