# A small CPython workload for `mallard record` (run with PYTHONMALLOC=malloc so that every
# object allocation reaches malloc): build records, serialise them to JSON and back, index,
# sort and summarise them. Deterministic.
import json

records = []
for i in range(4000):
    records.append({
        "id": i,
        "name": "user%05d" % i,
        "tags": ["t%d" % (i % 7), "g%d" % (i % 13)],
        "score": (i * 7919) % 1000 / 10.0,
    })
text = json.dumps(records)
back = json.loads(text)
by_tag = {}
for r in back:
    for t in r["tags"]:
        by_tag.setdefault(t, []).append(r["id"])
ranked = sorted(back, key=lambda r: (-r["score"], r["name"]))[:100]
words = " ".join(r["name"] for r in ranked).split()
summary = {t: len(ids) for t, ids in sorted(by_tag.items())}
print(len(text), len(words), summary["t0"])
