-- Job leases (storage/jobs.py): a running job is held by its worker until lease_expires (seconds since the epoch),
-- which the worker renews while it trains; a job whose lease expired is claimed again. One job per model runs.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires DOUBLE PRECISION;
UPDATE jobs SET lease_expires = 0 WHERE status = 'running';
UPDATE jobs SET status = 'interrupted', error = 'the server stopped while the job was running'
    WHERE status = 'running' AND seq NOT IN (SELECT max(seq) FROM jobs WHERE status = 'running' GROUP BY model);
CREATE UNIQUE INDEX jobs_one_running ON jobs (model) WHERE status = 'running';
