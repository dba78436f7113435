-- Readings of the brands' own posts (content.items, content-item/1): each post's comments, reposts and likes
-- over time, one row per post and reading, in monthly partitions on the reading time (the history's retention).
-- A count the channel does not give (likes on a blog) is NULL.
CREATE TABLE content_readings (
    brand        text        NOT NULL,
    platform     text        NOT NULL,
    item_id      text        NOT NULL,
    at           timestamptz NOT NULL,
    channel      text        NOT NULL,
    published_at timestamptz NOT NULL,
    url          text,
    comments     bigint,
    reposts      bigint,
    likes        bigint,
    followers    bigint,
    doc          jsonb       NOT NULL,
    PRIMARY KEY (brand, platform, item_id, at)
) PARTITION BY RANGE (at);

-- A brand's posts by publication (content reports: what was published in a period and how it did).
CREATE INDEX content_readings_brand_published ON content_readings (brand, published_at);
