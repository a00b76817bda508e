//! `dlog ns …`, and the settings flags of `dlog logs create|config`:
//! retention, roll policy, replication and quota through `AdminService`;
//! a namespace's payload schema (`dlog ns config NS --payload-schema FILE`).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use distributedlog::{Client, Settings, SettingsChange};
use dlog_wire::payload_schema::PayloadSchema;
use serde_json::json;

/// Settings flags; only those given change.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Delete segments older than this (`7d`, `12h`, `90m`), or `forever`.
    #[arg(long, value_name = "AGE|forever")]
    pub retention: Option<String>,
    /// Delete the oldest segments while the log is larger than this many
    /// bytes, or `none`.
    #[arg(long, value_name = "BYTES|none")]
    pub retention_bytes: Option<String>,
    /// Roll the open segment past this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub roll_bytes: Option<u64>,
    /// Roll the open segment past this many records.
    #[arg(long, value_name = "RECORDS")]
    pub roll_records: Option<u64>,
    /// Roll the open segment at this age (`10m`).
    #[arg(long, value_name = "AGE")]
    pub roll_age: Option<String>,
    /// Replication of new segments: ensemble/write quorum/ack quorum (`3/3/2`).
    #[arg(long, value_name = "E/W/A")]
    pub replication: Option<String>,
    /// Appended bytes per second per log, or `none`.
    #[arg(long, value_name = "BYTES|none")]
    pub quota_bytes_per_sec: Option<String>,
    /// Appended records per second per log, or `none`.
    #[arg(long, value_name = "RECORDS|none")]
    pub quota_records_per_sec: Option<String>,
    /// Appended bytes per second over the namespace's logs on each ingest
    /// node, or `none` (namespaces only).
    #[arg(long, value_name = "BYTES|none")]
    pub ns_quota_bytes_per_sec: Option<String>,
    /// Appended records per second over the namespace's logs on each
    /// ingest node, or `none` (namespaces only).
    #[arg(long, value_name = "RECORDS|none")]
    pub ns_quota_records_per_sec: Option<String>,
}

impl SettingsArgs {
    /// The change these flags ask for.
    pub fn change(&self) -> anyhow::Result<SettingsChange> {
        let mut change = SettingsChange::default();
        if let Some(retention) = &self.retention {
            match retention.as_str() {
                "forever" => change.clear_retention_ms = true,
                age => change.retention_ms = Some(millis(age, "--retention")?),
            }
        }
        if let Some(bytes) = &self.retention_bytes {
            match limit(bytes, "--retention-bytes")? {
                Some(bytes) => change.retention_bytes = Some(bytes),
                None => change.clear_retention_bytes = true,
            }
        }
        change.roll_max_bytes = self.roll_bytes;
        change.roll_max_records = self.roll_records;
        if let Some(age) = &self.roll_age {
            change.roll_max_age_ms = Some(millis(age, "--roll-age")?);
        }
        if let Some(replication) = &self.replication {
            change.replication = Some(replication_of(replication)?);
        }
        let quotas = [
            (
                &self.quota_bytes_per_sec,
                "--quota-bytes-per-sec",
                &mut change.max_append_bytes_per_sec,
                &mut change.clear_max_append_bytes_per_sec,
            ),
            (
                &self.quota_records_per_sec,
                "--quota-records-per-sec",
                &mut change.max_append_records_per_sec,
                &mut change.clear_max_append_records_per_sec,
            ),
            (
                &self.ns_quota_bytes_per_sec,
                "--ns-quota-bytes-per-sec",
                &mut change.namespace_max_append_bytes_per_sec,
                &mut change.clear_namespace_max_append_bytes_per_sec,
            ),
            (
                &self.ns_quota_records_per_sec,
                "--ns-quota-records-per-sec",
                &mut change.namespace_max_append_records_per_sec,
                &mut change.clear_namespace_max_append_records_per_sec,
            ),
        ];
        for (text, flag, value, clear) in quotas {
            if let Some(text) = text {
                match limit(text, flag)? {
                    Some(quota) => *value = Some(quota),
                    None => *clear = true,
                }
            }
        }
        Ok(change)
    }
}

/// The payload schema flag of `dlog ns create|config` (namespaces only).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PayloadSchemaArgs {
    /// A payload schema (a JSON file: {"fields":[{"name":"user","type":"string","required":true},
    /// ...]}, types string, int64, double, boolean, timestamp): appends whose payloads do not
    /// match are refused, and the Parquet files and Iceberg tables get a typed column per field;
    /// `none` stops checking.
    #[arg(long, value_name = "FILE|none")]
    pub payload_schema: Option<String>,
}

