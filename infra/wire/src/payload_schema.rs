//! Typed payloads: a namespace's payload schema names top-level fields of
//! its records' JSON payloads and their types. Appends whose payloads do
//! not match are refused (the ingest owner checks them, [`PayloadSchema::check`]),
//! and the compactor writes each field as a typed column of the Parquet
//! files and the log's Iceberg table beside the raw `payload`
//! ([`PayloadSchema::row`]). Both sides use the one conversion of this
//! module ([`FieldType::convert`]), so what an append is checked against is
//! exactly what offload writes.
//!
//! The document an operator gives (`dlog ns config NS --payload-schema FILE`):
//!
//! ```json
//! {"fields": [{"name": "user", "type": "string", "required": true},
//!             {"name": "amount", "type": "int64"}]}
//! ```
//!
//! Types: `string`, `int64` (a JSON integer within i64), `double` (any JSON
//! number), `boolean`, `timestamp` (an RFC 3339 string, stored as µs UTC).
//! A field is optional unless `required`: absent or `null` is then allowed.
//! Other fields of a payload are allowed and ignored.
//!
//! Each field gets an Iceberg/Parquet field id from [`FIRST_FIELD_ID`] up
//! when it is first declared, and keeps it: a later document keeps the ids
//! of the fields it names again, new fields get new ids, a field left out
//! is removed (its column stops being filled) but its name, type and id are
//! remembered ([`PayloadSchema::removed`]), so a name always means one
//! column of one type: changing a field's type, now or after its removal,
//! is refused.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The field id of a namespace's first payload field; ids below are the
/// record columns' (`dlog_storage::segment_file::FIELD_IDS`).
pub const FIRST_FIELD_ID: i32 = 1000;

/// Most fields a namespace's schema may name over its history (removed
/// ones included).
pub const MAX_FIELDS: usize = 256;

/// Longest field name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The names of the record columns of every Parquet layout: a payload
/// field may not take one (nor one differing only in case, as SQL engines
/// resolve column names ignoring case).
pub const RESERVED_NAMES: [&str; 10] = [
    "log_offset",
    "offset",
    "append_time",
    "timestamp",
    "txid",
    "key",
    "headers",
    "payload",
    "producer_time",
    "producer_time_ms",
];

/// The type of a payload field, and of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Int64,
    Double,
    Boolean,
    /// An RFC 3339 string in the payload; microseconds UTC in the column.
    Timestamp,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int64 => "int64",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
        }
    }

    /// What a value of this type looks like in a payload, for messages.
    fn expected(self) -> &'static str {
        match self {
            FieldType::Timestamp => "timestamp (an RFC 3339 string)",
            other => other.name(),
        }
    }

    /// The typed value of a JSON value: `Ok(None)` for `null`, `Err(())`
    /// for a value of another type. The one conversion of both the append
    /// check and the offload's columns.
    #[allow(clippy::result_unit_err)]
    pub fn convert(self, value: &Value) -> Result<Option<Typed<'_>>, ()> {
        let typed = match (self, value) {
            (_, Value::Null) => return Ok(None),
            (FieldType::String, Value::String(text)) => Typed::String(text),
            (FieldType::Int64, Value::Number(n)) => Typed::Int64(n.as_i64().ok_or(())?),
            (FieldType::Double, Value::Number(n)) => Typed::Double(n.as_f64().ok_or(())?),
            (FieldType::Boolean, Value::Bool(b)) => Typed::Boolean(*b),
            (FieldType::Timestamp, Value::String(text)) => {
                let moment = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| ())?;
                Typed::Timestamp(moment.timestamp_micros())
            }
            _ => return Err(()),
        };
        Ok(Some(typed))
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload field's value, converted to its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Typed<'a> {
    String(&'a str),
    Int64(i64),
    Double(f64),
    Boolean(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

/// One field of a namespace's payload schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadField {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Its Iceberg/Parquet field id, for good.
    pub id: i32,
}

/// A namespace's payload schema, as the manifest keeps it (`ns/<ns>`) and
/// the admin API shows it: the fields in force, with their ids, and the
/// fields removed (their ids and types stay taken).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSchema {
    pub fields: Vec<PayloadField>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<PayloadField>,
}

/// A field as a schema document declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclaredField {
    name: String,
    #[serde(rename = "type")]
    field_type: FieldType,
    #[serde(default)]
    required: bool,
}

