//! `broker rmqkeeper` with a wrong configuration: exit code 2 and one message naming the flag,
//! before any network use (no services needed).

use std::process::Command;

fn keeper(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("rmqkeeper")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run broker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_flag() {
    let good_amqp = "amqp://127.0.0.1:1/%2f";
    let good_mgmt = "http://guest:guest@127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (
            &["--amqp-url", good_amqp, "--mgmt-url", "::nope"],
            "rmqkeeper: --mgmt-url: invalid URL `::nope`:",
        ),
        (
            &["--amqp-url", "127.0.0.1:5672", "--mgmt-url", good_mgmt],
            "rmqkeeper: --amqp-url: invalid URL `127.0.0.1:5672`:",
        ),
        (
            &[
                "--amqp-url",
                good_amqp,
                "--mgmt-url",
                good_mgmt,
                "--root",
                "x/",
            ],
            "rmqkeeper: --root: invalid znode path `x/`",
        ),
        (
            &["--amqp-url", good_amqp, "--mgmt-url", "http://127.0.0.1:1"],
            "rmqkeeper: --mgmt-user: missing",
        ),
        (
            &["--amqp-url", good_amqp, "--mgmt-url", good_mgmt],
            "rmqkeeper: --zk-auth: required",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = keeper(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    // A missing required flag is a usage error from the parser: exit 2 as well.
    let (code, stderr) = keeper(&["--amqp-url", good_amqp]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--mgmt-url"), "{stderr}");
}
