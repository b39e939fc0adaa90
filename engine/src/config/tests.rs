use super::values::{Cpus, Dur, Kind, Size};
use super::*;
use clap::error::{ContextKind, ContextValue};
use clap::Parser;

fn cfg(args: &[&str]) -> Result<Config, ConfigError> {
    let mut v = vec!["ringway"];
    v.extend_from_slice(args);
    let cli = Cli::try_parse_from(v).map_err(clap_error)?;
    Config::from_opts(&cli.opts)
}

/// A clap error as a [`ConfigError`] naming the flag clap names (`--shards <N>` -> `--shards`).
fn clap_error(e: clap::Error) -> ConfigError {
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split([' ', '=']).next().unwrap_or("clap").to_string(),
        _ => "clap".to_string(),
    };
    ConfigError::new(&flag, e.to_string())
}

fn err(args: &[&str]) -> ConfigError {
    match cfg(args) {
        Ok(c) => panic!("expected an error for {args:?}, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn minimal_config_has_sane_defaults() {
    let c = cfg(&["--backend", "127.0.0.1:9000"]).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.backends[0].name, "default");
    assert_eq!(c.default_backend, Some(0));
    assert_eq!(c.reuse, ReuseMode::Safe);
    assert_eq!(c.max_head, 64 << 10);
    assert_eq!(c.timeouts.connect, Duration::from_secs(3));
    assert!(c.takeover);
    assert_eq!(c.placement, Placement::Pinned(online_cpus()));
}

#[test]
fn backends_routes_and_placement() {
    let c = cfg(&[
        "--backend",
        "api=127.0.0.1:9000,127.0.0.1:9001",
        "--backend",
        "static=127.0.0.1:9100",
        "--route",
        "Example.com/static=static",
        "--route",
        "*/api=api",
        "--shards",
        "3",
        "--default-backend",
        "none",
        "--max-head",
        "8KiB",
        "--timeout-backend",
        "250ms",
    ])
    .unwrap();
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[0].servers.len(), 2);
    assert_eq!(c.n_servers(), 3);
    assert_eq!(c.routes[0].host, "example.com");
    assert_eq!(c.routes[0].path_prefix, "/static");
    assert_eq!(c.routes[0].backend, 1);
    assert_eq!(c.routes[1].host, "*");
    assert_eq!(c.placement, Placement::Unpinned(3));
    assert_eq!(c.default_backend, None);
    assert_eq!(c.max_head, 8192);
    assert_eq!(c.timeouts.backend, Duration::from_millis(250));
}

