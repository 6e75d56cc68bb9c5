-- The holds that lapse, by when: the waitlist worker's sweep asks for those whose lapse has passed
-- (and not yet marked expired, which deletes their rows). Bookings have no lapse and stay out.
CREATE INDEX occupancy_lapsing ON occupancy (expire_us) WHERE expire_us IS NOT NULL;
