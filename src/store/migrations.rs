//! Schema migrations: the SQL files under `migrations/<backend>/` are embedded in the binary and
//! applied with sqlx's migrator (bookkeeping in `_sqlx_migrations`, checksums verified); this
//! module also tells `serve --no-migrate` what is pending.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::error::{Result, StoreError};

/// One migration file, embedded with `include_str!`.
#[derive(Debug)]
pub(crate) struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A migration this binary knows and the database has not applied yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
}

pub(crate) fn migrator(embedded: &'static [EmbeddedMigration]) -> Migrator {
    Migrator::with_migrations(
        embedded
            .iter()
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    m.sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Compares the embedded migrations with the applied ones (`None`: never migrated).
pub(crate) fn pending(
    embedded: &'static [EmbeddedMigration],
    applied: Option<&[(i64, bool)]>,
) -> Result<Vec<MigrationInfo>> {
    let applied = applied.unwrap_or_default();
    if let Some((version, _)) = applied.iter().find(|(_, success)| !success) {
        return Err(StoreError::DirtySchema { version: *version });
    }
    if let Some((version, _)) = applied
        .iter()
        .find(|(v, _)| !embedded.iter().any(|m| m.version == *v))
    {
        return Err(StoreError::SchemaTooNew { version: *version });
    }
    Ok(embedded
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::Dialect;

    /// Every file in `migrations/<backend>/` is embedded, with the version its name carries.
    fn assert_embeds_directory(dir: &str, embedded: &[EmbeddedMigration]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| {
                let (v, _) = n.split_once('_').unwrap();
                let sql = std::fs::read_to_string(dir.join(&n)).unwrap();
                (v.parse().unwrap(), sql)
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String)> = embedded
            .iter()
            .map(|m| (m.version, m.sql.to_string()))
            .collect();
        assert_eq!(files, embedded, "{}", dir.display());
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_embeds_directory("migrations/sqlite", sqlx::Sqlite::MIGRATIONS);
        assert_embeds_directory("migrations/postgres", sqlx::Postgres::MIGRATIONS);
    }

    #[test]
    fn pending_lists_unapplied_and_refuses_unknown_or_failed() {
        static EMBEDDED: [EmbeddedMigration; 2] = [
            EmbeddedMigration {
                version: 1,
                description: "one",
                sql: "",
            },
            EmbeddedMigration {
                version: 2,
                description: "two",
                sql: "",
            },
        ];
        assert_eq!(pending(&EMBEDDED, None).unwrap().len(), 2);
        let p = pending(&EMBEDDED, Some(&[(1, true)])).unwrap();
        assert_eq!(p.iter().map(|m| m.version).collect::<Vec<_>>(), vec![2]);
        assert!(
            pending(&EMBEDDED, Some(&[(1, true), (2, true)]))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            pending(&EMBEDDED, Some(&[(1, true), (3, true)])),
            Err(StoreError::SchemaTooNew { version: 3 })
        ));
        assert!(pending(&EMBEDDED, Some(&[(1, false)])).is_err());
    }
}