#[test]
fn every_error_names_its_flag() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&[], "--backend", "at least one backend"),
        (&["--backend", "nope"], "--backend", "has no port"),
        (
            &["--backend", "127.0.0.1:99999"],
            "--backend",
            "not a valid",
        ),
        (
            &["--backend", "a b=127.0.0.1:1"],
            "--backend",
            "not a valid backend name",
        ),
        (
            &["--backend", "a=127.0.0.1:1", "--backend", "a=127.0.0.1:2"],
            "--backend",
            "used twice",
        ),
        (
            &["--backend", "127.0.0.1:1", "--listen", "x"],
            "--listen",
            "has no port",
        ),
        (
            &[
                "--backend",
                "127.0.0.1:1",
                "--shards",
                "2",
                "--listen",
                "127.0.0.1:0@2",
            ],
            "--listen",
            "only 2 shard(s)",
        ),
        (
            &["--backend", "127.0.0.1:1", "--listen", "127.0.0.1:0@x"],
            "--listen",
            "not a CPU number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--route", "foo"],
            "--route",
            "HOST[/PATH-PREFIX]=BACKEND",
        ),
        (
            &["--backend", "127.0.0.1:1", "--route", "h/x=zz"],
            "--route",
            "no known backend",
        ),
        (
            &["--backend", "127.0.0.1:1", "--route", "/x=default"],
            "--route",
            "empty host",
        ),
        (
            &["--backend", "127.0.0.1:1", "--default-backend", "zz"],
            "--default-backend",
            "no backend named",
        ),
        (
            &["--backend", "127.0.0.1:1", "--cpus", "3-1"],
            "--cpus",
            "backwards",
        ),
        (
            &["--backend", "127.0.0.1:1", "--cpus", "a"],
            "--cpus",
            "not a CPU number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--cpus", "0,0"],
            "--cpus",
            "listed twice",
        ),
        (
            &["--backend", "127.0.0.1:1", "--cpus", "4000"],
            "--cpus",
            "does not exist",
        ),
        (
            &["--backend", "127.0.0.1:1", "--shards", "0"],
            "--shards",
            "out of range",
        ),
        (
            &["--backend", "127.0.0.1:1", "--shards", "x"],
            "--shards",
            "not a whole number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--admin", "nowhere"],
            "--admin",
            "has no port",
        ),
        (
            &[
                "--backend",
                "127.0.0.1:1",
                "--timeout-client-head",
                "5parsecs",
            ],
            "--timeout-client-head",
            "not a duration",
        ),
        (
            &["--backend", "127.0.0.1:1", "--timeout-client-idle", "0s"],
            "--timeout-client-idle",
            "greater than zero",
        ),
        (
            &["--backend", "127.0.0.1:1", "--timeout-connect=-1s"],
            "--timeout-connect",
            "not a duration",
        ),
        (
            &["--backend", "127.0.0.1:1", "--timeout-backend", "x"],
            "--timeout-backend",
            "not a duration",
        ),
        (
            &["--backend", "127.0.0.1:1", "--grace", "soon"],
            "--grace",
            "not a duration",
        ),
        (
            &["--backend", "127.0.0.1:1", "--max-head", "12 parsecs"],
            "--max-head",
            "not a size",
        ),
        (
            &["--backend", "127.0.0.1:1", "--max-head", "10"],
            "--max-head",
            "out of range",
        ),
        (
            &["--backend", "127.0.0.1:1", "--reuse", "sometimes"],
            "--reuse",
            "not a reuse mode",
        ),
        (
            &["--backend", "127.0.0.1:1", "--pool-max-idle=-3"],
            "--pool-max-idle",
            "not a whole number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--pool-purge-delay", "1ms"],
            "--pool-purge-delay",
            "at least 10ms",
        ),
        (
            &["--backend", "127.0.0.1:1", "--max-reuse", "many"],
            "--max-reuse",
            "not a whole number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--pool-low-idle", "x"],
            "--pool-low-idle",
            "not a whole number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--takeover", "maybe"],
            "--takeover",
            "neither on nor off",
        ),
        (
            &["--backend", "127.0.0.1:1", "--takeover-timeout", "0ms"],
            "--takeover-timeout",
            "greater than zero",
        ),
        (
            &["--backend", "127.0.0.1:1", "--max-conns-per-shard", "0"],
            "--max-conns-per-shard",
            "at least 1",
        ),
        (
            &["--backend", "127.0.0.1:1", "--fault", "bogus=1%"],
            "--fault",
            "bogus",
        ),
        (
            &["--backend", "127.0.0.1:1", "--resolvers", "dns.example"],
            "--resolvers",
            "not a DNS server address",
        ),
        (
            &["--backend", "127.0.0.1:1", "--resolve-ttl-min", "0s"],
            "--resolve-ttl-min",
            "out of range",
        ),
        (
            &[
                "--backend",
                "127.0.0.1:1",
                "--resolve-ttl-min",
                "10s",
                "--resolve-ttl-max",
                "5s",
            ],
            "--resolve-ttl-max",
            "below resolve-ttl-min",
        ),
        (
            &["--backend", "127.0.0.1:1", "--resolve-interval", "1ms"],
            "--resolve-interval",
            "out of range",
        ),
        (
            &["--backend", "127.0.0.1:1", "--resolve-timeout", "0s"],
            "--resolve-timeout",
            "out of range",
        ),
        (
            &["--backend", "127.0.0.1:1", "--resolve-family", "ipv5"],
            "--resolve-family",
            "not any, ipv4 or ipv6",
        ),
        (
            &["--backend", "bad_host!:80"],
            "--backend",
            "not a valid host name",
        ),
        (
            &["--backend", "127.0.0.1:1", "--fault-seed", "x"],
            "--fault-seed",
            "not a whole number",
        ),
        (
            &["--backend", "127.0.0.1:1", "--spin-before-park", "x"],
            "--spin-before-park",
            "not a duration",
        ),
        (
            &["--backend", "127.0.0.1:1", "--log", "[["],
            "--log",
            "not a log filter",
        ),
        (
            &[
                "--backend",
                "127.0.0.1:1",
                "--config",
                "/nonexistent/ringway.toml",
            ],
            "--config",
            "cannot read",
        ),
    ];
    for (args, flag, needle) in cases {
        let e = err(args);
        assert_eq!(e.flag, *flag, "{args:?} -> {e}");
        assert!(e.msg.contains(needle), "{args:?} -> '{e}' lacks '{needle}'");
    }
}

