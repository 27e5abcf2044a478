-- pg_platform bootstrap: group roles for least privilege.
-- Roles are cluster-wide: they are created when missing and never dropped by
-- DROP EXTENSION (other databases or objects may still use them).
DO $bootstrap$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['platform_admin', 'platform_developer', 'platform_readonly',
                             'platform_auditor', 'platform_pii_reader']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$bootstrap$;

COMMENT ON SCHEMA platform IS 'pg_platform: functions, views and configuration of the payments platform extension';

-- The extension schema is private by default; each group role sees what it needs.
REVOKE ALL ON SCHEMA platform FROM PUBLIC;
GRANT USAGE ON SCHEMA platform TO platform_admin, platform_developer, platform_readonly,
                                  platform_auditor, platform_pii_reader;
