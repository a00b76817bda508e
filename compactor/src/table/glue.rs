//! The AWS Glue Data Catalog as the logs' Iceberg catalog (`glue://`):
//! a dlog namespace is a Glue database, a log a Glue table in it, kept the
//! way Iceberg's engines (pyiceberg, Spark, Athena, Trino) keep Iceberg
//! tables in Glue: table type `EXTERNAL_TABLE`, parameters `table_type` =
//! `ICEBERG`, `metadata_location` (the current metadata file) and
//! `previous_metadata_location`, and the table's location as the storage
//! descriptor's. The metadata files themselves are written and read
//! through the tables' `FileIO` (the cluster's object store, [`super::storage`]).
//!
//! URI: `glue://?region=REGION[&endpoint=URL][&catalog_id=ACCOUNT]`; the
//! region falls back to the standard AWS chain (`AWS_REGION`, the
//! instance's), and so do the credentials (environment, web identity,
//! ECS or instance profile). `endpoint` points the client at another
//! Glue-compatible server (the tests' moto), `catalog_id` at another
//! account's catalog.
//!
//! Compare-and-swap ([`GlueCatalog::swap`]): GetTable, then, if the table
//! still names metadata `from`, UpdateTable to `to` with the `VersionId`
//! the GetTable returned. Glue refuses an update whose version is not the
//! table's current one (ConcurrentModificationException), so a commit
//! that raced another between the two calls loses, and is done again on
//! the newer table. Crash points: before UpdateTable the table is as it
//! was and the commit's new files are unreferenced (the metadata sweep
//! deletes them); after it the new snapshot is the table's. The update
//! skips Glue's archive of table versions (as pyiceberg does by default):
//! every commit would otherwise add one, up to Glue's limit per table.
//!
//! Drop ([`GlueCatalog::drop_if`]): Glue's DeleteTable takes no version,
//! so a drop is check-then-delete: GetTable, and DeleteTable if it names
//! metadata `at` and is dlog's (an Iceberg table with the `dlog.log-id`
//! parameter dlog sets at creation; another's table is never deleted). A
//! table re-created (or committed to) between the two calls is deleted
//! too. The SDK does not retry the DeleteTable: a retry after a first
//! attempt that succeeded but timed out would delete a table created
//! since. A re-created log's table lost so is created again on its next
//! load, and `table_backfill` brings back the segments offloaded before
//! that table's creation time (and a margin after it), except merged
//! files and segments backfilled once before (ARCHITECTURE.md,
//! "Decisions", the Glue catalog).
//!
//! An update ([`GlueCatalog::swap`]) starts from the table GetTable
//! returned and changes only the parameters dlog owns, so what engines
//! set on the table (its storage descriptor's columns, partition keys,
//! owner, other parameters) stays.
//!
//! Glue keeps names in lower case, so two dlog names differing only in
//! case would share one Glue table: a name with an upper-case letter is
//! refused here rather than let the two logs' tables replace each other,
//! and the compactor gives such a log no table ([`GlueCatalog::holds`]).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_glue::Client;
use aws_sdk_glue::config::retry::RetryConfig;
use aws_sdk_glue::config::{Credentials, Region};
use aws_sdk_glue::error::{DisplayErrorContext, SdkError};
use aws_sdk_glue::types::{DatabaseInput, StorageDescriptor, TableInput};
use dlog_storage::objstore::ObjectStoreHandle;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use iceberg::{
    Error, ErrorKind, MetadataLocation, NamespaceIdent, Result, Runtime, TableCreation, TableIdent,
};

use super::ObjectStorageFactory;

/// The Glue table parameter naming the table's kind (`ICEBERG`).
const TABLE_TYPE: &str = "table_type";
const ICEBERG: &str = "ICEBERG";
/// The Glue table parameter naming the current metadata file.
const METADATA_LOCATION: &str = "metadata_location";
/// The Glue table parameter naming the metadata file before it.
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";
/// The Glue table parameter marking a table as dlog's, set when dlog
/// creates it: the log id, as in the table property of that name. A
/// table without it is never deleted.
pub(super) const LOG_ID_PARAMETER: &str = super::LOG_ID_PROPERTY;
/// Glue's table type of tables whose data it does not manage.
const EXTERNAL_TABLE: &str = "EXTERNAL_TABLE";

/// What a `glue://` URI says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct GlueUri {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub catalog_id: Option<String>,
}

