//! The machinery behind [`settings!`](super::settings): one declaration per setting
//! generates its flag (a field of [`Flags`](super::Flags), parsed and typed by clap), its
//! file key (the flag name without `--`), its default, its help text (with the default
//! appended as `[default: …]`), and its resolved form in [`Settings`](super::Settings),
//! which records where the value came from so that an error can name the flag, or the key
//! with the file and line.
//!
//! Precedence is the same for every setting: a flag wins over the file, the file over the
//! default. A default is written as the text a user would type (`"3s"`, `"64KiB"`) and
//! parsed by the same parser; a unit test resolves an empty command line, so every
//! default is known to parse.

use std::sync::Arc;

use super::file::SettingsFile;
use super::values::{from_toml_list, Kind};
use super::ConfigError;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// The configuration file, at this line.
    File { path: Arc<str>, line: usize },
    /// Nobody said: the built-in default (or nothing, for a setting without one).
    Default,
}

impl Origin {
    fn rank(&self) -> u8 {
        match self {
            Origin::Flag => 2,
            Origin::File { .. } => 1,
            Origin::Default => 0,
        }
    }

    /// Whether a value from here overrides one from `other` (a flag beats the file).
    pub fn beats(&self, other: &Origin) -> bool {
        self.rank() > other.rank()
    }
}

/// A resolved setting: its value, where it came from, and its name for messages.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
    /// The field name (`timeout_connect`).
    field: &'static str,
}

impl<T> Setting<T> {
    /// The file key: `timeout-connect`.
    pub fn key(&self) -> String {
        key_of(self.field)
    }

    /// How the user gave it: `--timeout-connect` on the command line (or by default),
    /// `timeout-connect` in the file.
    pub fn name(&self) -> String {
        match self.origin {
            Origin::File { .. } => self.key(),
            _ => format!("--{}", self.key()),
        }
    }

    /// An error about this setting's value, naming the flag, or the key, file and line.
    pub fn err(&self, msg: impl Into<String>) -> ConfigError {
        let msg = msg.into();
        match &self.origin {
            Origin::File { path, line } => {
                ConfigError::new(&self.key(), format!("{msg} (in {path}, line {line})"))
            }
            _ => ConfigError::new(&self.name(), msg),
        }
    }
}

impl<T> Setting<Option<T>> {
    /// Fills in the default (the text `default`, parsed by kind `K`) when nobody gave one.
    pub fn or_default<K: Kind<Value = T>>(self, default: &str) -> Result<Setting<T>, ConfigError> {
        let field = self.field;
        match self.value {
            Some(value) => Ok(Setting {
                value,
                origin: self.origin,
                field,
            }),
            None => match K::parse(default) {
                Ok(value) => Ok(Setting {
                    value,
                    origin: Origin::Default,
                    field,
                }),
                Err(e) => Err(ConfigError::new(
                    &format!("--{}", key_of(field)),
                    format!("the built-in default '{default}' does not parse ({e}); this is a bug"),
                )),
            },
        }
    }
}

/// A setting's `--help` line: its doc comment in one line, and its default, if it has one,
/// as clap shows defaults: `[default: 3s]`.
pub fn help<const N: usize>(doc: &[&str], default: [&str; N]) -> String {
    let joined = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    // Like clap's own doc-comment help: no final period.
    let mut help = joined.strip_suffix('.').unwrap_or(&joined).to_string();
    for d in default {
        help.push_str(&format!(" [default: {d}]"));
    }
    help
}

/// One setting as the configuration reference describes it.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    /// The field name (`timeout_connect`); the key is [`key_of`] it.
    pub key: &'static str,
    pub repeatable: bool,
    /// The default as a user would type it (empty: none).
    pub default: &'static [&'static str],
    /// The doc comment, line by line.
    pub doc: &'static [&'static str],
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// `timeout_connect` -> `timeout-connect`.
pub fn key_of(field: &str) -> String {
    field.replace('_', "-")
}

