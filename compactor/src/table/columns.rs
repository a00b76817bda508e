//! The typed payload columns of a log's table (docs/iceberg.md, "Typed
//! payload columns"). A file written for a namespace with a payload schema
//! has a column per field, with the field's id (1000 up); before such a
//! file joins the table, the table's schema gets the columns it lacks, in
//! a commit of its own, so that a scan (pyiceberg, which resolves columns
//! by id) finds them. The columns come from the file itself, not from the
//! namespace's schema as it is now: a file written under an earlier
//! schema (an offload retried after a change) brings its own. Columns are
//! only added: a field removed from the schema keeps its column, null in
//! the files written since.

use dlog_storage::segment_file::{self, SegmentFile};
use iceberg::spec::{NestedFieldRef, Schema};
use iceberg::table::Table;
use iceberg::{Error, ErrorKind, Result};

/// The table's current schema with the typed columns of `file` it lacks
/// added; `None` when it has them all. A column whose id the table has
/// under another name or type, or whose name it has under another id, is
/// an error: field ids are never handed out twice in a namespace.
pub(super) fn with_columns_of(table: &Table, file: &SegmentFile) -> Result<Option<Schema>> {
    let typed = segment_file::payload_columns(&file.bytes).map_err(|err| {
        Error::new(
            ErrorKind::DataInvalid,
            format!("read the file's columns: {err}"),
        )
    })?;
    if typed.fields().is_empty() {
        return Ok(None);
    }
    let typed = iceberg::arrow::arrow_schema_to_schema(&typed)?;
    let current = table.metadata().current_schema();
    let mut missing: Vec<NestedFieldRef> = Vec::new();
    for field in typed.as_struct().fields() {
        let clash = match (
            current.field_by_id(field.id),
            current.field_by_name(&field.name),
        ) {
            (Some(there), _)
                if there.name == field.name && there.field_type == field.field_type =>
            {
                continue;
            }
            (Some(there), _) => format!(
                "the table's column {} is {} {}",
                field.id, there.name, there.field_type
            ),
            (None, Some(named)) => format!("the table has {} as column {}", field.name, named.id),
            (None, None) => {
                missing.push(field.clone());
                continue;
            }
        };
        return Err(Error::new(
            ErrorKind::DataInvalid,
            format!(
                "the file's column {} {} (id {}) does not fit: {clash}",
                field.name, field.field_type, field.id
            ),
        ));
    }
    if missing.is_empty() {
        return Ok(None);
    }
    let fields = current.as_struct().fields().iter().cloned().chain(missing);
    let schema = Schema::builder()
        .with_schema_id(current.schema_id() + 1)
        .with_fields(fields)
        .build()?;
    Ok(Some(schema))
}