impl GlueUri {
    /// Parses `glue://?region=R&endpoint=URL&catalog_id=ID` (every key
    /// optional, none repeated, no other key).
    pub fn parse(uri: &str) -> std::result::Result<GlueUri, String> {
        let Some(rest) = uri.strip_prefix("glue://") else {
            return Err(format!("{uri:?} is not a glue:// URI"));
        };
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !host.is_empty() && host != "/" {
            return Err(format!(
                "{uri:?}: a glue:// URI has no host or path (glue://?region=REGION)"
            ));
        }
        let mut parsed = GlueUri::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "region" => &mut parsed.region,
                "endpoint" => &mut parsed.endpoint,
                "catalog_id" => &mut parsed.catalog_id,
                _ => {
                    return Err(format!(
                        "{uri:?}: unknown key {key:?} (region, endpoint, catalog_id)"
                    ));
                }
            };
            if value.is_empty() {
                return Err(format!("{uri:?}: {key} is empty"));
            }
            if slot.replace(value.to_owned()).is_some() {
                return Err(format!("{uri:?}: {key} given twice"));
            }
        }
        Ok(parsed)
    }
}

/// The Glue Data Catalog of the logs' tables.
pub(super) struct GlueCatalog {
    client: Client,
    catalog_id: Option<String>,
    file_io: FileIO,
    runtime: Runtime,
}

/// A failed Glue call as Iceberg's error, on one line with the service's
/// own code and message.
fn failed<E>(kind: ErrorKind, what: String, err: SdkError<E>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::new(kind, format!("{what}: {}", DisplayErrorContext(&err)))
}

/// The Glue database and table names of `ident`, refused when Glue would
/// fold them into another log's.
fn names(ident: &TableIdent) -> Result<(String, &str)> {
    let database = ident.namespace().clone().inner().join(".");
    let table = ident.name();
    for name in [database.as_str(), table] {
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!(
                    "{database}.{table}: Glue keeps names in lower case, so {name:?} would share \
                     a table with a log named differently only in case; use lower-case names or \
                     the SQL catalog"
                ),
            ));
        }
    }
    Ok((database, table))
}

