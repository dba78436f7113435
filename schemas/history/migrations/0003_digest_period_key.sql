-- A digest is one brand's report of one period: a weekly and a daily digest may start at the same instant
-- (switching ECOUTE_DIGEST_EVERY), so the period's end is part of the key.
ALTER TABLE digests DROP CONSTRAINT digests_pkey;
ALTER TABLE digests ADD PRIMARY KEY (brand, period_start, period_end);