impl PayloadSchemaArgs {
    /// Adds the schema change to `change`. A file that is not a schema
    /// document is refused here, before any call (the node refuses what
    /// only it can tell: a field whose type changes).
    pub fn apply(&self, change: &mut SettingsChange) -> anyhow::Result<()> {
        match self.payload_schema.as_deref() {
            None => {}
            Some("none") => change.clear_payload_schema = true,
            Some(file) => {
                let document = std::fs::read_to_string(file)
                    .with_context(|| format!("--payload-schema {file}"))?;
                PayloadSchema::declare(&document, None)
                    .map_err(|reason| anyhow!("--payload-schema {file}: {reason}"))?;
                change.payload_schema = Some(document);
            }
        }
        Ok(())
    }
}

fn millis(text: &str, flag: &str) -> anyhow::Result<u64> {
    let age: Duration = humantime::parse_duration(text)
        .with_context(|| format!("{flag} {text}: expected a duration such as 7d, 12h or 90m"))?;
    Ok(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
}

fn limit(text: &str, flag: &str) -> anyhow::Result<Option<u64>> {
    if text == "none" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .with_context(|| format!("{flag} {text}: expected a number or none"))
}

fn replication_of(text: &str) -> anyhow::Result<(u32, u32, u32)> {
    let parts: Vec<&str> = text.split('/').collect();
    let [e, w, a] = parts.as_slice() else {
        bail!("--replication {text}: expected E/W/A, such as 3/3/2");
    };
    let number = |part: &str| {
        part.parse::<u32>()
            .with_context(|| format!("--replication {text}: {part:?} is not a number"))
    };
    Ok((number(e)?, number(w)?, number(a)?))
}

/// `dlog ns` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NsCommand {
    /// Give a namespace settings of its own (the cluster default, changed by the flags).
    Create {
        namespace: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        schema: PayloadSchemaArgs,
    },
    /// Change a namespace's settings (only the flags given); running logs apply them at once.
    #[command(alias = "set")]
    Config {
        namespace: String,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        schema: PayloadSchemaArgs,
    },
    /// Namespaces with settings of their own or with logs.
    List,
    /// A namespace's settings in force.
    Info {
        namespace: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn ns(client: &Client, command: NsCommand) -> anyhow::Result<()> {
    match command {
        NsCommand::Create {
            namespace,
            settings,
            schema,
        } => {
            let mut change = settings.change()?;
            schema.apply(&mut change)?;
            let settings = client.create_namespace(&namespace, &change).await?;
            println!("created namespace {namespace}");
            print_settings(&settings, false);
        }
        NsCommand::Config {
            namespace,
            settings,
            schema,
        } => {
            let mut change = settings.change()?;
            schema.apply(&mut change)?;
            if change.is_empty() {
                bail!("nothing to change: give at least one setting (see dlog ns config --help)");
            }
            let settings = client.configure_namespace(&namespace, &change).await?;
            print_settings(&settings, false);
        }
        NsCommand::List => {
            for namespace in client.list_namespaces().await? {
                println!("{namespace}");
            }
        }
        NsCommand::Info { namespace, json } => {
            let settings = client.namespace(&namespace).await?;
            print_settings(&settings, json);
        }
    }
    Ok(())
}

/// Settings as `key: value` lines, or one JSON object (a contract:
/// docs/cli.md).
pub fn print_settings(settings: &Settings, as_json: bool) {
    if as_json {
        println!("{}", settings_json(settings));
        return;
    }
    let or = |value: Option<u64>, none: &str| value.map_or(none.to_owned(), |v| v.to_string());
    println!(
        "own settings:       {}",
        if settings.own {
            "yes"
        } else {
            "no (inherited)"
        }
    );
    println!(
        "retention:          {}",
        settings.retention_ms.map_or("forever".to_owned(), |ms| {
            humantime::format_duration(Duration::from_millis(ms)).to_string()
        })
    );
    println!(
        "retention bytes:    {}",
        or(settings.retention_bytes, "none")
    );
    println!("roll bytes:         {}", settings.roll_max_bytes);
    println!("roll records:       {}", settings.roll_max_records);
    println!(
        "roll age:           {}",
        humantime::format_duration(Duration::from_millis(settings.roll_max_age_ms))
    );
    println!(
        "replication:        {}/{}/{}",
        settings.ensemble, settings.write_quorum, settings.ack_quorum
    );
    println!(
        "quota bytes/s:      {}",
        or(settings.max_append_bytes_per_sec, "none")
    );
    println!(
        "quota records/s:    {}",
        or(settings.max_append_records_per_sec, "none")
    );
    println!(
        "ns quota bytes/s:   {}",
        or(settings.namespace_max_append_bytes_per_sec, "none")
    );
    println!(
        "ns quota records/s: {}",
        or(settings.namespace_max_append_records_per_sec, "none")
    );
    println!("payload schema:     {}", schema_text(settings));
}

/// The payload schema in force as `name type [required] (id N)` items.
fn schema_text(settings: &Settings) -> String {
    let schema = (settings.payload_schema.as_deref())
        .and_then(|json| serde_json::from_str::<PayloadSchema>(json).ok());
    let Some(schema) = schema else {
        return "none".to_owned();
    };
    let fields: Vec<String> = (schema.fields.iter())
        .map(|f| {
            let required = if f.required { " required" } else { "" };
            format!("{} {}{required} (id {})", f.name, f.field_type, f.id)
        })
        .collect();
    fields.join(", ")
}

pub fn settings_json(settings: &Settings) -> serde_json::Value {
    json!({
        "own": settings.own,
        "retention_ms": settings.retention_ms,
        "retention_bytes": settings.retention_bytes,
        "roll_max_bytes": settings.roll_max_bytes,
        "roll_max_records": settings.roll_max_records,
        "roll_max_age_ms": settings.roll_max_age_ms,
        "replication": format!("{}/{}/{}", settings.ensemble, settings.write_quorum, settings.ack_quorum),
        "max_append_bytes_per_sec": settings.max_append_bytes_per_sec,
        "max_append_records_per_sec": settings.max_append_records_per_sec,
        "namespace_max_append_bytes_per_sec": settings.namespace_max_append_bytes_per_sec,
        "namespace_max_append_records_per_sec": settings.namespace_max_append_records_per_sec,
        "payload_schema": (settings.payload_schema.as_deref())
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_a_change() {
        let args = SettingsArgs {
            retention: Some("7d".into()),
            retention_bytes: Some("none".into()),
            roll_age: Some("10m".into()),
            replication: Some("3/3/2".into()),
            quota_bytes_per_sec: Some("1048576".into()),
            ns_quota_records_per_sec: Some("none".into()),
            ..SettingsArgs::default()
        };
        let change = args.change().unwrap();
        assert_eq!(change.retention_ms, Some(7 * 24 * 3600 * 1000));
        assert!(change.clear_retention_bytes);
        assert_eq!(change.roll_max_age_ms, Some(600_000));
        assert_eq!(change.replication, Some((3, 3, 2)));
        assert_eq!(change.max_append_bytes_per_sec, Some(1_048_576));
        assert!(change.clear_namespace_max_append_records_per_sec);
        assert!(!change.clear_max_append_records_per_sec);
        let forever = SettingsArgs {
            retention: Some("forever".into()),
            ..SettingsArgs::default()
        };
        assert!(forever.change().unwrap().clear_retention_ms);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let bad = |args: SettingsArgs| args.change().unwrap_err().to_string();
        let err = bad(SettingsArgs {
            replication: Some("3/2".into()),
            ..SettingsArgs::default()
        });
        assert!(err.contains("--replication 3/2"), "{err}");
        let err = bad(SettingsArgs {
            retention: Some("soon".into()),
            ..SettingsArgs::default()
        });
        assert!(err.contains("--retention soon"), "{err}");
        let err = bad(SettingsArgs {
            quota_bytes_per_sec: Some("lots".into()),
            ..SettingsArgs::default()
        });
        assert!(err.contains("--quota-bytes-per-sec lots"), "{err}");
    }

    #[test]
    fn a_payload_schema_file_is_sent_checked_and_none_clears() {
        let dir = tempfile::tempdir().unwrap();
        let apply = |value: &str| {
            let mut change = SettingsChange::default();
            let args = PayloadSchemaArgs {
                payload_schema: Some(value.to_owned()),
            };
            args.apply(&mut change).map(|()| change)
        };
        let good = dir.path().join("good.json");
        let document = r#"{"fields":[{"name":"user","type":"string"}]}"#;
        std::fs::write(&good, document).unwrap();
        let change = apply(good.to_str().unwrap()).unwrap();
        assert_eq!(change.payload_schema.as_deref(), Some(document));
        assert!(!change.clear_payload_schema);
        assert!(apply("none").unwrap().clear_payload_schema);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"fields":[{"name":"user","type":"text"}]}"#).unwrap();
        let err = apply(bad.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            err.starts_with("--payload-schema ") && err.contains("unknown variant `text`"),
            "{err}"
        );
        let err = format!("{:#}", apply("/no/such/file.json").unwrap_err());
        assert!(
            err.contains("--payload-schema /no/such/file.json: No such file"),
            "{err}"
        );
    }
}
