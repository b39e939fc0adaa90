//! The TOML configuration file (`--config FILE`): a flat table whose keys are the flag
//! names without `--` (`pool-max-idle = 64`). This module reads it, refuses keys that are
//! not settings, and remembers the line of every key so that a bad value later is reported
//! as "KEY: what is wrong (in FILE, line N)". It does not interpret values: each setting's
//! [`Kind`](super::values::Kind) does, in `Settings::resolve`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::ConfigError;

/// One `key = value` line of the file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: toml::Value,
    /// 1-based line of the key.
    pub line: usize,
}

/// A parsed configuration file: its path (for messages) and its entries by key.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    pub path: Arc<str>,
    entries: BTreeMap<String, Entry>,
}

impl SettingsFile {
    /// Reads and parses `path`; `keys` are the settings' file keys (kebab-case).
    pub fn read(path: &Path, keys: &[String]) -> Result<SettingsFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read '{}': {e}", path.display()))
        })?;
        SettingsFile::parse(&path.display().to_string(), &text, keys)
    }

    /// Parses `text` (the contents of the file `path`).
    pub fn parse(path: &str, text: &str, keys: &[String]) -> Result<SettingsFile, ConfigError> {
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| {
                ConfigError::new(
                    "--config",
                    format!("'{path}': {}", e.to_string().trim_end()),
                )
            })?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut entries = BTreeMap::new();
        for (key, value) in table {
            let line = line_of(key.span().start);
            let key = key.into_inner();
            if !keys.contains(&key) {
                return Err(ConfigError::new(
                    "--config",
                    format!(
                        "unknown key '{key}'{} in {path}, line {line}; the keys are the flag names without --: {}",
                        suggestion(&key, keys),
                        keys.join(", ")
                    ),
                ));
            }
            entries.insert(
                key,
                Entry {
                    value: value.into_inner(),
                    line,
                },
            );
        }
        Ok(SettingsFile {
            path: path.into(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
}

/// " (did you mean 'pool-max-idle'?)" for `pool_max_idle` and the like.
fn suggestion(key: &str, keys: &[String]) -> String {
    let kebab = key.replace('_', "-").to_ascii_lowercase();
    match keys.iter().find(|k| **k == kebab) {
        Some(k) => format!(" (did you mean '{k}'?)"),
        None => String::new(),
    }
}
