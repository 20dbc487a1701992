-- title: count star
SELECT COUNT(*) FROM Object
-- parallel:
SELECT COUNT(*) AS _a0 FROM Object
-- merge:
SELECT CAST(COALESCE(SUM(_a0), 0) AS BIGINT) AS _c0 FROM partials

-- title: avg with group by and order by alias
SELECT kind, AVG(gMag) AS g FROM Object GROUP BY kind ORDER BY g DESC
-- parallel:
SELECT kind AS _g0, SUM(gMag) AS _a0, COUNT(gMag) AS _a1 FROM Object GROUP BY kind
-- merge:
SELECT _g0 AS _c0, SUM(_a0) / NULLIF(SUM(_a1), 0) AS _c1 FROM partials GROUP BY _g0 ORDER BY _c1 DESC

-- title: population stddev and variance
SELECT STDDEV(gMag), VARIANCE(rMag) FROM Object
-- parallel:
SELECT COUNT(gMag) AS _a0, AVG(CAST(gMag AS DOUBLE)) AS _a1, VAR_POP(CAST(gMag AS DOUBLE)) * COUNT(gMag) AS _a2, COUNT(rMag) AS _a3, AVG(CAST(rMag AS DOUBLE)) AS _a4, VAR_POP(CAST(rMag AS DOUBLE)) * COUNT(rMag) AS _a5 FROM Object
-- merge:
SELECT SQRT(GREATEST(SUM(COALESCE(_a2, 0)) + SUM(_a0 * _a1 * _a1) - CAST(SUM(_a0) AS DOUBLE) * (SUM(_a0 * _a1) / NULLIF(CAST(SUM(_a0) AS DOUBLE), 0)) * (SUM(_a0 * _a1) / NULLIF(CAST(SUM(_a0) AS DOUBLE), 0)), 0) / NULLIF(CAST(SUM(_a0) AS DOUBLE), 0)) AS _c0, GREATEST(SUM(COALESCE(_a5, 0)) + SUM(_a3 * _a4 * _a4) - CAST(SUM(_a3) AS DOUBLE) * (SUM(_a3 * _a4) / NULLIF(CAST(SUM(_a3) AS DOUBLE), 0)) * (SUM(_a3 * _a4) / NULLIF(CAST(SUM(_a3) AS DOUBLE), 0)), 0) / NULLIF(CAST(SUM(_a3) AS DOUBLE), 0) AS _c1 FROM partials

-- title: count distinct per group
SELECT flags % 4 AS f, COUNT(DISTINCT nEpochs) FROM Object GROUP BY f
-- parallel:
SELECT flags % 4 AS _g0, nEpochs AS _d FROM Object GROUP BY flags % 4, nEpochs
-- merge:
SELECT _g0 AS _c0, COUNT(DISTINCT _d) AS _c1 FROM partials GROUP BY _g0

-- title: having on an aggregate not selected
SELECT kind FROM Object GROUP BY kind HAVING SUM(nEpochs) > 100
-- parallel:
SELECT kind AS _g0, SUM(nEpochs) AS _a0 FROM Object GROUP BY kind
-- merge:
SELECT _g0 AS _c0 FROM partials GROUP BY _g0 HAVING SUM(_a0) > 100

-- title: top-k with offset pushes limit plus offset
SELECT objectId, gMag FROM Object ORDER BY gMag DESC, objectId LIMIT 5 OFFSET 10
-- parallel:
SELECT objectId AS _c0, gMag AS _c1 FROM Object ORDER BY _c1 DESC, _c0 NULLS FIRST LIMIT 15
-- merge:
SELECT _c0, _c1 FROM partials ORDER BY _c1 DESC, _c0 NULLS FIRST LIMIT 5 OFFSET 10

-- title: order by a column not selected
SELECT objectId FROM Object ORDER BY ra LIMIT 3
-- parallel:
SELECT objectId AS _c0, ra AS _o0 FROM Object ORDER BY _o0 NULLS FIRST LIMIT 3
-- merge:
SELECT _c0 FROM partials ORDER BY _o0 NULLS FIRST LIMIT 3

-- title: distinct rows
SELECT DISTINCT kind FROM Object
-- parallel:
SELECT DISTINCT kind AS _c0 FROM Object
-- merge:
SELECT DISTINCT _c0 FROM partials

-- title: area restrictor becomes an exact predicate
SELECT objectId FROM Object WHERE qserv_areaspec_box(359, -1, 1, 1)
-- parallel:
SELECT objectId AS _c0 FROM Object WHERE SCISQL_S2PTINBOX("Object"."ra", "Object"."decl", 359.0, -1.0, 1.0, 1.0) = 1
-- merge:
SELECT _c0 FROM partials

-- title: director child join with aggregate
SELECT o.kind, COUNT(*) FROM Object o JOIN Source s ON o.objectId = s.objectId GROUP BY o.kind
-- parallel:
SELECT o.kind AS _g0, COUNT(*) AS _a0 FROM Object AS o JOIN Source AS s ON o.objectId = s.objectId GROUP BY o.kind
-- merge:
SELECT _g0 AS _c0, CAST(COALESCE(SUM(_a0), 0) AS BIGINT) AS _c1 FROM partials GROUP BY _g0

-- title: MySQL integer division and logical operators
SELECT nEpochs DIV 3, nEpochs / 3 FROM Object WHERE gMag < 20 || rMag > 23 && flags = 1
-- parallel:
SELECT CAST(TRUNC(nEpochs / NULLIF(3, 0)) AS BIGINT) AS _c0, nEpochs / NULLIF(3, 0) AS _c1 FROM Object WHERE gMag < 20 OR rMag > 23 AND flags = 1
-- merge:
SELECT _c0, _c1 FROM partials

-- title: expression of aggregates
SELECT MAX(gMag) - MIN(gMag) AS spread, SUM(nEpochs) / COUNT(*) FROM Object
-- parallel:
SELECT MAX(gMag) AS _a0, MIN(gMag) AS _a1, SUM(nEpochs) AS _a2, COUNT(*) AS _a3 FROM Object
-- merge:
SELECT MAX(_a0) - MIN(_a1) AS _c0, SUM(_a2) / NULLIF(CAST(COALESCE(SUM(_a3), 0) AS BIGINT), 0) AS _c1 FROM partials
