#!/bin/sh
# First start of the compose PostgreSQL: the databases and roles the Veil nodes use.
# In production each unit's database already exists; only the two roles and the ledger
# schema below are what a unit's DBA adds for Veil.
set -eu
: "${VEIL_DB_PASSWORD:?set VEIL_DB_PASSWORD}"
here="$(dirname "$0")"   # /docker-entrypoint-initdb.d in the postgres image

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$VEIL_DB_PASSWORD" <<'SQL'
CREATE ROLE veil_platform LOGIN PASSWORD :'pw';
CREATE ROLE veil_reader   LOGIN PASSWORD :'pw';   -- providers read the units' tables
CREATE ROLE veil_ledger   LOGIN PASSWORD :'pw';   -- providers write their own ledger
CREATE DATABASE veil_platform OWNER veil_platform;
CREATE DATABASE scjg;    -- stands in for the market regulator's database (samr)
CREATE DATABASE zsxt;    -- stands in for the tax bureau's database
CREATE DATABASE shbx;    -- stands in for the social-insurance agency's database
SQL

# Each unit: its own tables (units/*.sql), read-only access for veil_reader, and a
# schema "veil" owned by veil_ledger for the provider's ledger.
for pair in scjg:samr-scjg.sql zsxt:tax-zsxt.sql shbx:social-insurance-shbx.sql; do
  db="${pair%%:*}"
  schema_sql="$here/units/${pair#*:}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" -f "$schema_sql"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" <<'SQL'
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\_%'
  LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO veil_reader', s);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO veil_reader', s);
  END LOOP;
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA veil AUTHORIZATION veil_ledger;
SQL
done
