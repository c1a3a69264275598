"""`remedium worker` under tracemalloc, for bench/idle.py --trace-memory (never the product).

The worker is the product's own (`remedium.cli.main.main(["worker"])`); this wrapper only
starts tracemalloc first and, on SIGUSR1, writes what Python holds to the file named by
REMEDIUM_BENCH_MEMPROBE_OUT: the top allocation sites by file and by line, the traced total,
and the live object counts by type. What tracemalloc does not see (the Rust core, the
allocator's free lists) is the RSS minus the traced total.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def _dump(signum: int, frame: FrameType | None) -> None:
    out = Path(os.environ["REMEDIUM_BENCH_MEMPROBE_OUT"])
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ]
    )
    by_file = snapshot.statistics("filename")
    by_line = snapshot.statistics("lineno")
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    record = {
        "traced_mb": round(sum(s.size for s in by_file) / 2**20, 1),
        "top_files": [
            {"file": str(s.traceback[0].filename), "mb": round(s.size / 2**20, 2), "blocks": s.count}
            for s in by_file[:25]
        ],
        "top_lines": [
            {"at": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "mb": round(s.size / 2**20, 2)}
            for s in by_line[:25]
        ],
        "gc_objects_by_type": dict(types.most_common(25)),
    }
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(out)  # the bench reads it only once whole


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _dump)
    from remedium.cli.main import main

    code = main(["worker"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
