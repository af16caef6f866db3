-- Run once, on the first start of Temporal's PostgreSQL (an empty data volume), by the postgres
-- image's /docker-entrypoint-initdb.d. POSTGRES_DB creates `temporal`; visibility needs its own.
CREATE DATABASE temporal_visibility;
