"""Run a target server and report where its memory is, on request.

Usage (``bench/idle_memory.py --breakdown`` does it)::

    MEMORY_PROBE_DIR=/tmp/x python bench/memory_probe.py bench/plain_server.py 8000
    MEMORY_PROBE_DIR=/tmp/x python bench/memory_probe.py -m oe_web_socketio -p 8000

Each ``SIGUSR1`` writes ``<n>.json`` (then an empty ``<n>.done``) in
``$MEMORY_PROBE_DIR``, for the n-th signal: the resident memory, what
CPython's small-object allocator (pymalloc) and glibc's ``malloc`` hold,
the greenlets alive by kind (the function at the bottom of their
stack) with the resident pages of each one's Python data stack, and the
objects the garbage collector tracks, by type, with their sizes. With
``MEMORY_PROBE_TRACEMALLOC=1`` it also traces allocations (slower, more
memory) and dumps a :mod:`tracemalloc` snapshot, ``<n>.tracemalloc``.

Caveats: a benchmark tool, reading internals. The data stack pages need
CPython 3.11 or 3.12 on Linux (``/proc/self/pagemap``): since 3.11 each
greenlet's Python frames live in a 16 KiB chunk of its own, of which only
the pages touched are resident, and a frame object still executing points
into it (``f_frame``, the word after ``f_back``). Elsewhere that column is
left out. ``mallinfo2`` needs glibc 2.33.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import re
import runpy
import signal
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")

#: Bytes from a frame object's start to its ``f_frame`` pointer (CPython
#: 3.11/3.12: the object header, then ``f_back``).
F_FRAME_OFFSET = 24

#: What a greenlet's data stack chunk spans (``DATA_STACK_CHUNK_SIZE``).
CHUNK = 16 * 1024


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def malloc_stats() -> dict[str, int]:
    """glibc's main arena: bytes taken from the system, bytes in use."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"malloc_arena": info.arena + info.hblkhd, "malloc_used": info.uordblks}


