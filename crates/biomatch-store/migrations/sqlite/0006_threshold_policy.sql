-- A threshold kept at a target FPIR as the gallery grows: the target, the impostor distribution
-- it is read from and the evidence of the last derivation, as JSON; empty for a fixed threshold.
ALTER TABLE galleries ADD COLUMN threshold_policy TEXT NOT NULL DEFAULT '';
