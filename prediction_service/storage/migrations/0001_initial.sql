-- The service's records in PostgreSQL: the same tables as the SQLite files of the embedded mode
-- (storage/jobs.py, examples.py, predictions.py, shadows.py), plus the serving and shadow pointers.
-- Applied once, in order, by storage.postgres.migrate; never edit a file that has shipped: add the next one.

CREATE TABLE jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    upload TEXT NOT NULL,
    params TEXT NOT NULL,
    progress TEXT,
    history TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    error TEXT,
    trigger TEXT NOT NULL DEFAULT 'upload'
);
CREATE INDEX jobs_status ON jobs (status, seq);
-- At most one automatic job per model waits or runs, whichever process or host tries to add another.
CREATE UNIQUE INDEX jobs_one_automatic ON jobs (model) WHERE trigger = 'automatic' AND status IN ('queued', 'running');

CREATE TABLE examples (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    source TEXT NOT NULL,
    prediction_id TEXT UNIQUE,
    label TEXT NOT NULL,
    input BYTEA NOT NULL,
    input_dtype TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX examples_model ON examples (model, id);

CREATE TABLE prediction_batches (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    ids TEXT NOT NULL,
    versions TEXT NOT NULL,
    answers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    inputs BYTEA NOT NULL,
    input_dtype TEXT NOT NULL,
    input_shape TEXT NOT NULL
);
CREATE INDEX prediction_batches_ids ON prediction_batches (last_id, first_id);
CREATE INDEX prediction_batches_rows ON prediction_batches (seq, rows);

CREATE TABLE shadow_figures (
    model TEXT NOT NULL,
    shadow_version INTEGER NOT NULL,
    compared BIGINT NOT NULL DEFAULT 0,
    agreed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0,
    labelled BIGINT NOT NULL DEFAULT 0,
    shadow_correct BIGINT NOT NULL DEFAULT 0,
    serving_correct BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model, shadow_version)
);
CREATE TABLE shadow_answers (
    seq BIGSERIAL PRIMARY KEY,
    key BIGINT NOT NULL,
    prediction_id TEXT NOT NULL,
    model TEXT NOT NULL,
    shadow_version INTEGER NOT NULL,
    serving_answer TEXT NOT NULL,
    shadow_answer TEXT NOT NULL,
    label TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX shadow_answers_key ON shadow_answers (key);

-- Every move of a model's serving or shadow pointer, never updated: the newest row of a (model, pointer) is
-- where it points now, and the rows before it are its history (which version served from when to when).
CREATE TABLE pointer_changes (
    seq BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    pointer TEXT NOT NULL CHECK (pointer IN ('serving', 'shadow')),
    version INTEGER,  -- NULL: the shadow ended
    changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX pointer_changes_current ON pointer_changes (model, pointer, seq);