def pymalloc_stats() -> dict[str, int]:
    """pymalloc: bytes in allocated blocks, and in arenas."""
    import tempfile  # here: the target patches the standard library first

    # sys._debugmallocstats() writes to the C-level stderr only.
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()

    def number(label: str) -> int:
        found = re.search(rf"# {label}\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else 0

    arenas = number("arenas allocated current")
    return {
        "pymalloc_blocks": number("bytes in allocated blocks"),
        # 1 MiB arenas since CPython 3.10.
        "pymalloc_arenas": arenas * 2**20,
    }


def resident_pages(address: int, count: int) -> int:
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // PAGE * 8)
        data = pagemap.read(8 * count)
    return sum(
        1
        for i in range(len(data) // 8)
        if struct.unpack_from("<Q", data, 8 * i)[0] >> 63
    )


def greenlet_stats() -> dict[str, dict[str, float]]:
    """Greenlets alive by kind: count, mean resident data stack pages and
    mean bytes of C stack saved in the heap."""
    import greenlet

    pages_known = sys.version_info[:2] in ((3, 11), (3, 12)) and os.path.exists(
        "/proc/self/pagemap"
    )
    kinds: dict[str, list[int]] = collections.defaultdict(list)
    saved: dict[str, int] = collections.Counter()
    for obj in gc.get_objects():
        if not isinstance(obj, greenlet.greenlet) or obj.dead:
            continue
        frame = obj.gr_frame
        if frame is None:  # the running one
            continue
        while frame.f_back is not None:
            frame = frame.f_back
        pages = -1
        if pages_known:
            # The bottom frame sits at the start of the chunk.
            bottom = ctypes.c_void_p.from_address(id(frame) + F_FRAME_OFFSET).value
            if bottom:
                chunk = bottom & ~(PAGE - 1)
                pages = resident_pages(chunk, CHUNK // PAGE)
        code = frame.f_code
        name = f"{os.path.basename(code.co_filename)}:{code.co_name}"
        kinds[name].append(pages)
        # The bytes of C stack the greenlet keeps in the heap while others run.
        saved[name] += getattr(obj, "_stack_saved", 0)
    return {
        name: {
            "count": len(pages),
            "stack_pages": (sum(pages) / len(pages)) if min(pages) >= 0 else -1,
            "c_stack_saved": saved[name] / len(pages),
        }
        for name, pages in kinds.items()
    }


def object_stats() -> dict[str, list[int]]:
    """The objects the garbage collector tracks (containers: instances,
    dicts, lists, deques, frames...; not strings nor numbers), by type:
    count and bytes (``sys.getsizeof``: the object and its own tables,
    not what it refers to)."""
    kinds: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        kind = type(obj)
        stats = kinds[f"{kind.__module__}.{kind.__qualname__}"]
        stats[0] += 1
        stats[1] += sys.getsizeof(obj, 0)
    return dict(kinds)


#: The ids of the objects the first report saw (``MEMORY_PROBE_OWNERS``).
SEEN: set[int] = set()

#: The types whose new objects :func:`owner_stats` places.
OWNED = (dict, list, tuple, set, collections.deque)


def owner_stats() -> dict[str, list[int]]:
    """The containers (dict, list, tuple, set, deque) created since the
    first report, by where each is held: the type of the object holding
    it, and the key or attribute it is held under (one level up), with
    their count and bytes. Slow: for a few hundred connections."""
    objects = gc.get_objects()
    if not SEEN:
        SEEN.update(map(id, objects))
        return {}
    new = {id(obj): obj for obj in objects if id(obj) not in SEEN}
    wanted = {key for key, obj in new.items() if type(obj) in OWNED}
    owners: dict[int, object] = {}
    for holder in objects:
        for referent in gc.get_referents(holder):
            if id(referent) in wanted and id(referent) not in owners:
                owners[id(referent)] = holder
    # Instances' __dict__: named after the instance that holds them.
    holders_of_dicts = {
        id(vars(obj)): obj
        for obj in objects
        if hasattr(obj, "__dict__")
        and not isinstance(obj, type)
        and isinstance(getattr(obj, "__dict__", None), dict)
    }
    places: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for key in wanted:
        obj = new[key]
        holder = owners.get(key)
        place = "?"
        if holder is not None:
            where = type(holder).__qualname__
            if isinstance(holder, dict):
                name = next((k for k, v in holder.items() if v is obj), "?")
                named = holders_of_dicts.get(id(holder))
                if named is not None:
                    where = type(named).__qualname__ + "." + str(name)
                else:
                    where = f"dict[{str(name)[:24]}]"
            place = where
        stats = places[f"{type(obj).__qualname__} in {place}"]
        stats[0] += 1
        stats[1] += sys.getsizeof(obj, 0)
    return dict(places)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        found = re.search(r"VmRSS:\s+(\d+) kB", status.read())
    return int(found.group(1)) * 1024 if found else 0


def report(signum: int, frame: object) -> None:
    report.count += 1  # type: ignore[attr-defined]
    directory = os.environ["MEMORY_PROBE_DIR"]
    base = os.path.join(directory, str(report.count))  # type: ignore[attr-defined]
    gc.collect()
    stats = {"rss": rss_bytes(), **pymalloc_stats(), **malloc_stats()}
    if TRACING:
        import tracemalloc

        tracemalloc.take_snapshot().dump(base + ".tracemalloc")
    stats["objects"] = object_stats()
    if os.environ.get("MEMORY_PROBE_OWNERS") == "1":
        stats["owners"] = owner_stats()
    # Last: walking the stacks creates a frame object for each frame.
    stats["greenlets"] = greenlet_stats()
    with open(base + ".json", "w") as out:
        json.dump(stats, out)
    with open(base + ".done", "w"):
        pass


report.count = 0  # type: ignore[attr-defined]

TRACING = os.environ.get("MEMORY_PROBE_TRACEMALLOC") == "1"


def main() -> None:
    if TRACING:
        import tracemalloc

        tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, report)
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
