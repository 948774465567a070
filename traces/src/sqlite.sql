-- A small sqlite3 workload for `mallard record -- sqlite3 :memory:` (SQL on stdin): a table
-- filled by a recursive CTE, an index, joins, aggregates, updates and deletes. Deterministic.
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO items SELECT i, 'item-' || i || '-' || substr('abcdefghij', 1 + i % 10), i % 97, (i * 37) % 1000 / 10.0 FROM n;
CREATE INDEX items_grp ON items(grp, price);
CREATE TABLE groups AS SELECT grp, count(*) AS n, avg(price) AS mean FROM items GROUP BY grp;
SELECT g.grp, g.n, round(g.mean, 2), max(i.name) FROM groups g JOIN items i ON i.grp = g.grp WHERE i.price > 50 GROUP BY g.grp ORDER BY g.mean DESC LIMIT 5;
UPDATE items SET name = upper(name) || '-x' WHERE id % 3 = 0;
DELETE FROM items WHERE id % 5 = 0;
SELECT count(*), sum(length(name)) FROM items;
SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY price DESC, id LIMIT 200);