/// A schema document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    fields: Vec<DeclaredField>,
}

/// Why a payload does not match a schema (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("null payload, expected a JSON object")]
    NullPayload,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is {0}, expected a JSON object")]
    NotObject(String),
    #[error("field {field:?}: missing (required)")]
    Missing { field: String },
    #[error("field {field:?}: expected {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: String,
    },
}

/// Longest piece of a string value quoted in a message, in characters.
const QUOTED_CHARS: usize = 40;

/// A JSON value as a message names it: its kind, and its value when short.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(text) => {
            let mut shown: String = text.chars().take(QUOTED_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            // JSON-quoted: one line whatever the text holds.
            format!("string {}", Value::String(shown))
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The fields of a payload's JSON object that `wanted` names (`None` is
/// a null payload). Nothing else of the payload is kept: other fields are
/// read through and dropped, and an array or object value is kept as an
/// empty one (no payload field type takes one), so checking a large
/// payload costs a pass over its bytes, not a copy of it as JSON values.
/// What is read through is checked as serde_json checks a document it
/// reads into values (UTF-8, escapes, numbers in range, nesting depth):
/// the payloads accepted are exactly those.
pub fn parse_fields(
    payload: Option<&[u8]>,
    wanted: impl Fn(&str) -> bool,
) -> Result<Map<String, Value>, Mismatch> {
    let payload = payload.ok_or(Mismatch::NullPayload)?;
    let mut reader = serde_json::Deserializer::from_slice(payload);
    let parsed = serde::de::DeserializeSeed::deserialize(Fields { wanted: &wanted }, &mut reader)
        .and_then(|parsed| reader.end().map(|()| parsed));
    match parsed {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(other)) => Err(Mismatch::NotObject(describe(&other))),
        Err(err) => Err(Mismatch::NotJson(err.to_string())),
    }
}

/// Reads a top-level JSON value: an object's wanted fields, or (as `Err`)
/// a value of another kind, shallow ([`Shallow`]).
struct Fields<'a, W> {
    wanted: &'a W,
}

