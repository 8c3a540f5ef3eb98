//! Merging of configuration layers as TOML tables. The embedded defaults name
//! every key and give its type: a value from a file must have the default's
//! type, and a string from the environment or a flag is converted to it. Each
//! value is also tried against the typed config on its own, so range and enum
//! errors name the key and the layer that set it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use super::{
    is_secret_property, ConfigError, Origin, WeftConfig, DEFAULT_TOML, IGNORED_ENV,
    IGNORED_ENV_PREFIXES, REDACTED,
};

/// The free-form table of librdkafka properties.
const PROPERTIES: [&str; 2] = ["kafka", "properties"];

/// A value as given: typed (from a TOML file) or text (environment, flags).
enum Input {
    Typed(Value),
    Text(String),
}

impl Input {
    fn shown(&self) -> String {
        match self {
            Input::Typed(Value::String(s)) | Input::Text(s) => s.clone(),
            Input::Typed(v) => v.to_string(),
        }
    }
}

/// The layers merged so far, and where each value came from.
pub(super) struct Merged {
    defaults: Table,
    table: Table,
    origins: BTreeMap<String, Origin>,
}

impl Merged {
    pub(super) fn new() -> Result<Self, ConfigError> {
        let defaults: Table =
            DEFAULT_TOML
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Toml {
                    path: "<built-in defaults>".into(),
                    message: e.to_string(),
                })?;
        Ok(Self {
            table: defaults.clone(),
            defaults,
            origins: BTreeMap::new(),
        })
    }

    /// The layer that set `key` last.
    pub(super) fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The merged tables as a typed config.
    pub(super) fn build(&self) -> Result<WeftConfig, ConfigError> {
        WeftConfig::deserialize(Value::Table(self.table.clone())).map_err(|e| {
            ConfigError::Invalid {
                key: "(configuration)".into(),
                message: e.to_string(),
                value: String::new(),
                origin: Origin::Default,
            }
        })
    }

    pub(super) fn apply_file(&mut self, table: Table, path: &Path) -> Result<(), ConfigError> {
        self.walk_file(Vec::new(), table, &Origin::File(path.to_owned()))
    }

    fn walk_file(
        &mut self,
        prefix: Vec<String>,
        table: Table,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        for (key, value) in table {
            let mut path = prefix.clone();
            path.push(key);
            if path == PROPERTIES {
                let Value::Table(props) = value else {
                    return Err(invalid(
                        &path,
                        &Input::Typed(value),
                        origin,
                        "expected a table of librdkafka properties",
                    ));
                };
                let mut flat = Vec::new();
                flatten(String::new(), props, &mut flat);
                for (name, v) in flat {
                    self.set(
                        &[PROPERTIES[0], PROPERTIES[1], &name],
                        Input::Typed(v),
                        origin,
                    )?;
                }
                continue;
            }
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            match lookup(&self.defaults, &refs) {
                None => {
                    return Err(ConfigError::UnknownKey {
                        key: path.join("."),
                        origin: origin.clone(),
                    })
                }
                Some(Value::Table(_)) => match value {
                    Value::Table(sub) => self.walk_file(path, sub, origin)?,
                    other => {
                        return Err(invalid(
                            &path,
                            &Input::Typed(other),
                            origin,
                            "expected a table",
                        ))
                    }
                },
                Some(_) => self.set(&refs, Input::Typed(value), origin)?,
            }
        }
        Ok(())
    }

    /// One `WEFT_*` variable; ignored names are skipped.
    pub(super) fn apply_env(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        if IGNORED_ENV.contains(&var) || IGNORED_ENV_PREFIXES.iter().any(|p| var.starts_with(p)) {
            return Ok(());
        }
        let unknown = || ConfigError::UnknownEnv {
            var: var.to_owned(),
        };
        let rest = var.strip_prefix("WEFT_").ok_or_else(unknown)?;
        let origin = Origin::Env(var.to_owned());
        if let Some(name) = rest.strip_prefix("KAFKA_PROPERTY_") {
            let name = name.to_ascii_lowercase().replace('_', ".");
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(unknown());
            }
            return self.set(
                &[PROPERTIES[0], PROPERTIES[1], &name],
                Input::Text(value.to_owned()),
                &origin,
            );
        }
        let lower = rest.to_ascii_lowercase();
        for (section, fields) in &self.defaults {
            let Value::Table(fields) = fields else {
                continue;
            };
            let Some(field) = lower
                .strip_prefix(section.as_str())
                .and_then(|f| f.strip_prefix('_'))
            else {
                continue;
            };
            if matches!(fields.get(field), Some(v) if !v.is_table()) {
                let path = [section.clone(), field.to_owned()];
                let refs = [path[0].as_str(), path[1].as_str()];
                return self.set(&refs, Input::Text(value.to_owned()), &origin);
            }
        }
        Err(unknown())
    }

    /// One explicit override: a dotted key and a value in text.
    pub(super) fn apply_override(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let path: Vec<&str> = key.split('.').collect();
        let props =
            path.len() > 2 && path[..2] == PROPERTIES && !path[2..].iter().any(|p| p.is_empty());
        if !props && !matches!(lookup(&self.defaults, &path), Some(v) if !v.is_table()) {
            return Err(ConfigError::UnknownKey {
                key: key.to_owned(),
                origin: Origin::Override,
            });
        }
        if props {
            let name = path[2..].join(".");
            return self.set(
                &[PROPERTIES[0], PROPERTIES[1], &name],
                Input::Text(value.to_owned()),
                &Origin::Override,
            );
        }
        self.set(&path, Input::Text(value.to_owned()), &Origin::Override)
    }

    /// Sets one leaf, converted to and checked against its default's type.
    fn set(&mut self, path: &[&str], input: Input, origin: &Origin) -> Result<(), ConfigError> {
        let value = if path.len() == 3 && path[..2] == PROPERTIES {
            match input {
                Input::Text(s) | Input::Typed(Value::String(s)) => Value::String(s),
                Input::Typed(v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => {
                    Value::String(v.to_string())
                }
                other => return Err(invalid(path, &other, origin, "expected a string")),
            }
        } else {
            let Some(default) = lookup(&self.defaults, path) else {
                let key = path.join(".");
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: origin.clone(),
                });
            };
            let converted = convert(default, &input)
                .map_err(|expected| invalid(path, &input, origin, expected))?;
            // Tried alone on top of the defaults: an error here is this value's.
            let mut probe = self.defaults.clone();
            insert(&mut probe, path, converted.clone());
            if let Err(e) = WeftConfig::deserialize(Value::Table(probe)) {
                // toml appends "in `key`" on a second line; the key is named already.
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                return Err(invalid(path, &input, origin, first));
            }
            converted
        };
        insert(&mut self.table, path, value);
        self.origins.insert(path.join("."), origin.clone());
        Ok(())
    }
}

