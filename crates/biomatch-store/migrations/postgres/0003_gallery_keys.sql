-- Each gallery's data key is kept outside this store (crypto-shredding); the row names it.
ALTER TABLE galleries ADD COLUMN key_ref TEXT NOT NULL DEFAULT '';
