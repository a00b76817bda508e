//! The Iceberg SQL catalog (SQLite or Postgres; the catalog pyiceberg,
//! Spark and Trino call JDBC/SQL): the crate's `SqlCatalog` for loads and
//! creations, and [`CatalogRows`], the table rows themselves, for the
//! conditional updates dlog's commits and drops need, which the crate
//! does not offer.

use std::collections::HashMap;
use std::sync::Arc;

use dlog_storage::objstore::ObjectStoreHandle;
use iceberg::{CatalogBuilder, Error, ErrorKind, Result, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{CATALOG_NAME, ObjectStorageFactory, redacted_uri};

/// Opens the SQL catalog at `uri` (`sqlite:///PATH?mode=rwc` or
/// `postgres://...`), creating its tables if missing, and a pool on its
/// rows.
pub(super) async fn open(
    uri: &str,
    objects: &ObjectStoreHandle,
) -> Result<(SqlCatalog, CatalogRows)> {
    let postgres = uri.starts_with("postgres");
    let bind = || {
        if postgres {
            SqlBindStyle::DollarNumeric
        } else {
            SqlBindStyle::QMark
        }
    };
    // The catalog creates its tables if missing; two compactors starting
    // at once race on that in Postgres (the loser's `CREATE TABLE IF NOT
    // EXISTS` fails): the next attempt finds them.
    let mut attempt = 0;
    let catalog = loop {
        attempt += 1;
        let opened = SqlCatalogBuilder::default()
            .uri(uri)
            .warehouse_location(objects.url_of(&objects.prefix))
            .sql_bind_style(bind())
            .with_storage_factory(Arc::new(ObjectStorageFactory::new(objects.clone())))
            .load(CATALOG_NAME, HashMap::new())
            .await;
        match opened {
            Ok(catalog) => break catalog,
            Err(err) if attempt < 5 => {
                let uri = redacted_uri(uri);
                tracing::info!(attempt, "opening the Iceberg catalog {uri}: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            Err(err) => return Err(err),
        }
    };
    let rows = CatalogRows::connect(uri, bind(), CATALOG_NAME).await?;
    Ok((catalog, rows))
}

/// The SQL catalog's table rows, for the compare-and-swap of a table's
/// metadata location (the `iceberg_tables` table every SQL/JDBC catalog
/// implementation shares).
pub struct CatalogRows {
    pool: AnyPool,
    bind: SqlBindStyle,
    catalog: String,
}

impl CatalogRows {
    pub async fn connect(uri: &str, bind: SqlBindStyle, catalog: &str) -> Result<CatalogRows> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(uri)
            .await
            .map_err(|err| {
                Error::new(ErrorKind::Unexpected, "connect to the catalog database")
                    .with_source(err)
            })?;
        Ok(CatalogRows {
            pool,
            bind,
            catalog: catalog.to_owned(),
        })
    }

    /// The bind markers of `n` parameters in this database's style.
    fn marks(&self, n: usize) -> Vec<String> {
        match self.bind {
            SqlBindStyle::QMark => vec!["?".to_owned(); n],
            SqlBindStyle::DollarNumeric => (1..=n).map(|i| format!("${i}")).collect(),
        }
    }

    /// Deletes the table's row if it still names metadata `at` (the
    /// table the caller loaded and decided about); false when it names
    /// other metadata now, or is gone. The catalog's own drop deletes by
    /// name, which would also take a table created since.
    pub async fn drop_if(&self, table: &TableIdent, at: &str) -> Result<bool> {
        let marks = self.marks(4);
        let sql = format!(
            "DELETE FROM iceberg_tables WHERE catalog_name = {} AND table_namespace = {} \
             AND table_name = {} AND metadata_location = {}",
            marks[0], marks[1], marks[2], marks[3]
        );
        let namespace = table.namespace().clone().inner().join(".");
        let done = sqlx::query(&sql)
            .bind(&self.catalog)
            .bind(namespace)
            .bind(table.name())
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(|err| {
                Error::new(ErrorKind::Unexpected, "delete the catalog row").with_source(err)
            })?;
        Ok(done.rows_affected() == 1)
    }

    /// The metadata location the table's row names, if there is a row.
    pub async fn location(&self, table: &TableIdent) -> Result<Option<String>> {
        let marks = self.marks(3);
        let sql = format!(
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = {} \
             AND table_namespace = {} AND table_name = {}",
            marks[0], marks[1], marks[2]
        );
        let namespace = table.namespace().clone().inner().join(".");
        let row = sqlx::query_scalar::<_, Option<String>>(&sql)
            .bind(&self.catalog)
            .bind(namespace)
            .bind(table.name())
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| {
                Error::new(ErrorKind::Unexpected, "read the catalog row").with_source(err)
            })?;
        Ok(row.flatten())
    }

    /// Moves the table's row from metadata `from` to `to`; false when the
    /// row names other metadata now (another commit won).
    pub async fn swap(&self, table: &TableIdent, from: &str, to: &str) -> Result<bool> {
        let marks = self.marks(6);
        let sql = format!(
            "UPDATE iceberg_tables SET metadata_location = {}, previous_metadata_location = {} \
             WHERE catalog_name = {} AND table_namespace = {} AND table_name = {} \
             AND metadata_location = {}",
            marks[0], marks[1], marks[2], marks[3], marks[4], marks[5]
        );
        let namespace = table.namespace().clone().inner().join(".");
        let done = sqlx::query(&sql)
            .bind(to)
            .bind(from)
            .bind(&self.catalog)
            .bind(namespace)
            .bind(table.name())
            .bind(from)
            .execute(&self.pool)
            .await
            .map_err(|err| {
                Error::new(ErrorKind::Unexpected, "update the catalog row").with_source(err)
            })?;
        Ok(done.rows_affected() == 1)
    }
}