impl<'de, W: Fn(&str) -> bool> serde::de::DeserializeSeed<'de> for Fields<'_, W> {
    type Value = Result<Map<String, Value>, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, W: Fn(&str) -> bool> serde::de::Visitor<'de> for Fields<'_, W> {
    type Value = Result<Map<String, Value>, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if (self.wanted)(&name) {
                // A repeated name: the last value counts, as in serde_json.
                object.insert(name.into_owned(), map.next_value::<Shallow>()?.0);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(Ok(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip::seq(seq)?;
        Ok(Err(Value::Array(Vec::new())))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Err(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Err(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Err(Value::String(v.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Value::Null))
    }
}

/// A JSON value with its arrays and objects read but not kept (empty).
struct Shallow(Value);

impl<'de> Deserialize<'de> for Shallow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shallow, D::Error> {
        d.deserialize_any(ShallowVisitor)
    }
}

struct ShallowVisitor;

impl<'de> serde::de::Visitor<'de> for ShallowVisitor {
    type Value = Shallow;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Shallow, E> {
        Ok(Shallow(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Shallow, E> {
        Ok(Shallow(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Shallow, E> {
        Ok(Shallow(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Shallow, E> {
        Ok(Shallow(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Shallow, E> {
        Ok(Shallow(Value::String(v.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Shallow, E> {
        Ok(Shallow(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Shallow, A::Error> {
        Skip::seq(seq)?;
        Ok(Shallow(Value::Array(Vec::new())))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Shallow, A::Error> {
        Skip::map(map)?;
        Ok(Shallow(Value::Object(Map::new())))
    }
}

/// A JSON value read and dropped. Unlike serde's `IgnoredAny` (for which
/// serde_json skips bytes without checking UTF-8, escapes, number ranges or
/// depth), it is read as any value is (`deserialize_any`), so a payload
/// that serde_json would refuse as a value is refused here too.
struct Skip;

impl Skip {
    fn seq<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }

    fn map<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> serde::de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        Skip::seq(seq).map(|()| Skip)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        Skip::map(map).map(|()| Skip)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "field {name:?}: a name is 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ -, starting with a letter or _"
        ));
    }
    if let Some(column) = RESERVED_NAMES.iter().find(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "field {name:?}: {column} is a record column of the Parquet files"
        ));
    }
    Ok(())
}

impl PayloadSchema {
    /// The schema a document declares, given the namespace's schema so far
    /// (`previous`): fields named again keep their ids, new ones get the
    /// next ids, the others are removed. Refused, with a one-line reason:
    /// a document that is not one, no field, a bad or repeated name, or a
    /// field whose type differs from the one its name had.
    pub fn declare(
        document: &str,
        previous: Option<&PayloadSchema>,
    ) -> Result<PayloadSchema, String> {
        let declared: Document =
            serde_json::from_str(document).map_err(|err| format!("payload schema: {err}"))?;
        if declared.fields.is_empty() {
            return Err(
                "payload schema: no fields (to stop checking payloads, clear the schema)"
                    .to_owned(),
            );
        }
        // Before the pairwise name checks below, so a huge document is
        // refused at once.
        if declared.fields.len() > MAX_FIELDS {
            return Err(format!(
                "payload schema: {} fields, more than {MAX_FIELDS}",
                declared.fields.len()
            ));
        }
        let known: Vec<&PayloadField> = previous
            .map(|p| p.fields.iter().chain(&p.removed).collect())
            .unwrap_or_default();
        let mut next_id = (known.iter().map(|f| f.id + 1))
            .max()
            .unwrap_or(FIRST_FIELD_ID)
            .max(FIRST_FIELD_ID);
        let mut fields: Vec<PayloadField> = Vec::with_capacity(declared.fields.len());
        for field in declared.fields {
            let refuse = |reason: String| format!("payload schema: {reason}");
            check_name(&field.name).map_err(refuse)?;
            if let Some(twice) = (fields.iter()).find(|f| f.name.eq_ignore_ascii_case(&field.name))
            {
                return Err(refuse(format!(
                    "field {:?} is declared twice (as {:?}; names are compared ignoring case)",
                    field.name, twice.name
                )));
            }
            let id = match known
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(&field.name))
            {
                Some(had) if had.name != field.name => {
                    return Err(refuse(format!(
                        "field {:?}: the namespace has a field {:?} (id {}); names may not differ only in case",
                        field.name, had.name, had.id
                    )));
                }
                Some(had) if had.field_type != field.field_type => {
                    return Err(refuse(format!(
                        "field {:?}: its type is {} (id {}) and cannot change to {}; declare a field under a new name",
                        field.name, had.field_type, had.id, field.field_type
                    )));
                }
                Some(had) => had.id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            fields.push(PayloadField {
                name: field.name,
                field_type: field.field_type,
                required: field.required,
                id,
            });
        }
        let mut removed: Vec<PayloadField> = (known.into_iter())
            .filter(|had| !fields.iter().any(|f| f.id == had.id))
            .map(|had| PayloadField {
                required: false,
                ..had.clone()
            })
            .collect();
        removed.sort_by_key(|f| f.id);
        if fields.len() + removed.len() > MAX_FIELDS {
            return Err(format!(
                "payload schema: {} fields with the removed ones, more than {MAX_FIELDS}",
                fields.len() + removed.len()
            ));
        }
        Ok(PayloadSchema { fields, removed })
    }

    /// The schema with every field removed: payloads are no longer
    /// checked, and the ids stay taken.
    pub fn cleared(&self) -> PayloadSchema {
        let mut removed: Vec<PayloadField> = (self.fields.iter().chain(&self.removed))
            .map(|f| PayloadField {
                required: false,
                ..f.clone()
            })
            .collect();
        removed.sort_by_key(|f| f.id);
        PayloadSchema {
            fields: Vec::new(),
            removed,
        }
    }

    /// Whether the schema checks payloads (it has fields in force).
    pub fn is_active(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Checks a payload (`None`: a null payload): a JSON object whose
    /// fields of the schema have their types, the required ones present
    /// and not null. A schema without fields in force checks nothing.
    pub fn check(&self, payload: Option<&[u8]>) -> Result<(), Mismatch> {
        if !self.is_active() {
            return Ok(());
        }
        let object = self.parse(payload)?;
        for field in &self.fields {
            let Some(value) = object.get(&field.name) else {
                if field.required {
                    return Err(Mismatch::Missing {
                        field: field.name.clone(),
                    });
                }
                continue;
            };
            match field.field_type.convert(value) {
                Ok(Some(_)) => {}
                Ok(None) if !field.required => {}
                _ => {
                    return Err(Mismatch::WrongType {
                        field: field.name.clone(),
                        expected: field.field_type.expected(),
                        got: describe(value),
                    });
                }
            }
        }
        Ok(())
    }

    /// The fields in force of a payload's JSON object ([`parse_fields`]).
    pub fn parse(&self, payload: Option<&[u8]>) -> Result<Map<String, Value>, Mismatch> {
        parse_fields(payload, |name| self.fields.iter().any(|f| f.name == name))
    }

    /// The typed values of a record, one per field in schema order: `None`
    /// for a field that is absent, null or of another type, and for every
    /// field of a payload that is not a JSON object (`object` is `None`).
    pub fn row<'a>(
        &'a self,
        object: Option<&'a Map<String, Value>>,
    ) -> impl Iterator<Item = Option<Typed<'a>>> + 'a {
        self.fields.iter().map(move |field| {
            let value = object?.get(&field.name)?;
            field.field_type.convert(value).ok().flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(document: &str, previous: Option<&PayloadSchema>) -> PayloadSchema {
        PayloadSchema::declare(document, previous).unwrap()
    }

    fn ids(schema: &PayloadSchema) -> Vec<(&str, i32)> {
        (schema.fields.iter())
            .map(|f| (f.name.as_str(), f.id))
            .collect()
    }

    const USERS: &str = r#"{"fields":[{"name":"user","type":"string","required":true},
        {"name":"amount","type":"int64"},{"name":"ok","type":"boolean"},
        {"name":"score","type":"double"},{"name":"at","type":"timestamp"}]}"#;

    #[test]
    fn a_document_gets_ids_from_1000_in_order() {
        let schema = declare(USERS, None);
        assert_eq!(
            ids(&schema),
            [
                ("user", 1000),
                ("amount", 1001),
                ("ok", 1002),
                ("score", 1003),
                ("at", 1004)
            ]
        );
        assert!(schema.fields[0].required && !schema.fields[1].required);
        assert_eq!(schema.fields[4].field_type, FieldType::Timestamp);
        assert!(schema.removed.is_empty() && schema.is_active());
    }

    #[test]
    fn ids_stay_across_changes_and_removed_names_keep_theirs() {
        let first = declare(USERS, None);
        // `ok` and `score` removed, `amount` no longer first, `country` new.
        let second = declare(
            r#"{"fields":[{"name":"country","type":"string"},{"name":"user","type":"string"},
                {"name":"at","type":"timestamp"},{"name":"amount","type":"int64","required":true}]}"#,
            Some(&first),
        );
        assert_eq!(
            ids(&second),
            [
                ("country", 1005),
                ("user", 1000),
                ("at", 1004),
                ("amount", 1001)
            ]
        );
        let removed: Vec<(&str, i32)> = (second.removed.iter())
            .map(|f| (f.name.as_str(), f.id))
            .collect();
        assert_eq!(removed, [("ok", 1002), ("score", 1003)]);
        // A removed field declared again gets its id back; a new one the
        // next id after every id ever handed out.
        let third = declare(
            r#"{"fields":[{"name":"score","type":"double"},{"name":"tip","type":"double"}]}"#,
            Some(&second),
        );
        assert_eq!(ids(&third), [("score", 1003), ("tip", 1006)]);
        assert_eq!(third.removed.len(), 5);
        // Cleared: nothing checked, every id still taken.
        let cleared = third.cleared();
        assert!(!cleared.is_active());
        assert!(cleared.check(Some(b"not json")).is_ok());
        let again = declare(
            r#"{"fields":[{"name":"new","type":"string"},{"name":"user","type":"string"}]}"#,
            Some(&cleared),
        );
        assert_eq!(ids(&again), [("new", 1007), ("user", 1000)]);
    }

    #[test]
    fn a_type_change_is_refused_naming_the_field_even_after_removal() {
        let first = declare(USERS, None);
        let err = PayloadSchema::declare(
            r#"{"fields":[{"name":"amount","type":"string"}]}"#,
            Some(&first),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "payload schema: field \"amount\": its type is int64 (id 1001) and cannot change to string; declare a field under a new name"
        );
        let removed = declare(
            r#"{"fields":[{"name":"user","type":"string"}]}"#,
            Some(&first),
        );
        let err = PayloadSchema::declare(
            r#"{"fields":[{"name":"score","type":"int64"}]}"#,
            Some(&removed),
        )
        .unwrap_err();
        assert!(err.contains("field \"score\": its type is double"), "{err}");
        let err = PayloadSchema::declare(
            r#"{"fields":[{"name":"User","type":"string"}]}"#,
            Some(&first),
        )
        .unwrap_err();
        assert!(
            err.contains("field \"User\": the namespace has a field \"user\""),
            "{err}"
        );
    }

    #[test]
    fn bad_documents_get_one_line_reasons() {
        let err = |document: &str| PayloadSchema::declare(document, None).unwrap_err();
        for (document, reason) in [
            ("not json", "payload schema: expected ident"),
            ("{}", "missing field `fields`"),
            (r#"{"fields":[]}"#, "no fields"),
            (
                r#"{"fields":[{"name":"a","type":"int"}]}"#,
                "unknown variant `int`",
            ),
            (
                r#"{"fields":[{"name":"a","type":"string","requried":true}]}"#,
                "unknown field `requried`",
            ),
            (
                r#"{"fields":[{"name":"a","type":"string","id":1000}]}"#,
                "unknown field `id`",
            ),
            (
                r#"{"fields":[{"name":"","type":"string"}]}"#,
                "field \"\": a name is",
            ),
            (
                r#"{"fields":[{"name":"a.b","type":"string"}]}"#,
                "field \"a.b\": a name is",
            ),
            (
                r#"{"fields":[{"name":"9a","type":"string"}]}"#,
                "field \"9a\": a name is",
            ),
            (
                r#"{"fields":[{"name":"Payload","type":"string"}]}"#,
                "field \"Payload\": payload is a record column",
            ),
            (
                r#"{"fields":[{"name":"a","type":"string"},{"name":"A","type":"int64"}]}"#,
                "field \"A\" is declared twice",
            ),
        ] {
            let got = err(document);
            assert!(got.contains(reason), "{document}: {got}");
            assert!(!got.contains('\n'), "{document}: {got}");
        }
        let many: Vec<String> = (0..=MAX_FIELDS)
            .map(|i| format!(r#"{{"name":"f{i}","type":"string"}}"#))
            .collect();
        let got = err(&format!(r#"{{"fields":[{}]}}"#, many.join(",")));
        assert!(got.contains("more than 256"), "{got}");
    }

    #[test]
    fn payloads_are_checked_with_messages_naming_the_field() {
        let schema = declare(USERS, None);
        let check = |payload: &str| schema.check(Some(payload.as_bytes()));
        let message = |payload: &str| check(payload).unwrap_err().to_string();
        assert!(check(r#"{"user":"u1"}"#).is_ok());
        assert!(
            check(r#"{"user":"u1","amount":-7,"ok":false,"score":2,"at":"2024-05-01T12:00:00+02:00","extra":[1]}"#)
                .is_ok()
        );
        assert!(check(r#"{"user":"u1","amount":null,"score":1.5e3}"#).is_ok());
        assert_eq!(
            message(r#"{"user":"u1","amount":"x"}"#),
            r#"field "amount": expected int64, got string "x""#
        );
        assert_eq!(
            message(r#"{"user":"u1","amount":1.5}"#),
            r#"field "amount": expected int64, got number 1.5"#
        );
        assert_eq!(
            message(r#"{"user":"u1","amount":9223372036854775808}"#),
            r#"field "amount": expected int64, got number 9223372036854775808"#
        );
        assert_eq!(
            message(r#"{"amount":1}"#),
            r#"field "user": missing (required)"#
        );
        assert_eq!(
            message(r#"{"user":null}"#),
            r#"field "user": expected string, got null"#
        );
        assert_eq!(
            message(r#"{"user":"u","at":"yesterday"}"#),
            r#"field "at": expected timestamp (an RFC 3339 string), got string "yesterday""#
        );
        assert_eq!(
            message(r#"{"user":"u","ok":"true"}"#),
            r#"field "ok": expected boolean, got string "true""#
        );
        assert_eq!(
            message(r#"{"user":{"id":1}}"#),
            r#"field "user": expected string, got an object"#
        );
        assert_eq!(
            message("[1,2]"),
            "payload is an array, expected a JSON object"
        );
        assert_eq!(
            message("\"text\""),
            "payload is string \"text\", expected a JSON object"
        );
        assert!(message("{\"user\":").starts_with("payload is not JSON: EOF"));
        assert_eq!(
            schema.check(None).unwrap_err().to_string(),
            "null payload, expected a JSON object"
        );
        // A long or multi-line value is cut and quoted: one line.
        let long = format!(r#"{{"user":"u","amount":"{}\nmore"}}"#, "y".repeat(100));
        let got = message(&long);
        assert!(!got.contains('\n') && got.len() < 120, "{got}");
    }

    #[test]
    fn payloads_are_read_without_keeping_what_the_schema_does_not_name() {
        let schema = declare(USERS, None);
        let check = |payload: &str| schema.check(Some(payload.as_bytes()));
        // Containers are read through, never kept, and named by kind.
        let big = format!(
            r#"{{"user":"u","skip":[{}0],"amount":1}}"#,
            r#"[1,{"a":2}],"#.repeat(10_000)
        );
        assert!(check(&big).is_ok());
        let err = check(r#"{"user":["a",{"b":[1]}]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"field "user": expected string, got an array"#
        );
        let err = check(r#"[1,2,{"user":"u"}]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload is an array, expected a JSON object"
        );
        let err = check(r#""text""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"payload is string "text", expected a JSON object"#
        );
        // As serde_json reads a document: the last of repeated names, and
        // nothing after the value.
        assert!(check(r#"{"user":1,"user":"u"}"#).is_ok());
        assert!(matches!(
            check(r#"{"user":"u"} x"#),
            Err(Mismatch::NotJson(_))
        ));
        assert!(matches!(check(r#"{"user":"u""#), Err(Mismatch::NotJson(_))));
        // What is read through is checked as serde_json checks values: the
        // same payloads are refused whichever field holds them.
        let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(200), "]".repeat(200));
        let refused_as_values = [
            br#"{"user":"u","x":"\ud800"}"#.to_vec(),
            br#"{"user":"u","x":1e400}"#.to_vec(),
            [br#"{"user":"u","x":""#.as_slice(), b"\xff\"}"].concat(),
            format!(r#"{{"user":"u","x":{}}}"#, deep("1")).into_bytes(),
            format!(r#"{{"user":"u","x":[{{"a":{}}}]}}"#, deep("1")).into_bytes(),
            format!(r#"{{"user":{}}}"#, deep("1")).into_bytes(),
        ];
        for payload in refused_as_values {
            assert!(serde_json::from_slice::<Value>(&payload).is_err());
            let got = schema.check(Some(&payload));
            let shown = String::from_utf8_lossy(&payload);
            assert!(
                matches!(got, Err(Mismatch::NotJson(_))),
                "{got:?} for {shown}"
            );
        }
    }

    #[test]
    fn a_row_holds_nulls_where_a_value_does_not_fit() {
        let schema = declare(USERS, None);
        let object = (schema.parse(Some(
            br#"{"user":"u1","amount":"x","ok":true,"score":3,"at":"1970-01-01T00:00:01.5Z","other":[1,{"a":2}]}"#,
        )))
        .unwrap();
        assert!(
            !object.contains_key("other"),
            "fields outside the schema are not kept"
        );
        let row: Vec<Option<Typed<'_>>> = schema.row(Some(&object)).collect();
        assert_eq!(
            row,
            [
                Some(Typed::String("u1")),
                None,
                Some(Typed::Boolean(true)),
                Some(Typed::Double(3.0)),
                Some(Typed::Timestamp(1_500_000)),
            ]
        );
        assert!(schema.row(None).all(|value| value.is_none()));
    }

    #[test]
    fn the_stored_form_round_trips() {
        let first = declare(USERS, None);
        let second = declare(
            r#"{"fields":[{"name":"user","type":"string"}]}"#,
            Some(&first),
        );
        let json = serde_json::to_string(&second).unwrap();
        assert!(
            json.starts_with(
                r#"{"fields":[{"name":"user","type":"string","id":1000}],"removed":["#
            ),
            "{json}"
        );
        let back: PayloadSchema = serde_json::from_str(&json).unwrap();
        assert_eq!(back, second);
    }
}
