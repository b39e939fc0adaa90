//! What this binary is: version, git commit, build date, compiler and cargo features,
//! as `engine/build.rs` found them. Shown by `ringway --version` and exported as
//! `ringway_build_info`.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("RINGWAY_COMMIT");
pub const BUILD_DATE: &str = env!("RINGWAY_BUILD_DATE");
pub const RUSTC: &str = env!("RINGWAY_RUSTC");
pub const FEATURES: &str = env!("RINGWAY_FEATURES");

/// The `--version` text after the program name.
pub fn long_version() -> &'static str {
    // Built once; clap wants a `'static str`.
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{VERSION}\ncommit: {COMMIT}\nbuilt: {BUILD_DATE}\nrustc: {RUSTC}\nfeatures: {FEATURES}"
        )
    })
}