#[test]
fn cpus_and_shards_conflict_is_a_clap_error() {
    let e = err(&["--backend", "127.0.0.1:1", "--cpus", "0", "--shards", "2"]);
    assert!(e.msg.contains("cannot be used with"), "{e}");
}

#[test]
fn config_file_and_flag_precedence() {
    let dir = std::env::temp_dir().join(format!("ringway-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.toml");
    std::fs::write(
        &path,
        "listen = [\"127.0.0.1:7000\"]\nbackend = [\"api=127.0.0.1:9000\"]\nshards = 2\n\
         reuse = \"always\"\nmax-head = \"16KiB\"\ntakeover = false\npool-max-idle = 7\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = cfg(&["--config", p, "--reuse", "never"]).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:7000".parse().unwrap()]);
    assert_eq!(c.backends[0].name, "api");
    assert_eq!(c.placement, Placement::Unpinned(2));
    assert_eq!(c.reuse, ReuseMode::Never, "the flag wins");
    assert_eq!(c.max_head, 16 << 10);
    assert!(!c.takeover);
    assert_eq!(c.pool_max_idle, 7);

    std::fs::write(&path, "listn = [\"127.0.0.1:7000\"]\n").unwrap();
    let e = err(&["--config", p]);
    assert_eq!(e.flag, "--config");
    assert!(e.msg.contains("listn"), "{e}");
    std::fs::write(&path, "backend = [\"127.0.0.1:1\"]\nshards = 0\n").unwrap();
    let e = err(&["--config", p]);
    assert_eq!(e.flag, "shards");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn durations_sizes_cpu_lists() {
    assert_eq!(Dur::parse("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(Dur::parse("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(Dur::parse("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(Dur::parse("7").unwrap(), Duration::from_secs(7));
    assert!(Dur::parse("").is_err());
    assert_eq!(Size::parse("1MiB").unwrap(), 1 << 20);
    assert_eq!(Size::parse("64k").unwrap(), 64 << 10);
    assert_eq!(Cpus::parse("0-2,5").unwrap(), vec![0, 1, 2, 5]);
    assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
}

/// Writes `text` to a fresh file and returns its path (removed by the caller's `dir`).
fn toml_file(name: &str, text: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ringway-cfg-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_string();
    (dir, p)
}

#[test]
fn file_errors_name_the_key_the_file_and_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        // (file text, ConfigError.flag, text the message must contain)
        (
            "backend = [\"127.0.0.1:1\"]\n\ntimeout-connect = \"soon\"\n",
            "timeout-connect",
            "'soon' is not a duration",
        ),
        (
            "backend = [\"127.0.0.1:1\"]\nshards = 0\n",
            "shards",
            "0 is out of range (1 to 1024)",
        ),
        (
            "backend = [\"127.0.0.1:1\"]\ntakeover = 3\n",
            "takeover",
            "expected on or off",
        ),
        (
            "backend = \"127.0.0.1:1\"\n",
            "backend",
            "expected an array",
        ),
        (
            "backend = [\"127.0.0.1:1\"]\ncpus = \"0\"\nshards = 2\n",
            "cpus",
            "give either cpus or shards, not both",
        ),
        (
            "backend = [\"127.0.0.1:1\"]\nroute = [\"a.test=nosuch\"]\n",
            "route",
            "names no known backend 'nosuch'",
        ),
        (
            "backend = [\"127.0.0.1:1\"]\npool-max-idle = -1\n",
            "pool-max-idle",
            "not a whole number",
        ),
    ];
    for (i, (text, key, needle)) in cases.iter().enumerate() {
        let (dir, p) = toml_file(&format!("err{i}"), text);
        let e = err(&["--config", &p]);
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} ")))
            .unwrap()
            + 1;
        assert_eq!(e.flag, *key, "{text:?} -> {e}");
        assert!(e.msg.contains(needle), "{text:?} -> '{e}' lacks '{needle}'");
        assert!(
            e.msg.ends_with(&format!("(in {p}, line {line})")),
            "{text:?} -> '{e}' does not name {p} line {line}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn unknown_keys_are_refused_with_the_line_and_a_hint() {
    let (dir, p) = toml_file(
        "unknown",
        "backend = [\"127.0.0.1:1\"]\npool_max_idle = 3\n",
    );
    let e = err(&["--config", &p]);
    assert_eq!(e.flag, "--config");
    assert!(
        e.msg.contains(&format!(
            "unknown key 'pool_max_idle' (did you mean 'pool-max-idle'?) in {p}, line 2"
        )),
        "{e}"
    );
    // `config` is a flag only: a file cannot name another file.
    std::fs::write(&p, "config = \"other.toml\"\n").unwrap();
    assert!(err(&["--config", &p]).msg.contains("unknown key 'config'"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn flags_win_over_the_file_for_every_kind_of_setting() {
    let (dir, p) = toml_file(
        "precedence",
        "listen = [\"127.0.0.1:7000\"]\nbackend = [\"a=127.0.0.1:1\"]\ncpus = \"0\"\n\
         timeout-connect = 9\nmax-head = 2048\ntakeover = \"off\"\n",
    );
    let c = cfg(&[
        "--config",
        &p,
        "--listen",
        "127.0.0.1:7001",
        "--shards",
        "2",
        "--timeout-connect",
        "1s",
    ])
    .unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:7001".parse().unwrap()]);
    assert_eq!(c.backends[0].name, "a", "from the file");
    assert_eq!(
        c.placement,
        Placement::Unpinned(2),
        "--shards beats cpus in the file"
    );
    assert_eq!(c.timeouts.connect, Duration::from_secs(1));
    assert_eq!(c.max_head, 2048, "a TOML integer size");
    assert!(!c.takeover);
    let c = cfg(&["--config", &p]).unwrap();
    assert_eq!(
        c.timeouts.connect,
        Duration::from_secs(9),
        "a TOML integer is seconds"
    );
    assert_eq!(c.placement, Placement::Pinned(vec![0]));
    // A bad value in the file is refused even when a flag overrides it.
    std::fs::write(&p, "backend = [\"127.0.0.1:1\"]\ngrace = \"soon\"\n").unwrap();
    assert_eq!(err(&["--config", &p, "--grace", "1s"]).flag, "grace");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_setting_has_a_flag_a_key_and_parsing_defaults() {
    let flags = Flags::default();
    let s = Settings::resolve(&flags, None).unwrap();
    assert_eq!(s.timeout_connect.origin, Origin::Default);
    assert_eq!(s.timeout_connect.name(), "--timeout-connect");
    assert_eq!(s.listen.value.len(), 1);
    let keys = Settings::keys();
    assert_eq!(keys.len(), Settings::FIELDS.len());
    use clap::CommandFactory;
    let cli = Cli::command();
    let help_of = |key: &str| {
        cli.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
    };
    for key in &keys {
        assert!(help_of(key).is_some(), "--{key} has no flag with help");
    }
    assert_eq!(
        help_of("max-head").as_deref(),
        Some("Largest request or response head accepted (1KiB to 16MiB); larger heads get 431 [default: 64KiB]")
    );
    assert_eq!(
        help_of("admin").as_deref(),
        Some("Address of the admin listener serving /metrics (Prometheus text format)")
    );
}

/// The shape of issue 13's example, with the flags as defaults for every backend.
#[test]
fn backend_tables_take_the_documented_shape_and_flags_are_defaults() {
    let (dir, p) = toml_file(
        "backends",
        r#"default-backend = "api"
timeout-connect = "2s"
[backends.static]
servers = ["127.0.0.1:9100"]
[backends.api]
servers = ["127.0.0.1:9000", "127.0.0.1:9001 weight=3", { address = "127.0.0.1:9002", weight = 0 }]
balance = "least-request"
hash-on = "header:x-user"
retries = 2
retry-on = ["connect-failure"]
pool-max-idle = 8
reuse = "aggressive"
[backends.api.check]
path = "/healthz"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
"#,
    );
    let c = cfg(&["--config", &p, "--max-reuse", "7"]).unwrap();
    assert_eq!(c.backends.len(), 2);
    // File order: the first table is backend 0.
    assert_eq!(c.backends[0].name, "static");
    assert_eq!(c.default_backend, Some(1), "default-backend names api");
    let api = &c.backends[1];
    assert_eq!(api.weights, vec![1, 3, 0]);
    assert_eq!(api.balance, values::Balance::LeastRequest);
    assert_eq!(api.hash_on, values::HashOn::Header("x-user".into()));
    assert_eq!(api.retries, 2);
    assert!(api.retry_on.connect_failure && !api.retry_on.reset);
    assert_eq!(api.pool_max_idle, 8);
    assert_eq!(api.reuse, ReuseMode::Aggressive);
    let check = api.check.as_ref().unwrap();
    assert_eq!(
        (
            check.path.as_str(),
            check.method.as_str(),
            check.rise,
            check.fall
        ),
        ("/healthz", "GET", 2, 2)
    );
    assert_eq!(check.timeout, Duration::from_millis(500));
    assert_eq!(check.status, values::StatusRange { lo: 200, hi: 399 });
    // Globals are the defaults: the file's timeout-connect, the flag's max-reuse.
    let st = &c.backends[0];
    assert_eq!(st.timeout_connect, Duration::from_secs(2));
    assert_eq!(api.timeout_connect, Duration::from_secs(2));
    assert_eq!(st.max_reuse, Some(7));
    assert_eq!(st.balance, values::Balance::RoundRobin);
    assert!(st.check.is_none());
    // --backend flags replace the file's backends.
    let c = cfg(&[
        "--config",
        &p,
        "--backend",
        "x=127.0.0.1:1",
        "--default-backend",
        "x",
    ])
    .unwrap();
    assert_eq!(c.backends.len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_backend_settings_name_the_backend_and_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\nbalance = \"random\"\n",
            "backends.api.balance",
            "'random' is not a balance algorithm",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\nretries = 99\n",
            "backends.api.retries",
            "99 is out of range",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1 weight=x\"]\n",
            "backends.api.servers",
            "weight 'x' is not a whole number",
        ),
        (
            "[backends.api]\nbalance = \"hash\"\n",
            "backends.api.servers",
            "missing",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\nbalanse = \"hash\"\n",
            "backends.api.balanse",
            "unknown key of backend 'api'",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\nhash-on = \"body\"\n",
            "backends.api.hash-on",
            "not a hash key",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\n[backends.api.check]\npath = \"/h\"\nrise = 0\n",
            "backends.api.check.rise",
            "0 is out of range",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\n[backends.api.check]\ninterval = \"1s\"\n",
            "backends.api.check.path",
            "missing",
        ),
        (
            "[backends.api]\nservers = [\"127.0.0.1:1\"]\n[backends.api.check]\npath = \"/h\"\nstatus = \"600\"\n",
            "backends.api.check.status",
            "not a status range",
        ),
    ];
    for (i, (text, key, needle)) in cases.iter().enumerate() {
        let (dir, p) = toml_file(&format!("berr{i}"), text);
        let e = err(&["--config", &p]);
        assert_eq!(e.flag, *key, "{text:?} -> {e}");
        assert!(e.msg.contains(needle), "{text:?} -> '{e}' lacks '{needle}'");
        assert!(
            e.msg.contains(&format!("in {p}, line ")),
            "{text:?} -> '{e}'"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn reload_merge_keeps_what_needs_a_restart() {
    let old = cfg(&["--backend", "a=127.0.0.1:1", "--listen", "127.0.0.1:1000"]).unwrap();
    let new = cfg(&[
        "--backend",
        "a=127.0.0.1:1,127.0.0.1:2",
        "--listen",
        "127.0.0.1:2000",
        "--timeout-client-idle",
        "5s",
    ])
    .unwrap();
    let (applied, restart) = reload::merge(&old, new);
    assert_eq!(restart, vec!["listen".to_string()]);
    assert_eq!(applied.listen, old.listen, "the running listeners stay");
    assert_eq!(applied.backends[0].servers.len(), 2, "backends change");
    assert_eq!(applied.timeouts.client_idle, Duration::from_secs(5));
    let changes = reload::describe_changes(&old, &applied);
    assert!(
        changes
            .iter()
            .any(|c| c.contains("backend a changed (1 server(s) added")),
        "{changes:?}"
    );
}
