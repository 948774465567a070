// A plain C++ trace replayer, the reference Mallard's replay is measured against
// (docs/BENCHMARKS.md, "Replay against a plain C++ replayer"). It reads Mallard's CSV form
// (`mallard convert TRACE -o TRACE.csv`), keeps one pointer per object id, replays the
// events in order with the system allocator (or whatever LD_PRELOAD puts in its place),
// writes one byte per 4 KiB page of every allocation, and prints ns per event.
// Build: g++ -O2 -o /tmp/cpp-replay benches/cpp/replay.cpp
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <string>
#include <vector>

struct Ev { char op; unsigned long id, new_id, size, align; };

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s TRACE.csv\n", argv[0]); return 2; }
    FILE* f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    std::vector<Ev> evs;
    char line[512];
    unsigned long max_id = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || strncmp(line, "thread", 6) == 0) continue;
        // thread,timestamp_ns,op,id,new_id,size,align
        char* fields[7] = {0};
        int n = 0;
        for (char* p = line; n < 7; ) { fields[n++] = p; char* c = strchr(p, ','); if (!c) break; *c = 0; p = c + 1; }
        Ev e{};
        const char* op = fields[2];
        e.op = strcmp(op, "free") == 0 ? 'f' : strcmp(op, "realloc") == 0 ? 'r' : strcmp(op, "calloc") == 0 ? 'c'
             : strcmp(op, "aligned") == 0 ? 'a' : 'm';
        e.id = strtoul(fields[3], 0, 10);
        e.new_id = fields[4] && *fields[4] ? strtoul(fields[4], 0, 10) : 0;
        e.size = fields[5] && *fields[5] ? strtoul(fields[5], 0, 10) : 0;
        e.align = fields[6] && *fields[6] ? strtoul(fields[6], 0, 10) : 0;
        if (e.id > max_id) max_id = e.id;
        if (e.new_id > max_id) max_id = e.new_id;
        evs.push_back(e);
    }
    std::vector<void*> ptrs(max_id + 1, nullptr);
    for (size_t i = 0; i < ptrs.size(); i += 512) ptrs[i] = nullptr;  // fault the table in
    malloc_trim(0);
    auto touch = [](void* p, unsigned long size) {
        for (unsigned long o = 0; o < size; o += 4096) static_cast<volatile char*>(p)[o] = 1;
    };
    auto t0 = std::chrono::steady_clock::now();
    for (const Ev& e : evs) {
        switch (e.op) {
        case 'm': ptrs[e.id] = malloc(e.size); touch(ptrs[e.id], e.size); break;
        case 'c': ptrs[e.id] = calloc(1, e.size); touch(ptrs[e.id], e.size); break;
        case 'a': { void* p = nullptr; if (posix_memalign(&p, e.align < 8 ? 8 : e.align, e.size)) p = nullptr;
                    ptrs[e.id] = p; touch(p, e.size); break; }
        case 'r': ptrs[e.new_id] = realloc(ptrs[e.id], e.size); ptrs[e.id] = nullptr; touch(ptrs[e.new_id], e.size); break;
        case 'f': free(ptrs[e.id]); ptrs[e.id] = nullptr; break;
        }
    }
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    printf("%.3f ns/event (%zu events, %.3f ms)\n", ns / evs.size(), evs.size(), ns / 1e6);
    return 0;
}
