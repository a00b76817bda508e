//! The catalog the logs' tables are registered in, chosen by its URI: the
//! Iceberg SQL catalog (`sqlite:...`, `postgres://...`, [`super::sql`]) or
//! the AWS Glue Data Catalog (`glue://...`, [`super::glue`]). It offers
//! exactly what [`super::LogTables`] needs: loading and creating a table,
//! creating a namespace, and three operations on a table's entry that the
//! commits and drops rely on: its metadata location, a compare-and-swap of
//! it, and a drop conditional on it.

use std::collections::HashMap;

use aws_sdk_glue::config::Credentials;
use dlog_storage::objstore::ObjectStoreHandle;
use iceberg::table::Table;
use iceberg::{Catalog, ErrorKind, NamespaceIdent, Result, TableCreation, TableIdent};
use iceberg_catalog_sql::SqlCatalog;

use super::glue::GlueCatalog;
use super::sql::{self, CatalogRows};

/// The catalog of the logs' tables.
pub(super) enum TableCatalog {
    Sql {
        catalog: SqlCatalog,
        rows: CatalogRows,
    },
    Glue(GlueCatalog),
}

impl TableCatalog {
    /// Opens the catalog `uri` names: `glue://...` the Glue Data Catalog
    /// (with `glue_credentials` instead of the standard AWS chain's, if
    /// given), anything else the SQL catalog.
    pub async fn open(
        uri: &str,
        objects: &ObjectStoreHandle,
        glue_credentials: Option<Credentials>,
    ) -> Result<TableCatalog> {
        if uri.starts_with("glue:") {
            let glue = GlueCatalog::open(uri, objects, glue_credentials).await?;
            return Ok(TableCatalog::Glue(glue));
        }
        let (catalog, rows) = sql::open(uri, objects).await?;
        Ok(TableCatalog::Sql { catalog, rows })
    }

    /// Whether the catalog can hold a table named `ident` (Glue cannot
    /// hold upper-case names).
    pub fn holds(&self, ident: &TableIdent) -> bool {
        match self {
            TableCatalog::Sql { .. } => true,
            TableCatalog::Glue(_) => GlueCatalog::holds(ident),
        }
    }

    /// The table `ident`; an error of kind `TableNotFound` when there is
    /// none.
    pub async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        match self {
            TableCatalog::Sql { catalog, .. } => catalog.load_table(ident).await,
            TableCatalog::Glue(glue) => glue.load_table(ident).await,
        }
    }

    /// Creates the namespace unless it exists.
    pub async fn create_namespace_if_missing(&self, namespace: &NamespaceIdent) -> Result<()> {
        match self {
            TableCatalog::Sql { catalog, .. } => {
                match catalog.create_namespace(namespace, HashMap::new()).await {
                    Ok(_) => Ok(()),
                    Err(err) if err.kind() == ErrorKind::NamespaceAlreadyExists => Ok(()),
                    Err(err) => Err(err),
                }
            }
            TableCatalog::Glue(glue) => glue.create_namespace_if_missing(namespace).await,
        }
    }

    /// Creates the table; an error of kind `TableAlreadyExists` when the
    /// name is taken.
    pub async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        match self {
            TableCatalog::Sql { catalog, .. } => catalog.create_table(namespace, creation).await,
            TableCatalog::Glue(glue) => glue.create_table(namespace, creation).await,
        }
    }

    /// The metadata location the catalog names for the table, if it has
    /// the table (read even when that metadata is unreadable).
    pub async fn location(&self, ident: &TableIdent) -> Result<Option<String>> {
        match self {
            TableCatalog::Sql { rows, .. } => rows.location(ident).await,
            TableCatalog::Glue(glue) => glue.location(ident).await,
        }
    }

    /// Moves the table from metadata `from` to `to`; false when it names
    /// other metadata now (another commit won) or is gone.
    pub async fn swap(&self, ident: &TableIdent, from: &str, to: &str) -> Result<bool> {
        match self {
            TableCatalog::Sql { rows, .. } => rows.swap(ident, from, to).await,
            TableCatalog::Glue(glue) => glue.swap(ident, from, to).await,
        }
    }

    /// Drops the table if it still names metadata `at`; false when it
    /// names other metadata, or is gone. Exact in the SQL catalog (one
    /// conditional delete); check-then-delete in Glue ([`super::glue`]).
    pub async fn drop_if(&self, ident: &TableIdent, at: &str) -> Result<bool> {
        match self {
            TableCatalog::Sql { rows, .. } => rows.drop_if(ident, at).await,
            TableCatalog::Glue(glue) => glue.drop_if(ident, at).await,
        }
    }
}