fn file_error(file: &SettingsFile, key: &str, line: usize, msg: String) -> ConfigError {
    ConfigError::new(key, format!("{msg} (in {}, line {line})", file.path))
}

/// Resolves a single-valued setting: the flag, else the file, else `None`.
pub fn resolve_one<K: Kind>(
    field: &'static str,
    flag: &Option<K::Value>,
    file: Option<&SettingsFile>,
) -> Result<Setting<Option<K::Value>>, ConfigError> {
    let key = key_of(field);
    // The file's value is checked even when a flag overrides it: a bad file is a bad file.
    let from_file = match file.and_then(|f| f.get(&key).map(|e| (f, e))) {
        Some((f, e)) => Some((
            K::from_toml(&e.value).map_err(|m| file_error(f, &key, e.line, m))?,
            Origin::File {
                path: f.path.clone(),
                line: e.line,
            },
        )),
        None => None,
    };
    let (value, origin) = match (flag, from_file) {
        (Some(v), _) => (Some(v.clone()), Origin::Flag),
        (None, Some((v, origin))) => (Some(v), origin),
        (None, None) => (None, Origin::Default),
    };
    Ok(Setting {
        value,
        origin,
        field,
    })
}

/// Resolves a repeatable setting: the flags if any were given, else the file's array,
/// else the default (one value, or none).
pub fn resolve_many<K: Kind>(
    field: &'static str,
    flags: &[K::Value],
    file: Option<&SettingsFile>,
    default: &[&str],
) -> Result<Setting<Vec<K::Value>>, ConfigError> {
    let key = key_of(field);
    let from_file = match file.and_then(|f| f.get(&key).map(|e| (f, e))) {
        Some((f, e)) => Some((
            from_toml_list::<K>(&e.value).map_err(|m| file_error(f, &key, e.line, m))?,
            Origin::File {
                path: f.path.clone(),
                line: e.line,
            },
        )),
        None => None,
    };
    let (value, origin) = match from_file {
        _ if !flags.is_empty() => (flags.to_vec(), Origin::Flag),
        Some((v, origin)) => (v, origin),
        None => {
            let mut v = Vec::with_capacity(default.len());
            for d in default {
                v.push(K::parse(d).map_err(|e| {
                    ConfigError::new(
                        &format!("--{key}"),
                        format!("the built-in default '{d}' does not parse ({e}); this is a bug"),
                    )
                })?);
            }
            (v, Origin::Default)
        }
    };
    Ok(Setting {
        value,
        origin,
        field,
    })
}

/// The type a single-valued setting resolves to: the value itself when it has a default,
/// an `Option` when it has none.
macro_rules! resolved_ty {
    ($kind:ty) => { Option<<$kind as $crate::config::values::Kind>::Value> };
    ($kind:ty, $default:literal) => { <$kind as $crate::config::values::Kind>::Value };
}

/// Applies the default, if the setting has one.
macro_rules! with_default {
    ($setting:expr, $kind:ty) => {
        $setting
    };
    ($setting:expr, $kind:ty, $default:literal) => {
        $setting.or_default::<$kind>($default)?
    };
}

