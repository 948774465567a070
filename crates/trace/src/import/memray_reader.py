# Reads a memray capture with memray's own reader and writes its allocation records to
# stdout for Mallard's memray importer (crates/trace/src/import/memray.rs), one line each:
#
#   memray VERSION trace_python_allocators=0|1 python_allocator=NAME   (first line)
#   allocators NUMBER=NAME ...                                          (memray's AllocatorType)
#   ALLOCATOR TID ADDRESS SIZE                                          (decimal, address hex)
#   end RECORDS                                                         (last line)
#
# Exit status: 0 done; 3 the memray package is missing; 2 memray cannot read the file (the
# reason on stderr).
import sys

try:
    import memray
except ImportError:
    sys.exit(3)

try:
    reader = memray.FileReader(sys.argv[1])
    meta = reader.metadata
    out = sys.stdout
    out.write(
        "memray %s trace_python_allocators=%d python_allocator=%s\n"
        % (
            getattr(memray, "__version__", "unknown"),
            int(bool(meta.trace_python_allocators)),
            meta.python_allocator or "unknown",
        )
    )
    out.write(
        "allocators %s\n"
        % " ".join("%d=%s" % (int(v), k) for k, v in memray.AllocatorType.__members__.items())
    )
    n = 0
    lines = []
    for r in reader.get_allocation_records():
        lines.append("%d %d %x %d\n" % (int(r.allocator), r.tid, r.address, r.size))
        if len(lines) == 8192:
            out.write("".join(lines))
            n += len(lines)
            lines.clear()
    out.write("".join(lines))
    n += len(lines)
    out.write("end %d\n" % n)
    out.flush()
except BrokenPipeError:
    sys.exit(0)
except Exception as e:  # memray's reader raises plain exceptions for unreadable files
    sys.stderr.write("%s\n" % e)
    sys.exit(2)
