//! Tests of configuration loading: the defaults, each layer's precedence, the
//! environment mapping and every kind of error.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    env(pairs)
}

/// A TOML file with `text` in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "weft-config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load_file(text: &str) -> Result<WeftConfig, ConfigError> {
    let f = TempFile::new(text);
    load(Some(&f.0), Vec::new(), &[])
}

fn file_err(text: &str) -> (String, PathBuf) {
    let f = TempFile::new(text);
    let e = load(Some(&f.0), Vec::new(), &[]).unwrap_err().to_string();
    (e, f.0.clone())
}

fn env_err(pairs: &[(&str, &str)]) -> String {
    load(None, env(pairs), &[]).unwrap_err().to_string()
}

#[test]
fn defaults() {
    let c = load(None, Vec::new(), &[]).unwrap();
    assert_eq!(c, WeftConfig::default());
    assert_eq!(c.kafka.bootstrap, "127.0.0.1:9092");
    assert_eq!(c.kafka.topic_prefix, "weft");
    assert_eq!((c.kafka.partitions, c.kafka.replication_factor), (6, 1));
    assert_eq!(c.kafka.transactions, TransactionsMode::Off);
    assert_eq!(c.kafka.fetch_wait_max_ms, 100);
    assert!(c.kafka.properties.is_empty());
    assert_eq!(c.orchestrator.node_id, "");
    assert_eq!(c.orchestrator.data_dir, PathBuf::from(".weft/orchestrator"));
    assert_eq!(c.orchestrator.http_addr, "127.0.0.1:8080");
    assert_eq!(c.orchestrator.group_id, "weft-orchestrator");
    assert_eq!(c.orchestrator.batch_max, 500);
    assert_eq!(c.worker.group_id, "weft-workers");
    assert_eq!(c.worker.concurrency, 32);
    assert!(c.worker.types.is_empty());
    assert!(!c.worker.enable_shell);
    assert_eq!(c.worker.http_addr, "127.0.0.1:9464");
    assert_eq!(c.worker.shutdown_grace_ms, 30_000);
    assert_eq!(
        (c.log.level.as_str(), c.log.format),
        ("info", LogFormat::Text)
    );
}

#[test]
fn layers_apply_in_order() {
    let f = TempFile::new("[kafka]\nbootstrap = \"file:9092\"\ntopic_prefix = \"file\"\npartitions = 3\n[log]\nlevel = \"warn\"\n");
    let c = load(Some(&f.0), Vec::new(), &[]).unwrap();
    assert_eq!(
        (
            c.kafka.bootstrap.as_str(),
            c.kafka.topic_prefix.as_str(),
            c.kafka.partitions
        ),
        ("file:9092", "file", 3)
    );
    assert_eq!(c.log.level, "warn");
    assert_eq!(
        c.worker.concurrency, 32,
        "keys the file leaves out keep their defaults"
    );

    let e = env(&[
        ("WEFT_KAFKA_BOOTSTRAP", "env:9092"),
        ("WEFT_KAFKA_TOPIC_PREFIX", "env"),
    ]);
    let c = load(Some(&f.0), e.clone(), &[]).unwrap();
    assert_eq!(
        (
            c.kafka.bootstrap.as_str(),
            c.kafka.topic_prefix.as_str(),
            c.kafka.partitions
        ),
        ("env:9092", "env", 3)
    );

    let o = flags(&[("kafka.bootstrap", "flag:9092")]);
    let c = load(Some(&f.0), e, &o).unwrap();
    assert_eq!(
        (
            c.kafka.bootstrap.as_str(),
            c.kafka.topic_prefix.as_str(),
            c.kafka.partitions
        ),
        ("flag:9092", "env", 3)
    );
}