/// Declares every setting; see this module's documentation and `settings.rs`.
///
/// ```text
/// settings! {
///     many {
///         /// Help text (the flag's `--help` line).
///         #[arg(value_name = "ADDR")]
///         listen: Listen = "127.0.0.1:8080";   // repeatable: Vec of the kind's value
///     }
///     one {
///         #[arg(value_name = "DUR")]
///         timeout_connect: Dur = "3s";         // resolves to a Duration
///         #[arg(value_name = "ADDR")]
///         admin: Addr;                         // no default: resolves to an Option
///     }
/// }
/// ```
///
/// `#[arg(...)]` takes any further clap attributes (`conflicts_with = "shards"`,
/// `help_heading = "Listeners"`); `long` and the kind's value parser are always added.
/// The flags are not `global`: the proxy's subcommands (`run`, `check-config`) take them,
/// `demo` does not.
macro_rules! settings {
    (
        many { $(
            $(#[doc = $mdoc:literal])*
            #[arg($($marg:tt)*)]
            $mname:ident : $mkind:ty $(= $mdefault:literal)? ;
        )* }
        one { $(
            $(#[doc = $odoc:literal])*
            #[arg($($oarg:tt)*)]
            $oname:ident : $okind:ty $(= $odefault:literal)? ;
        )* }
    ) => {
        /// Every setting as a flag; `None` (or empty) means "not given on the command line".
        #[derive(clap::Args, Debug, Default, Clone)]
        pub struct Flags {
            $(
                $(#[doc = $mdoc])*
                #[arg(long,
                      value_parser = <$mkind as $crate::config::values::Kind>::parse,
                      help = $crate::config::define::help(&[$($mdoc),*], [$($mdefault)?]),
                      $($marg)*)]
                pub $mname: Vec<<$mkind as $crate::config::values::Kind>::Value>,
            )*
            $(
                $(#[doc = $odoc])*
                #[arg(long,
                      value_parser = <$okind as $crate::config::values::Kind>::parse,
                      help = $crate::config::define::help(&[$($odoc),*], [$($odefault)?]),
                      $($oarg)*)]
                pub $oname: Option<<$okind as $crate::config::values::Kind>::Value>,
            )*
        }

        /// Every setting resolved (flag, else file, else default), with where it came from.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( pub $mname: $crate::config::define::Setting<
                Vec<<$mkind as $crate::config::values::Kind>::Value>>, )*
            $( pub $oname: $crate::config::define::Setting<resolved_ty!($okind $(, $odefault)?)>, )*
        }

        impl Flags {
            /// Every flag given here, else the one given in `other` (flags given before a
            /// subcommand, and after it).
            pub fn or(self, other: Flags) -> Flags {
                Flags {
                    $( $mname: if self.$mname.is_empty() { other.$mname } else { self.$mname }, )*
                    $( $oname: self.$oname.or(other.$oname), )*
                }
            }
        }

        impl Settings {
            /// Every setting's file key, kind of value, default (if any) and help, in
            /// declaration order: what `docs/configuration.md` documents.
            pub const REFERENCE: &'static [$crate::config::define::Reference] = &[
                $( $crate::config::define::Reference {
                    key: stringify!($mname),
                    repeatable: true,
                    default: &[$($mdefault)?],
                    doc: &[$($mdoc),*],
                    expected: <$mkind as $crate::config::values::Kind>::EXPECTED,
                }, )*
                $( $crate::config::define::Reference {
                    key: stringify!($oname),
                    repeatable: false,
                    default: &[$($odefault)?],
                    doc: &[$($odoc),*],
                    expected: <$okind as $crate::config::values::Kind>::EXPECTED,
                }, )*
            ];

            /// The field names of every setting, in declaration order.
            pub const FIELDS: &'static [&'static str] =
                &[$(stringify!($mname),)* $(stringify!($oname),)*];

            /// The configuration file's keys: the flag names without `--`.
            pub fn keys() -> Vec<String> {
                Self::FIELDS.iter().map(|f| $crate::config::define::key_of(f)).collect()
            }

            /// Flags win over the file, the file over the defaults.
            pub fn resolve(
                flags: &Flags,
                file: Option<&$crate::config::file::SettingsFile>,
            ) -> Result<Settings, $crate::config::ConfigError> {
                Ok(Settings {
                    $( $mname: $crate::config::define::resolve_many::<$mkind>(
                        stringify!($mname), &flags.$mname, file, &[$($mdefault)?])?, )*
                    $( $oname: {
                        let s = $crate::config::define::resolve_one::<$okind>(
                            stringify!($oname), &flags.$oname, file)?;
                        with_default!(s, $okind $(, $odefault)?)
                    }, )*
                })
            }
        }
    };
}