fn invalid<S: AsRef<str>>(
    path: &[S],
    input: &Input,
    origin: &Origin,
    expected: &str,
) -> ConfigError {
    let segments: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    let secret = segments.len() > 2
        && segments[..2] == PROPERTIES
        && is_secret_property(&segments[2..].join("."))
        || segments == ["secrets", "keys"];
    ConfigError::InvalidValue {
        key: segments.join("."),
        // An error message is printed and logged: a secret is not shown in it.
        value: if secret {
            REDACTED.to_owned()
        } else {
            input.shown()
        },
        origin: origin.clone(),
        expected: expected.to_owned(),
    }
}

/// `input` as a value of the same type as `default`, or what was expected.
fn convert(default: &Value, input: &Input) -> Result<Value, &'static str> {
    let text = match input {
        Input::Typed(v) if v.same_type(default) => return Ok(v.clone()),
        Input::Typed(_) => None,
        Input::Text(s) => Some(s.trim()),
    };
    match default {
        Value::String(_) => text
            .map(|s| Value::String(s.to_owned()))
            .ok_or("expected a string"),
        Value::Integer(_) => text
            .and_then(|s| s.parse().ok())
            .map(Value::Integer)
            .ok_or("expected an integer"),
        Value::Boolean(_) => match text.map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "1" | "yes" | "on") => Ok(Value::Boolean(true)),
            Some("false" | "0" | "no" | "off") => Ok(Value::Boolean(false)),
            _ => Err("expected true or false"),
        },
        Value::Array(_) => text
            .map(|s| {
                let items = s.split(',').map(str::trim).filter(|i| !i.is_empty());
                Value::Array(items.map(|i| Value::String(i.to_owned())).collect())
            })
            .ok_or("expected a list"),
        _ => Err("expected a value of the default's type"),
    }
}

/// Nested tables of properties flattened to dotted names (`sasl.mechanism`).
fn flatten(prefix: String, table: Table, out: &mut Vec<(String, Value)>) {
    for (k, v) in table {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(sub) => flatten(name, sub, out),
            other => out.push((name, other)),
        }
    }
}

fn lookup<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(*first)?;
    match (rest.is_empty(), value) {
        (true, v) => Some(v),
        (false, Value::Table(sub)) => lookup(sub, rest),
        (false, _) => None,
    }
}

fn insert(table: &mut Table, path: &[&str], value: Value) {
    match path {
        [] => {}
        [leaf] => {
            table.insert((*leaf).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            if let Value::Table(sub) = entry {
                insert(sub, rest, value);
            }
        }
    }
}
