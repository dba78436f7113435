-- History of every mention, KPI snapshot, alert, action and account reading, for months.
-- Time-ranged tables are partitioned by month (partitions are created by the sink as data arrives and dropped
-- past ECOUTE_HISTORY_MONTHS). Each row keeps the record it came from (`doc`) next to the columns queried.

-- Kafka positions the sink has written up to, updated in the same transaction as the rows (exactly once).
CREATE TABLE sink_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The text search configuration for a mention's language: stemming for English and French, none otherwise.
CREATE FUNCTION ecoute_ts_config(lang text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE lang WHEN 'en' THEN 'english'::regconfig WHEN 'fr' THEN 'french'::regconfig
                     ELSE 'simple'::regconfig END
$$;

-- One row per (brand, scored mention): what search and reports read.
CREATE TABLE mentions (
    brand         text             NOT NULL,
    id            text             NOT NULL,
    published_at  timestamptz      NOT NULL,
    source        text             NOT NULL,
    site          text,
    url           text,
    author        text,            -- the author's id, else handle, else name (what unique authors count)
    author_handle text,
    reach         bigint           NOT NULL DEFAULT 0,
    lang          text,
    label         text             NOT NULL,   -- positive | neutral | negative | unscored
    compound      double precision NOT NULL,
    topics        text[]           NOT NULL DEFAULT '{}',
    likes         bigint           NOT NULL DEFAULT 0,
    shares        bigint           NOT NULL DEFAULT 0,
    comments      bigint           NOT NULL DEFAULT 0,
    title         text,
    body          text             NOT NULL,
    doc           jsonb            NOT NULL,   -- the scored-mention/1 record
    search        tsvector GENERATED ALWAYS AS (
                      to_tsvector(ecoute_ts_config(lang), coalesce(title, '') || ' ' || body)) STORED,
    PRIMARY KEY (brand, published_at, id)
) PARTITION BY RANGE (published_at);
CREATE INDEX mentions_search ON mentions USING gin (search);
CREATE INDEX mentions_author ON mentions (brand, author, published_at);

-- kpi/1 snapshots, the latest per (brand, window, start): what the live topic compacts, kept for months.
CREATE TABLE kpi_snapshots (
    brand          text             NOT NULL,
    window_name    text             NOT NULL,
    start          timestamptz      NOT NULL,
    "end"          timestamptz      NOT NULL,
    mentions       bigint           NOT NULL,
    positive       bigint           NOT NULL,
    neutral        bigint           NOT NULL,
    negative       bigint           NOT NULL,
    sentiment_sum  double precision NOT NULL,
    likes          bigint           NOT NULL,
    shares         bigint           NOT NULL,
    comments       bigint           NOT NULL,
    reach          bigint           NOT NULL,
    unique_authors bigint           NOT NULL,
    updated_at     timestamptz      NOT NULL,
    doc            jsonb            NOT NULL,   -- the kpi/1 record
    PRIMARY KEY (brand, window_name, start)
) PARTITION BY RANGE (start);

CREATE TABLE alerts (
    id           text        NOT NULL,
    brand        text        NOT NULL,
    kind         text        NOT NULL,
    severity     text        NOT NULL,
    created_at   timestamptz NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    message      text        NOT NULL,
    doc          jsonb       NOT NULL,   -- the alert/1 record
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX alerts_brand ON alerts (brand, created_at);

-- Acks and handled marks: the compacted alerts.actions topic as a table (a tombstone deletes the row).
CREATE TABLE actions (
    key   text        PRIMARY KEY,   -- alert:<id> | mention:<brand>:<id>
    brand text        NOT NULL,
    kind  text        NOT NULL,      -- ack | handled
    at    timestamptz NOT NULL,
    doc   jsonb       NOT NULL
);
CREATE INDEX actions_brand ON actions (brand, at);

-- account-metric/1 readings (followers, subscribers, inbound links…), every one kept.
CREATE TABLE account_metrics (
    brand    text             NOT NULL,
    platform text             NOT NULL,
    metric   text             NOT NULL,
    at       timestamptz      NOT NULL,
    value    double precision NOT NULL,
    PRIMARY KEY (brand, platform, metric, at)
) PARTITION BY RANGE (at);

-- Digests sent, one per brand and period: a restarted scheduler does not send one twice.
CREATE TABLE digests (
    brand        text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    doc          jsonb       NOT NULL,
    PRIMARY KEY (brand, period_start)
);
