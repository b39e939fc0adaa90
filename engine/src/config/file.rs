//! The TOML configuration file (`--config FILE`): a flat table whose keys are the flag
//! names without `--` (`pool-max-idle = 64`). This module reads it, refuses keys that are
//! not settings, and remembers the line of every key so that a bad value later is reported
//! as "KEY: what is wrong (in FILE, line N)". It does not interpret values: each setting's
//! [`Kind`](super::values::Kind) does, in `Settings::resolve`. The one nested part,
//! `[backends.NAME]` tables, is read by [`BackendsSection`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::backend::BackendsSection;
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
    /// The `[backends.NAME]` tables, if any (see `backend.rs`).
    pub backends: Option<BackendsSection>,
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
        // Values from the parsed table; lines from the text (top-level keys come before any
        // [table] header in TOML, so the first `key =` line is the key's).
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigError::new(
                "--config",
                format!("'{path}': {}", e.to_string().trim_end()),
            )
        })?;
        let mut entries = BTreeMap::new();
        let mut backends = None;
        for (key, value) in table {
            let line = key_line(text, 1, &key).unwrap_or(1);
            if key == "backends" {
                backends = BackendsSection::parse(path, text, &value)?;
                continue;
            }
            if !keys.contains(&key) {
                return Err(ConfigError::new(
                    "--config",
                    format!(
                        "unknown key '{key}'{} in {path}, line {line}; the keys are the flag names without --, and [backends.NAME] tables: {}",
                        suggestion(&key, keys),
                        keys.join(", ")
                    ),
                ));
            }
            entries.insert(key, Entry { value, line });
        }
        Ok(SettingsFile {
            path: path.into(),
            entries,
            backends,
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

/// The 1-based line of the first `key = ...` at or after line `from`, if any.
pub fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('"')
                .and_then(|r| r.strip_prefix(key))
                .and_then(|r| r.strip_prefix('"'))
                .or_else(|| l.strip_prefix(key));
            l.is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}
