-- Indexes of the mention search (GET /v1/brands/{brand}/mentions/search).

-- author= matches the author column (the id when there is one) or the handle, which people type; without this
-- index a handle was looked for by reading every row of the brand (1.2 s over a million mentions).
CREATE INDEX mentions_author_handle ON mentions (brand, author_handle, published_at);
