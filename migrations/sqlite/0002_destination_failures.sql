-- jetpost store, SQLite schema v2: consecutive failed attempts per destination, for delivery
-- alerts (Outpost's 50/70/90/100 % thresholds and auto-disable). Updated in the transaction that
-- records each attempt; reset by a successful attempt and by enabling the destination.
ALTER TABLE destinations ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
