-- A sealed template is ciphertext: PostgreSQL's attempt to compress each one (pglz, on every
-- insert of a row over ~2 KB, i.e. any 512-d template) costs CPU and never saves a byte. It is
-- still stored out of line when large.
ALTER TABLE templates ALTER COLUMN vector SET STORAGE EXTERNAL;
