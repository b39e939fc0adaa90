//! `docs/configuration.md`, generated from the one settings definition
//! ([`Settings::REFERENCE`] for keys, kinds, defaults and help, the clap definition for
//! the `--help` groups), so the reference cannot drift: a unit test fails when the file
//! differs from what [`markdown`] writes (`ringway generate config-reference` rewrites it).

use clap::CommandFactory;

use super::{Cli, Settings};

/// The configuration reference in Markdown.
pub fn markdown() -> String {
    let cmd = Cli::command();
    let heading_of = |key: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .and_then(|a| a.get_help_heading())
            .unwrap_or("Other")
            .to_string()
    };
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in Settings::REFERENCE {
        let key = super::define::key_of(r.key);
        let doc = r.doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        let default = match r.default {
            [] => "none".to_string(),
            d => d
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let value = if r.repeatable {
            format!("array of {}", r.expected)
        } else {
            r.expected.to_string()
        };
        let row = format!(
            "| `--{key}` / `{key}` | {} | {default} | {} |",
            value.replace('|', "\\|"),
            doc.replace('|', "\\|")
        );
        let h = heading_of(&key);
        match groups.iter_mut().find(|(g, _)| *g == h) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((h, vec![row])),
        }
    }
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from engine/src/config/settings.rs by `ringway generate config-reference`;\n     \
         a unit test fails when this file and the settings differ. Do not edit by hand. -->\n\n\
         Every setting is a flag and a key of the TOML file given with `--config FILE` (the flag\n\
         name without `--`). A flag wins over the file, the file over the default. Durations\n\
         are written `250ms`, `5s`, `2m`; sizes `65536`, `64KiB`, `1MiB`. A bad value names the\n\
         flag, or the key with the file and line, and exits with status 2.\n\n\
         `--config FILE` itself is a flag only.\n",
    );
    for (heading, rows) in groups {
        out.push_str(&format!(
            "\n## {heading}\n\n| flag / key | value | default | meaning |\n| --- | --- | --- | --- |\n"
        ));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out.push_str(
        "\n## Per-backend settings\n\n\
         A `[backends.NAME]` table in the file is one backend (the first table is the default\n\
         backend unless `default-backend` says otherwise); `--backend` flags, when given,\n\
         replace the file's backends. Every key but `servers` defaults to the global setting\n\
         named in the default column, so the flags are the defaults of every backend. An\n\
         invalid value names the backend and the key (`backends.api.retries: ...`) with the\n\
         file and line. See [traffic.md](traffic.md) for a worked example.\n\n\
         | key of `[backends.NAME]` | value | default | meaning |\n| --- | --- | --- | --- |\n",
    );
    let rows = |keys: &[super::backend::BackendKey], out: &mut String| {
        for k in keys {
            let default = match k.default_from {
                Some(f) => format!("`--{f}`"),
                None => "none".to_string(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {default} | {} |\n",
                k.key,
                k.expected.replace('|', "\\|"),
                k.doc.replace('|', "\\|")
            ));
        }
    };
    rows(super::backend::BACKEND_KEYS, &mut out);
    out.push_str(
        "\n| key of `[backends.NAME.check]` | value | default | meaning |\n| --- | --- | --- | --- |\n",
    );
    rows(super::backend::CHECK_KEYS, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_configuration_md_is_the_generated_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        let generated = super::markdown();
        assert!(
            on_disk == generated,
            "docs/configuration.md is not the reference the settings give; run\n  \
             cargo run -p ringway -- generate config-reference > docs/configuration.md"
        );
        // Every setting is in it.
        for r in super::Settings::REFERENCE {
            let key = super::super::define::key_of(r.key);
            assert!(generated.contains(&format!("`--{key}`")), "{key}");
        }
    }
}
