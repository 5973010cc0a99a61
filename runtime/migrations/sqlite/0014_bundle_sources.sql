-- The `.eflow` files a bundle was compiled from on the server (a deploy of
-- sources), for people reading a flow in the console; NULL for a bundle
-- deployed as IR. A JSON object of file name to text.
ALTER TABLE bundles ADD COLUMN sources BLOB;