#[test]
fn environment_mapping() {
    let c = load(
        None,
        env(&[
            ("WEFT_ORCHESTRATOR_DATA_DIR", "/var/lib/weft"),
            ("WEFT_ORCHESTRATOR_BATCH_MAX", "100"),
            ("WEFT_WORKER_TYPES", "orders, billing,,"),
            ("WEFT_WORKER_ENABLE_SHELL", "true"),
            ("WEFT_WORKER_SHUTDOWN_GRACE_MS", "5000"),
            ("WEFT_KAFKA_TRANSACTIONS", "auto"),
            ("WEFT_KAFKA_PROPERTY_SASL_MECHANISM", "PLAIN"),
            ("WEFT_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("WEFT_LOG_FORMAT", "json"),
            ("PATH", "/usr/bin"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(c.orchestrator.data_dir, PathBuf::from("/var/lib/weft"));
    assert_eq!(c.orchestrator.batch_max, 100);
    assert_eq!(c.worker.types, ["orders", "billing"]);
    assert!(c.worker.enable_shell);
    assert_eq!(c.worker.shutdown_grace_ms, 5_000);
    assert_eq!(c.kafka.transactions, TransactionsMode::Auto);
    assert_eq!(c.kafka.properties["sasl.mechanism"], "PLAIN");
    assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    assert_eq!(c.log.format, LogFormat::Json);
    let c = load(None, env(&[("WEFT_WORKER_TYPES", "")]), &[]).unwrap();
    assert!(c.worker.types.is_empty());
}

#[test]
fn non_config_environment_is_ignored() {
    let c = load(
        None,
        env(&[
            ("WEFT_CONFIG", "/etc/weft.toml"),
            ("WEFT_API", "http://x"),
            ("WEFT_CACHE_DIR", "/tmp"),
            ("WEFT_TANSU_BIN", "/bin/tansu"),
            ("WEFT_LOG", "debug"),
            ("WEFT_TEST_BROKER", "x"),
            ("WEFT_BENCH_RATE", "1000"),
            ("HOME", "/root"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(c, WeftConfig::default());
}

#[test]
fn unknown_keys_name_the_key_and_layer() {
    let (e, path) = file_err("[kafka]\nbootsrap = \"x\"\n");
    assert_eq!(
        e,
        format!(
            "unknown configuration key 'kafka.bootsrap' in {}",
            path.display()
        )
    );
    let (e, _) = file_err("[kafkaa]\nbootstrap = \"x\"\n");
    assert!(
        e.starts_with("unknown configuration key 'kafkaa' in "),
        "{e}"
    );
    let (e, _) = file_err("bootstrap = \"x\"\n");
    assert!(
        e.starts_with("unknown configuration key 'bootstrap' in "),
        "{e}"
    );
    assert_eq!(
        env_err(&[("WEFT_KAFKA_BOOTSRAP", "x")]),
        "unknown environment variable WEFT_KAFKA_BOOTSRAP (no such configuration key)"
    );
    for var in [
        "WEFT_KAFKA_PROPERTIES",
        "WEFT_KAFKA",
        "WEFT_LOG_",
        "WEFT_KAFKA_PROPERTY_",
        "WEFT_X_Y",
        "WEFT_CONFIGS",
    ] {
        assert!(
            matches!(
                load(None, env(&[(var, "x")]), &[]),
                Err(ConfigError::UnknownEnv { .. })
            ),
            "{var}"
        );
    }
    let e = load(None, Vec::new(), &flags(&[("kafka.bootsrap", "x")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unknown configuration key 'kafka.bootsrap' from the command line"
    );
    for key in [
        "kafka",
        "kafka.properties",
        "kafka.properties.",
        "",
        "log.level.x",
    ] {
        let r = load(None, Vec::new(), &flags(&[(key, "x")]));
        assert!(matches!(r, Err(ConfigError::UnknownKey { .. })), "{key}");
    }
}

#[test]
fn values_must_fit_their_type() {
    assert_eq!(
        env_err(&[("WEFT_WORKER_CONCURRENCY", "x")]),
        "invalid value 'x' for worker.concurrency from WEFT_WORKER_CONCURRENCY: expected an integer"
    );
    assert_eq!(
        env_err(&[("WEFT_WORKER_ENABLE_SHELL", "sometimes")]),
        "invalid value 'sometimes' for worker.enable_shell from WEFT_WORKER_ENABLE_SHELL: expected true or false"
    );
    assert_eq!(
        env_err(&[("WEFT_WORKER_CONCURRENCY", "-1")]),
        "invalid value '-1' for worker.concurrency from WEFT_WORKER_CONCURRENCY: invalid value: integer `-1`, expected usize"
    );
    assert_eq!(
        env_err(&[("WEFT_KAFKA_TRANSACTIONS", "maybe")]),
        "invalid value 'maybe' for kafka.transactions from WEFT_KAFKA_TRANSACTIONS: unknown variant `maybe`, expected one of `auto`, `on`, `off`"
    );

    let (e, path) = file_err("[kafka]\npartitions = \"six\"\n");
    assert_eq!(
        e,
        format!(
            "invalid value 'six' for kafka.partitions in {}: expected an integer",
            path.display()
        )
    );
    let (e, _) = file_err("[worker]\ntypes = \"a,b\"\n");
    assert!(
        e.starts_with("invalid value 'a,b' for worker.types in "),
        "{e}"
    );
    let (e, _) = file_err("[worker]\ntypes = [1]\n");
    assert!(
        e.starts_with("invalid value '[1]' for worker.types in "),
        "{e}"
    );
    let (e, _) = file_err("kafka = 1\n");
    assert!(e.starts_with("invalid value '1' for kafka in "), "{e}");
    let (e, _) = file_err("[kafka.properties]\n\"a.b\" = [1]\n");
    assert!(
        e.contains("for kafka.properties.a.b in") && e.ends_with("expected a string"),
        "{e}"
    );

    let e = load(None, Vec::new(), &flags(&[("kafka.partitions", "many")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid value 'many' for kafka.partitions from the command line: expected an integer"
    );
}

#[test]
fn rules_on_the_merged_configuration() {
    assert_eq!(
        env_err(&[("WEFT_KAFKA_PARTITIONS", "0")]),
        "invalid configuration: kafka.partitions must be at least 1 (got '0' from WEFT_KAFKA_PARTITIONS)"
    );
    assert!(env_err(&[("WEFT_WORKER_CONCURRENCY", "0")])
        .starts_with("invalid configuration: worker.concurrency must be at least 1"));
    let (e, path) = file_err("[orchestrator]\nbatch_max = 0\n");
    assert_eq!(
        e,
        format!(
            "invalid configuration: orchestrator.batch_max must be at least 1 (got '0' in {})",
            path.display()
        )
    );
    assert!(env_err(&[("WEFT_KAFKA_BOOTSTRAP", " ")]).contains("kafka.bootstrap must not be empty"));
    assert!(env_err(&[("WEFT_KAFKA_TOPIC_PREFIX", "a b")]).contains("kafka.topic_prefix must be"));
    assert!(env_err(&[("WEFT_KAFKA_REPLICATION_FACTOR", "0")]).contains("kafka.replication_factor"));
    assert_eq!(
        load(None, env(&[("WEFT_KAFKA_REPLICATION_FACTOR", "-1")]), &[])
            .unwrap()
            .kafka
            .replication_factor,
        -1
    );
}

#[test]
fn librdkafka_properties() {
    let f = TempFile::new(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\nsasl.mechanism = \"PLAIN\"\n\"session.timeout.ms\" = 6000\n",
    );
    let e = env(&[("WEFT_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-256")]);
    let o = flags(&[("kafka.properties.ssl.ca.location", "/ca.pem")]);
    let c = load(Some(&f.0), e, &o).unwrap();
    let p: Vec<(&str, &str)> = c
        .kafka
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        p,
        [
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("security.protocol", "SSL"),
            ("session.timeout.ms", "6000"),
            ("ssl.ca.location", "/ca.pem"),
        ]
    );
}

#[test]
fn file_errors() {
    let (e, path) = file_err("[kafka\n");
    assert!(
        e.starts_with(&format!("invalid TOML in {}: ", path.display())),
        "{e}"
    );
    let missing = std::env::temp_dir().join("weft-config-test-does-not-exist.toml");
    let e = load(Some(&missing), Vec::new(), &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().starts_with("cannot read configuration file "),
        "{e}"
    );
}

#[test]
fn dumped_configuration_loads_back() {
    let c = load(
        None,
        env(&[
            ("WEFT_WORKER_TYPES", "a,b"),
            ("WEFT_KAFKA_PROPERTY_SASL_MECHANISM", "PLAIN"),
            ("WEFT_LOG_FORMAT", "json"),
        ]),
        &flags(&[("orchestrator.node_id", "n1")]),
    )
    .unwrap();
    let text = c.to_toml();
    assert!(
        text.contains("[kafka.properties]") && text.contains("\"sasl.mechanism\" = \"PLAIN\""),
        "{text}"
    );
    assert_eq!(load_file(&text).unwrap(), c);
    assert_eq!(
        load_file(&WeftConfig::default().to_toml()).unwrap(),
        WeftConfig::default()
    );
}

/// Set in the child processes of [`from_process_reads_the_environment_and_applies_overrides`]
/// (not a `WEFT_*` name: those are configuration).
const FROM_PROCESS_CHILD: &str = "CONFIG_TESTS_FROM_PROCESS_CHILD";

/// `from_process` reads the real process environment, so it is checked in child
/// processes (this test binary, re-run on this test alone) whose environment the
/// test controls: no inherited `WEFT_*` variable can make it pass or fail by chance.
#[test]
fn from_process_reads_the_environment_and_applies_overrides() {
    match std::env::var(FROM_PROCESS_CHILD).as_deref() {
        Ok("good") => {
            let c = WeftConfig::from_process(None, &flags(&[("log.level", "debug")]))
                .expect("from_process loads");
            assert_eq!(
                c.log.level, "debug",
                "the override wins over WEFT_LOG_LEVEL"
            );
            assert_eq!(c.kafka.partitions, 7, "WEFT_KAFKA_PARTITIONS is read");
            assert_eq!(
                c.kafka.topic_prefix, "fromenv",
                "WEFT_KAFKA_TOPIC_PREFIX is read"
            );
            println!("from_process child checked: good");
            return;
        }
        Ok("unknown") => {
            let e = WeftConfig::from_process(None, &[]).expect_err("unknown WEFT_* variable");
            assert!(
                matches!(&e, ConfigError::UnknownEnv { var } if var == "WEFT_NO_SUCH_SETTING"),
                "{e}"
            );
            println!("from_process child checked: unknown");
            return;
        }
        Ok(other) => panic!("unexpected {FROM_PROCESS_CHILD}={other}"),
        Err(_) => {}
    }
    let cases: [(&str, &[(&str, &str)]); 2] = [
        (
            "good",
            &[
                ("WEFT_KAFKA_PARTITIONS", "7"),
                ("WEFT_KAFKA_TOPIC_PREFIX", "fromenv"),
                ("WEFT_LOG_LEVEL", "warn"),
            ],
        ),
        ("unknown", &[("WEFT_NO_SUCH_SETTING", "1")]),
    ];
    for (mode, vars) in cases {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "config::tests::from_process_reads_the_environment_and_applies_overrides",
            "--nocapture",
            "--test-threads=1",
        ]);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WEFT_") {
                cmd.env_remove(name);
            }
        }
        cmd.env(FROM_PROCESS_CHILD, mode).envs(vars.iter().copied());
        let out = cmd.output().expect("running the test binary again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("from_process child checked: {mode}")),
            "child '{mode}' failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn api_advertise_url() {
    let c = WeftConfig::default();
    assert_eq!(c.api.advertised("127.0.0.1:8080"), "http://127.0.0.1:8080");
    let e = env(&[("WEFT_API_ADVERTISE_URL", "http://orch-1.weft:8080/")]);
    let c = load(None, e, &[]).unwrap();
    assert_eq!(c.api.advertised("0.0.0.0:8080"), "http://orch-1.weft:8080");
    let e = env(&[("WEFT_API_TLS_CERT_FILE", "/tls/api.crt")]);
    let c = load(None, e, &[]).unwrap();
    assert_eq!(c.api.advertised("127.0.0.1:8443"), "https://127.0.0.1:8443");
    let e = env(&[("WEFT_API_TLS_REPLICA_SUBJECTS", "orch-a,orch-b")]);
    let c = load(None, e, &[]).unwrap();
    assert_eq!(c.api.tls_replica_subjects, ["orch-a", "orch-b"]);
    assert!(env_err(&[("WEFT_API_ADVERTISE_URL", "orch-1:8080")])
        .contains("api.advertise_url must be empty or an http:// or https:// URL"));
}

#[test]
fn secrets_are_redacted_wherever_the_configuration_is_shown() {
    let secrets = [
        ("WEFT_KAFKA_PROPERTY_SASL_PASSWORD", "hunter2-sasl"),
        ("WEFT_KAFKA_PROPERTY_SSL_KEY_PASSWORD", "hunter2-key"),
        (
            "WEFT_KAFKA_PROPERTY_SSL_KEYSTORE_PASSWORD",
            "hunter2-keystore",
        ),
        (
            "WEFT_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET",
            "hunter2-oauth",
        ),
        ("WEFT_KAFKA_PROPERTY_SSL_KEY_PEM", "hunter2-pem"),
        ("WEFT_KAFKA_PROPERTY_SASL_USERNAME", "alice"),
    ];
    let c = load(None, env(&secrets), &[]).unwrap();
    assert_eq!(
        c.kafka.properties["sasl.password"], "hunter2-sasl",
        "the value itself is kept"
    );
    let shown = [
        ("to_toml", c.to_toml()),
        ("Debug of the config", format!("{c:?}")),
        ("Debug of kafka", format!("{:?}", c.kafka)),
        ("redacted()", format!("{:?}", c.redacted().kafka.properties)),
    ];
    for (what, text) in &shown {
        assert!(!text.contains("hunter2"), "{what} shows a secret:\n{text}");
        assert!(text.contains(REDACTED), "{what}:\n{text}");
        assert!(
            text.contains("alice"),
            "{what} hides a setting that is no secret:\n{text}"
        );
    }
    for name in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
    ] {
        assert!(is_secret_property(name), "{name}");
    }
    for name in [
        "sasl.username",
        "sasl.mechanism",
        "security.protocol",
        "ssl.ca.location",
    ] {
        assert!(!is_secret_property(name), "{name}");
    }
    // A value that does not load is named in the error, unless it is a secret.
    let err = load_file("[kafka.properties]\n\"sasl.password\" = [\"hunter2\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("hunter2") && err.contains("sasl.password"),
        "{err}"
    );
}

#[test]
fn the_ledger_directory_of_the_worker_is_no_configuration_key() {
    let c = load(None, env(&[("WEFT_LEDGER_DIR", "/tmp/ledger")]), &[]).unwrap();
    assert_eq!(c, WeftConfig::default());
}
