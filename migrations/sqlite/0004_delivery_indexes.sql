-- jetpost store, schema v4: fewer index entries per delivery.
-- A delivery used to enter four indexes and leave or move in three of them: `deliveries_due`
-- kept every finished row, and `deliveries_in_flight` repeated `deliveries_queue` for leased
-- rows. Now only unfinished deliveries are indexed for the claim, once each:
-- - `deliveries_queue` (one queue per destination, in status then due order) serves the
--   claim's skip-scan over destinations, its due candidates and its in-flight count;
-- - `deliveries_due` serves "when is the next delivery due" (its first entry) and the
--   pending count. Due time first: led by status, Postgres' planner took it for a
--   destination's lease count and read every lease of every destination.
-- A finished delivery leaves both; the claim's indexes hold only the work still to do.
DROP INDEX deliveries_in_flight;
DROP INDEX deliveries_queue;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_queue ON deliveries (tenant_id, destination_id, status, next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, status)
    WHERE status IN ('pending', 'delivering');
