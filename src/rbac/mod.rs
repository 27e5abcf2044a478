//! Least-privilege access model: the extension's group roles and `platform.apply_rbac`.
//!
//! The five NOLOGIN group roles are created by `sql/bootstrap.sql`. A DBA grants them to
//! login roles; `apply_rbac` gives them their rights on an application schema.

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::SqlError;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;

/// The group roles, in the order `\du` users expect to read them.
pub const GROUP_ROLES: [&str; 5] = [
    "platform_admin",
    "platform_developer",
    "platform_readonly",
    "platform_auditor",
    "platform_pii_reader",
];

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("schema \"{0}\" does not exist")]
    NoSuchSchema(String),
    #[error("schema \"{0}\" is a system or extension schema; apply_rbac manages application schemas only")]
    ProtectedSchema(String),
}

impl SqlError for RbacError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NoSuchSchema(_) => PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            Self::ProtectedSchema(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NoSuchSchema(s) => format!(
                "Create it first (CREATE SCHEMA {}) or check the spelling.",
                quote_identifier(s)
            ),
            Self::ProtectedSchema(_) => "Name a schema that holds application tables.".into(),
        })
    }
}

/// Grants the seed access model on an application schema: `platform_admin` gets every
/// privilege, `platform_developer` SELECT/INSERT/UPDATE/DELETE (and sequence use),
/// `platform_readonly` SELECT, PUBLIC nothing. The schema is recorded in
/// `platform.rbac_schema`; an event trigger extends the grants to every table, view,
/// sequence or function created there later, whoever creates it (default privileges alone
/// only cover named creators). Idempotent: running it again changes nothing.
#[pg_extern]
fn apply_rbac(schema_name: crate::sql::UnconvertedText) {
    let schema_name = schema_name.as_str();
    let owner = crate::sql::read::<String>(
        "SELECT pg_catalog.pg_get_userbyid(nspowner)::text FROM pg_catalog.pg_namespace WHERE nspname = $1",
        &[schema_name.into()],
    );
    let Some(owner) = owner else {
        crate::error::raise(RbacError::NoSuchSchema(schema_name.into()));
    };
    if schema_name.starts_with("pg_")
        || schema_name == "information_schema"
        || schema_name == "platform"
    {
        crate::error::raise(RbacError::ProtectedSchema(schema_name.into()));
    }
    let s = quote_identifier(schema_name);
    let mut sql = vec![
        format!("REVOKE ALL ON SCHEMA {s} FROM PUBLIC"),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM PUBLIC"),
        format!("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC"),
        format!("GRANT USAGE, CREATE ON SCHEMA {s} TO platform_admin"),
        format!("GRANT USAGE ON SCHEMA {s} TO platform_developer, platform_readonly"),
    ];
    sql.extend(grants(
        &format!("ALL TABLES IN SCHEMA {s}"),
        &format!("ALL SEQUENCES IN SCHEMA {s}"),
        &format!("ALL FUNCTIONS IN SCHEMA {s}"),
    ));

    // Default privileges only apply to objects created by the role they are declared for:
    // cover the schema owner, the caller and the admins who will add tables later.
    // ALTER DEFAULT PRIVILEGES FOR ROLE needs membership in that role: skip the ones the
    // caller cannot speak for (a superuser speaks for all).
    let creators = crate::sql::read::<Vec<String>>(
        "SELECT array_agg(DISTINCT r ORDER BY r) FROM unnest(ARRAY[$1, current_user::text, 'platform_admin']) AS r
          WHERE pg_catalog.pg_has_role(current_user, r, 'MEMBER')",
        &[owner.into()],
    )
    .unwrap_or_default();
    for creator in creators.iter() {
        let prefix = format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {s}",
            quote_identifier(creator)
        );
        sql.push(format!("{prefix} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"));
        sql.extend(
            grants("TABLES", "SEQUENCES", "FUNCTIONS")
                .into_iter()
                .map(|g| format!("{prefix} {g}")),
        );
    }
    sql.push(format!(
        "INSERT INTO platform.rbac_schema (schema_name) VALUES ({}) ON CONFLICT (schema_name) DO NOTHING",
        pgrx::spi::quote_literal(schema_name)
    ));
    for statement in sql {
        crate::sql::run(&statement);
    }
}

// The registry of managed schemas (kept by pg_dump) and the event trigger that keeps
// objects created later in them under the access model.
pgrx::extension_sql!(
    r#"
CREATE TABLE platform.rbac_schema (
    schema_name text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.rbac_schema IS 'Application schemas under pg_platform''s access model (platform.apply_rbac).';
SELECT pg_catalog.pg_extension_config_dump('platform.rbac_schema', '');
GRANT SELECT, INSERT ON platform.rbac_schema TO platform_admin;
GRANT SELECT ON platform.rbac_schema TO platform_auditor;

-- SECURITY DEFINER: the DDL's author may not see the platform schema, and granting on a
-- new object must not depend on who created it.
CREATE FUNCTION platform.apply_rbac_to_new_objects() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    s text;
BEGIN
    FOR s IN
        SELECT DISTINCT c.schema_name
          FROM pg_event_trigger_ddl_commands() c
          JOIN platform.rbac_schema r ON r.schema_name = c.schema_name
    LOOP
        PERFORM platform.apply_rbac(s);
    END LOOP;
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.apply_rbac_to_new_objects() FROM PUBLIC;

CREATE EVENT TRIGGER platform_rbac_new_objects ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE VIEW',
                 'CREATE MATERIALIZED VIEW', 'CREATE SEQUENCE', 'CREATE FUNCTION',
                 'CREATE PROCEDURE', 'CREATE FOREIGN TABLE')
    EXECUTE FUNCTION platform.apply_rbac_to_new_objects();
"#,
    name = "rbac_registry",
    requires = [apply_rbac],
);

/// The grant statements of the access model for the given object classes.
fn grants(tables: &str, sequences: &str, functions: &str) -> Vec<String> {
    vec![
        format!("GRANT ALL ON {tables} TO platform_admin"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO platform_developer"),
        format!("GRANT SELECT ON {tables} TO platform_readonly"),
        format!("GRANT ALL ON {sequences} TO platform_admin"),
        format!("GRANT USAGE, SELECT ON {sequences} TO platform_developer"),
        format!("GRANT SELECT ON {sequences} TO platform_readonly"),
        format!("GRANT EXECUTE ON {functions} TO platform_admin, platform_developer"),
    ]
}