impl GlueCatalog {
    /// A client of the Glue catalog `uri` names; `credentials` instead of
    /// the standard chain's (the tests').
    pub async fn open(
        uri: &str,
        objects: &ObjectStoreHandle,
        credentials: Option<Credentials>,
    ) -> Result<GlueCatalog> {
        let parsed = GlueUri::parse(uri).map_err(|why| Error::new(ErrorKind::DataInvalid, why))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
        if let Some(region) = &parsed.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &parsed.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("{uri}: no AWS region (add ?region=REGION, or set AWS_REGION)"),
            ));
        }
        let file_io = FileIOBuilder::new(std::sync::Arc::new(ObjectStorageFactory::new(
            objects.clone(),
        )))
        .build();
        Ok(GlueCatalog {
            client: Client::new(&config),
            catalog_id: parsed.catalog_id,
            file_io,
            runtime: Runtime::try_current()?,
        })
    }

    /// Whether Glue can hold a table named `ident` ([`names`]).
    pub fn holds(ident: &TableIdent) -> bool {
        names(ident).is_ok()
    }

    /// The Glue table of `ident`, `None` when there is none.
    async fn get(&self, ident: &TableIdent) -> Result<Option<aws_sdk_glue::types::Table>> {
        let (database, table) = names(ident)?;
        let got = (self.client.get_table())
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .name(table)
            .send()
            .await;
        match got {
            Ok(output) => Ok(output.table),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_entity_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(failed(
                ErrorKind::Unexpected,
                format!("Glue GetTable {database}.{table}"),
                err,
            )),
        }
    }

    /// The metadata location a Glue table names, if it is an Iceberg table.
    fn metadata_location_of(
        ident: &TableIdent,
        table: &aws_sdk_glue::types::Table,
    ) -> Result<String> {
        let parameters = table.parameters();
        let kind = parameters.and_then(|p| p.get(TABLE_TYPE));
        if !kind.is_some_and(|kind| kind.eq_ignore_ascii_case(ICEBERG)) {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("Glue table {ident} is not an Iceberg table ({TABLE_TYPE} {kind:?})"),
            ));
        }
        parameters
            .and_then(|p| p.get(METADATA_LOCATION))
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("Glue table {ident} has no {METADATA_LOCATION}"),
                )
            })
    }

    fn table(
        &self,
        ident: &TableIdent,
        location: String,
        metadata: TableMetadata,
    ) -> Result<Table> {
        Table::builder()
            .file_io(self.file_io.clone())
            .identifier(ident.clone())
            .metadata_location(location)
            .metadata(metadata)
            .runtime(self.runtime.clone())
            .build()
    }

    /// The table `ident` as its current metadata file says; `TableNotFound`
    /// when Glue has no such table.
    pub async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        let Some(glue) = self.get(ident).await? else {
            return Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no Glue table {ident}"),
            ));
        };
        let location = Self::metadata_location_of(ident, &glue)?;
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        self.table(ident, location, metadata)
    }

    /// Creates the Glue database of `namespace` unless it exists.
    pub async fn create_namespace_if_missing(&self, namespace: &NamespaceIdent) -> Result<()> {
        let ident = TableIdent::new(namespace.clone(), String::new());
        let (database, _) = names(&ident)?;
        let input = (DatabaseInput::builder().name(&database).build()).map_err(|err| {
            Error::new(
                ErrorKind::Unexpected,
                format!("Glue database {database}: {err}"),
            )
        })?;
        let created = (self.client.create_database())
            .set_catalog_id(self.catalog_id.clone())
            .database_input(input)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(failed(
                ErrorKind::Unexpected,
                format!("Glue CreateDatabase {database}"),
                err,
            )),
        }
    }

    /// The Glue table input of an Iceberg table at metadata `location`.
    fn input(
        name: &str,
        metadata: &TableMetadata,
        parameters: HashMap<String, String>,
    ) -> Result<TableInput> {
        TableInput::builder()
            .name(name)
            .table_type(EXTERNAL_TABLE)
            .set_parameters(Some(parameters))
            .storage_descriptor(
                StorageDescriptor::builder()
                    .location(metadata.location())
                    .build(),
            )
            .build()
            .map_err(|err| Error::new(ErrorKind::Unexpected, format!("Glue table {name}: {err}")))
    }

    /// Writes the first metadata file of `creation` and registers the
    /// table; `TableAlreadyExists` when Glue has the name already (that
    /// metadata file is then unreferenced, and swept).
    pub async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        let ident = TableIdent::new(namespace.clone(), creation.name.clone());
        let (database, name) = names(&ident)?;
        let Some(location) = creation.location.clone() else {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("table {ident}: a Glue table is created at a given location"),
            ));
        };
        let metadata = TableMetadataBuilder::from_table_creation(creation)?
            .build()?
            .metadata;
        let at = MetadataLocation::new_with_metadata(location, &metadata);
        metadata.write_to(&self.file_io, &at).await?;
        let at = at.to_string();
        let mut parameters = HashMap::from([
            (TABLE_TYPE.to_owned(), ICEBERG.to_owned()),
            (METADATA_LOCATION.to_owned(), at.clone()),
        ]);
        // dlog's mark, which `drop_if` looks for.
        if let Some(log_id) = metadata.properties().get(LOG_ID_PARAMETER) {
            parameters.insert(LOG_ID_PARAMETER.to_owned(), log_id.clone());
        }
        let created = (self.client.create_table())
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .table_input(Self::input(name, &metadata, parameters)?)
            .send()
            .await;
        match created {
            Ok(_) => self.table(&ident, at, metadata),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) =>
            {
                Err(Error::new(
                    ErrorKind::TableAlreadyExists,
                    format!("Glue table {ident} exists already"),
                ))
            }
            Err(err) => Err(failed(
                ErrorKind::Unexpected,
                format!("Glue CreateTable {ident}"),
                err,
            )),
        }
    }

    /// The metadata location the Glue table names, if there is a table.
    pub async fn location(&self, ident: &TableIdent) -> Result<Option<String>> {
        match self.get(ident).await? {
            Some(glue) => Ok(Some(Self::metadata_location_of(ident, &glue)?)),
            None => Ok(None),
        }
    }

    /// Moves the Glue table from metadata `from` to `to`, under Glue's
    /// optimistic lock (the module doc); false when it names other
    /// metadata, is gone, or changed between the read and the update.
    pub async fn swap(&self, ident: &TableIdent, from: &str, to: &str) -> Result<bool> {
        let Some(glue) = self.get(ident).await? else {
            return Ok(false);
        };
        if Self::metadata_location_of(ident, &glue)? != from {
            return Ok(false);
        }
        let Some(version) = glue.version_id() else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("Glue table {ident}: GetTable returned no VersionId, no safe update"),
            ));
        };
        let (database, _) = names(ident)?;
        let input = Self::updated_input(ident, &glue, from, to)?;
        let updated = (self.client.update_table())
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .table_input(input)
            .version_id(version)
            .skip_archive(true)
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(err)
                if err.as_service_error().is_some_and(|e| {
                    e.is_concurrent_modification_exception() || e.is_entity_not_found_exception()
                }) =>
            {
                Ok(false)
            }
            Err(err) => Err(failed(
                ErrorKind::Unexpected,
                format!("Glue UpdateTable {ident}"),
                err,
            )),
        }
    }

    /// The input of an UpdateTable moving the Glue table `glue` from
    /// metadata `from` to `to`: the table as GetTable returned it (its
    /// storage descriptor, partition keys, owner, description, parameters
    /// and whatever else engines or Glue set on it), with only the
    /// parameters dlog owns changed.
    fn updated_input(
        ident: &TableIdent,
        glue: &aws_sdk_glue::types::Table,
        from: &str,
        to: &str,
    ) -> Result<TableInput> {
        let mut parameters = glue.parameters().cloned().unwrap_or_default();
        parameters.insert(TABLE_TYPE.to_owned(), ICEBERG.to_owned());
        parameters.insert(METADATA_LOCATION.to_owned(), to.to_owned());
        parameters.insert(PREVIOUS_METADATA_LOCATION.to_owned(), from.to_owned());
        TableInput::builder()
            .name(glue.name())
            .set_description(glue.description().map(str::to_owned))
            .set_owner(glue.owner().map(str::to_owned))
            .set_last_access_time(glue.last_access_time().cloned())
            .set_last_analyzed_time(glue.last_analyzed_time().cloned())
            .retention(glue.retention())
            .set_storage_descriptor(glue.storage_descriptor().cloned())
            .set_partition_keys(Some(glue.partition_keys().to_vec()))
            .set_view_original_text(glue.view_original_text().map(str::to_owned))
            .set_view_expanded_text(glue.view_expanded_text().map(str::to_owned))
            .table_type(glue.table_type().unwrap_or(EXTERNAL_TABLE))
            .set_parameters(Some(parameters))
            .set_target_table(glue.target_table().cloned())
            .build()
            .map_err(|err| Error::new(ErrorKind::Unexpected, format!("Glue table {ident}: {err}")))
    }

    /// Deletes the Glue table if it names metadata `at` and is dlog's (an
    /// Iceberg table carrying [`LOG_ID_PARAMETER`]): check-then-delete
    /// (the module doc); false when it names other metadata, or is gone.
    /// A table that is not dlog's is refused with an error: dlog never
    /// deletes another's table, whatever its metadata location.
    pub async fn drop_if(&self, ident: &TableIdent, at: &str) -> Result<bool> {
        let Some(glue) = self.get(ident).await? else {
            return Ok(false);
        };
        let parameters = glue.parameters();
        let named = parameters.and_then(|p| p.get(METADATA_LOCATION));
        if named.map(String::as_str) != Some(at) {
            return Ok(false);
        }
        // `at` is metadata the caller read and found dlog's (its
        // `dlog.log-id` property, or a path in dlog's folder of an earlier
        // log id); the Glue parameter of that name is not required, since
        // another engine's commit may rewrite the parameters without it.
        let iceberg = (parameters.and_then(|p| p.get(TABLE_TYPE)))
            .is_some_and(|kind| kind.eq_ignore_ascii_case(ICEBERG));
        if !iceberg {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("Glue table {ident} is not an Iceberg table: not deleted"),
            ));
        }
        let (database, name) = names(ident)?;
        // Not retried by the SDK: a first attempt that timed out may have
        // deleted the table, and a retry would then delete a table created
        // under the name meanwhile (a re-created log's). After an error the
        // caller decides again on its next pass, from a fresh GetTable.
        let deleted = (self.client.delete_table())
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .name(name)
            .customize()
            .config_override(
                aws_sdk_glue::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_entity_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(failed(
                ErrorKind::Unexpected,
                format!("Glue DeleteTable {ident}"),
                err,
            )),
        }
    }
}
