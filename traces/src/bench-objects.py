# The recorder-cost benchmark of docs/recording.md: many small objects; run with
# PYTHONMALLOC=malloc so that every one is a malloc call (about 10.8 million calls).
# Many small objects: every allocation reaches malloc under PYTHONMALLOC=malloc.
class Node:
    __slots__ = ("key", "value", "next")
    def __init__(self, key, value, nxt):
        self.key = key; self.value = value; self.next = nxt
total = 0
for round in range(30):
    head = None
    d = {}
    for i in range(20000):
        head = Node(i, str(i) * 2, head)
        d[(i, round)] = [i, float(i), head.value]
    total += len(d)
    del d, head
print(total)
