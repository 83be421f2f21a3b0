-- A gallery's search settings (IVF probes, re-rank depth) chosen by tuning on its own data or
-- pinned by an operator, with the measurement behind them, as JSON; empty until first tuned.
ALTER TABLE galleries ADD COLUMN search_tuning TEXT NOT NULL DEFAULT '';
