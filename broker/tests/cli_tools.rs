//! The provisioning subcommands and the start-up banner of the real `broker` binary:
//! `broker token` mints what the app WebSocket accepts (expired and garbled
//! tokens are refused), `broker device-key` prints the key the broker accepts for a device
//! (derived from the fleet master key, or explicit), `broker config default` prints a file that
//! parses and serves, the banner's connect commands work when pasted into a shell, the
//! README quick start runs as written, the tools refuse to invent secrets, and `config check`
//! prints TOML without secrets and ends quietly on a closed pipe. Listens on 127.0.0.1 only;
//! kills only what it started.

use crate::port_support;

use crate::banner_support;
use crate::comet_support;
use port_support::free_port;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use banner_support::{Spawned, Started, broker_command, start, start_command, write_config};
use broker::terminal::Address;
use comet_support::{API_TOKEN, App, MASTER, TOKEN_SECRET, WAIT};
use serde_json::{Value, json};
use shared_protocol::json::{Claims, verify};
use shared_protocol::keys::{MasterKey, derive_device_key};
use shared_protocol::provision::{Record, RecordError, TransportPreference};

/// `broker --config <config> <args>` run to completion, with extra environment variables.
fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = broker_command();
    cmd.arg("--config").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the broker binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

fn now_secs() -> u64 {
    broker::router::now_ms() / 1000
}

/// Authenticates on the app WebSocket with `token` as raw JSON; the broker's answer.
async fn auth(b: &Started, token: &str) -> Value {
    let mut app = App::connect(&b.app_ws).await;
    app.send(json!({"type": "auth", "token": token, "since_id": 0}))
        .await;
    app.recv(WAIT).await.expect("an answer to auth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_accepted_by_the_app_websocket_and_expired_or_garbled_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let b = start(&config);

    let out = run(&config, &["token", "--id", "7"], &[]);
    assert!(out.status.success(), "{out:?}");
    let token = stdout(&out);
    // Signed with the configured token secret, for phone 7, valid for the default 24 h.
    let claims = verify(&TOKEN_SECRET, &token, now_secs()).expect("a valid token");
    assert_eq!(claims.address, Address::phone(7));
    let ttl = claims.exp - now_secs();
    assert!((86_390..=86_400).contains(&ttl), "ttl {ttl}");
    let welcome = auth(&b, &token).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // `--ttl 0`: expired at once, TOKEN_EXPIRED (21).
    let expired = stdout(&run(&config, &["token", "--id", "7", "--ttl", "0"], &[]));
    let r = auth(&b, &expired).await;
    assert_eq!(
        (&r["type"], &r["code"]),
        (&json!("reject"), &json!(21)),
        "{r}"
    );
    // One character of the signature changed: BAD_TOKEN (22).
    let sig_at = token.rfind('.').unwrap() + 1;
    let mut garbled = token.clone();
    let c = if &token[sig_at..=sig_at] == "A" {
        "B"
    } else {
        "A"
    };
    garbled.replace_range(sig_at..=sig_at, c);
    let r = auth(&b, &garbled).await;
    assert_eq!(
        (&r["type"], &r["code"]),
        (&json!("reject"), &json!(22)),
        "{r}"
    );
    // A token of another broker (another secret): BAD_TOKEN.
    let other = shared_protocol::json::mint(
        &[0x99; 32],
        &Claims {
            address: Address::phone(7),
            exp: now_secs() + 3600,
        },
    );
    let r = auth(&b, &other).await;
    assert_eq!(r["code"], 22, "{r}");

    // Ids the profile refuses never become tokens: exit 2 with the reason.
    let zero = run(&config, &["token", "--id", "0"], &[]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("not a non-zero 32-bit id"));
    let signed = [("BROKER__IDENTITY__PROFILE", "signed")];
    let positive_phone = run(&config, &["token", "--id", "7"], &signed);
    assert_eq!(positive_phone.status.code(), Some(2), "{positive_phone:?}");
    assert!(String::from_utf8_lossy(&positive_phone.stderr).contains("profile signed"));
    let negative = run(&config, &["token", "--id", "-7"], &signed);
    assert!(negative.status.success(), "{negative:?}");
    let claims = verify(&TOKEN_SECRET, &stdout(&negative), now_secs()).unwrap();
    assert_eq!(claims.address, Address::phone(-7i32 as u32));
}

#[test]
fn device_key_record_parses_with_the_firmware_codec_and_a_corrupted_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let file = dir.path().join("record.bin");
    let out = run(
        &config,
        &[
            "device-key",
            "--id",
            "42",
            "--record",
            file.to_str().unwrap(),
            "--udp",
            "10.0.2.2:7000",
            "--ws",
            "10.0.2.2:8080",
            "--lookup",
            "10.0.2.2:8081",
            "--transport",
            "ws",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&file).unwrap();
    // The firmware's parser (plug-app reads records through this same function).
    let record = Record::parse(&bytes).unwrap();
    assert_eq!(record.device_id, 42);
    assert_eq!(record.key, derive_device_key(&MasterKey(MASTER), 42).0);
    assert_eq!(record.transport, TransportPreference::Ws);
    assert_eq!(record.udp, Some("10.0.2.2:7000".parse().unwrap()));
    let ws = record.ws.unwrap();
    assert_eq!(ws.addr, "10.0.2.2:8080".parse().unwrap());
    assert_eq!((ws.host, ws.path), ("10.0.2.2:8080", "/device"));
    assert_eq!(
        record.lookup.unwrap().addr,
        "10.0.2.2:8081".parse().unwrap()
    );
    // Two records of one device differ in their entropy seed.
    let second = dir.path().join("second.bin");
    let out = run(
        &config,
        &[
            "device-key",
            "--id",
            "42",
            "--record",
            second.to_str().unwrap(),
            "--udp",
            "10.0.2.2:7000",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_ne!(
        Record::parse(&std::fs::read(&second).unwrap())
            .unwrap()
            .seed,
        record.seed
    );

    let mut corrupted = bytes.clone();
    corrupted[30] ^= 0x01;
    assert_eq!(Record::parse(&corrupted), Err(RecordError::BadChecksum));

    // No broker: refused, nothing written.
    let none = dir.path().join("none.bin");
    let out = run(
        &config,
        &[
            "device-key",
            "--id",
            "42",
            "--record",
            none.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no broker"));
    assert!(!none.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_key_prints_the_key_the_broker_accepts_derived_or_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let explicit = "5a".repeat(32);
    let config = write_config(
        dir.path(),
        &format!("[security.device_keys]\n43 = \"{explicit}\"\n"),
    );
    // Derived: HMAC(fleet master key, id), as shared-protocol computes it.
    let derived = stdout(&run(&config, &["device-key", "--id", "42"], &[]));
    assert_eq!(
        derived,
        hex::encode(derive_device_key(&MasterKey(MASTER), 42).0)
    );
    // Explicit keys win over derivation.
    let printed = stdout(&run(&config, &["device-key", "--id", "43"], &[]));
    assert_eq!(printed, explicit);
    assert_ne!(
        printed,
        hex::encode(derive_device_key(&MasterKey(MASTER), 43).0)
    );

    // The broker accepts exactly those keys.
    let b = start(&config);
    let udp = b.udp.to_string();
    let client = |id: &str, key: &str| {
        let mut cmd = broker_command();
        cmd.arg("--config")
            .arg(&config)
            .args(["client", "device", "--id", id, "--key", key, "--udp", &udp]);
        Spawned::new(cmd)
    };
    for (id, key) in [("42", derived.as_str()), ("43", printed.as_str())] {
        let mut dev = client(id, key);
        dev.expect(&format!("connected as device:{id} via udp"));
        dev.say("quit");
        assert_eq!(dev.wait_exit(Duration::from_secs(10)).0, 0);
    }
    let wrong = hex::encode(derive_device_key(&MasterKey(MASTER), 43).0);
    let mut dev = client("43", &wrong);
    assert_eq!(dev.wait_exit(Duration::from_secs(10)).0, 1);
    dev.expect("login rejected: AUTH_FAILED");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_default_prints_a_file_that_parses_and_serves() {
    let out = broker_command()
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let table: toml::Table = text.parse().expect("the default config is TOML");
    for section in [
        "listen", "storage", "security", "identity", "limits", "timeouts",
    ] {
        assert!(table.contains_key(section), "no [{section}]");
    }
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 20,
        "keys are commented"
    );

    // The file unchanged, in a fresh directory; only the ports come from the environment.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, &text).unwrap();
    let ports = [
        ("BROKER__LISTEN__HTTP", "127.0.0.1:0"),
        ("BROKER__LISTEN__DEVICE_WS", "127.0.0.1:0"),
        ("BROKER__LISTEN__APP_WS", "127.0.0.1:0"),
        ("BROKER__LISTEN__UDP", "127.0.0.1:0"),
    ];
    let check = run(&config, &["config", "check"], &ports);
    assert!(check.status.success(), "{check:?}");
    let mut cmd = broker_command();
    cmd.arg("--config").arg(&config).current_dir(dir.path());
    for (k, v) in ports {
        cmd.env(k, v);
    }
    let mut b = start_command(cmd);
    assert!(
        b.line("broker ready").contains("data in broker-data"),
        "{}",
        b.banner.join("\n")
    );
    let (status, _) = b.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(dir.path().join("broker-data/secrets.toml").is_file());
    b.sigterm();
    assert_eq!(b.wait_exit(Duration::from_secs(15)).0, 0);
}

/// The command a banner line shows after `label` (e.g. `a device over UDP:`).
fn shown(b: &Started, label: &str) -> String {
    b.line(label)
        .trim_start()
        .strip_prefix(label)
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_says_where_it_listens_and_its_commands_connect_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let b = start(&config);
    let banner = b.banner.join("\n");
    // Where it listens (the addresses it bound, not the port-0 ones of the config).
    for needle in [
        format!("HTTP API  {}/v1", b.http),
        format!("devices   udp {} and {}", b.udp, b.device_ws),
        format!("apps      {}", b.app_ws),
        "bearer token: security.api_token of the config".to_string(),
    ] {
        assert!(banner.contains(&needle), "`{needle}` not in:\n{banner}");
    }
    assert!(!banner.contains(comet_support::API_TOKEN), "no secret");
    assert!(!banner.contains(&hex::encode(MASTER)), "no secret");

    // Each command, pasted into a shell in the same directory, connects.
    let cwd = dir.path();
    let mut dev = Spawned::shell(&shown(&b, "a device over UDP:"), cwd, &[]);
    dev.expect(&format!("connected as device:42 via udp {}", b.udp));
    // The push line, with TOKEN set as the banner says.
    let push = shown(&b, "push to device 42:");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(push)
        .env("TOKEN", comet_support::API_TOKEN)
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).expect("curl printed JSON");
    assert!(answer["msg_id"].is_u64(), "{answer}");
    let line = dev.expect("deliver #");
    assert!(line.ends_with("from backend: hello"), "{line}");
    dev.say("quit");
    assert_eq!(dev.wait_exit(Duration::from_secs(10)).0, 0);

    let mut dev = Spawned::shell(&shown(&b, "a device over WS:"), cwd, &[]);
    dev.expect(&format!("connected as device:42 via {}", b.device_ws));
    dev.say("quit");
    assert_eq!(dev.wait_exit(Duration::from_secs(10)).0, 0);

    let mut phone = Spawned::shell(&shown(&b, "a phone:"), cwd, &[]);
    phone.expect("connected as phone:7");
    phone.say("quit");
    assert_eq!(phone.wait_exit(Duration::from_secs(10)).0, 0);

    let mut token = Spawned::shell(&shown(&b, "an app's token:"), cwd, &[]);
    let minted = token.expect(".");
    assert_eq!(token.wait_exit(Duration::from_secs(10)).0, 0);
    let welcome = auth(&b, &minted).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    let mut key = Spawned::shell(&shown(&b, "a device's key:"), cwd, &[]);
    let printed = key.expect("");
    assert_eq!(
        printed,
        hex::encode(derive_device_key(&MasterKey(MASTER), 42).0)
    );
}

/// The fenced blocks of `lang` in `text`, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    text.split(&fence)
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_string())
        .collect()
}

/// A client output line with the message id after `deliver #` replaced by `N`.
fn mask_msg_id(line: &str) -> String {
    match line.split_once("deliver #") {
        Some((head, rest)) => {
            let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{head}deliver #N{tail}")
        }
        None => line.to_string(),
    }
}

/// README "Quick start", as written: its three terminals' commands run in a fresh directory
/// through `sh` (`cargo run --release -p broker --` stands for the binary under test, and the
/// default ports are moved to free ones with `BROKER__LISTEN__*`, so the curl URLs are adjusted
/// to match), and terminal 2 shows what the README says it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_runs_as_written() {
    let readme = include_str!("../../README.md");
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .expect("a Quick start section")
        .split("\n## ")
        .next()
        .unwrap();
    let sh = blocks(quick, "sh");
    let text = blocks(quick, "text");
    let exe = env!("CARGO_BIN_EXE_broker");
    let (http, device_ws, app_ws, udp) = (free_port(), free_port(), free_port(), free_port());
    let adjust = |s: &str| {
        s.replace("cargo run --release -p broker --", exe)
            .replace("cargo run --release -p broker", exe)
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
            .replace("127.0.0.1:8083", &format!("127.0.0.1:{udp}"))
    };
    // The block's terminals, split at its `# terminal N` comments.
    let mut terminals: Vec<String> = Vec::new();
    for line in sh[0].lines() {
        if line.starts_with("# terminal") {
            terminals.push(String::new());
        } else if let Some(t) = terminals.last_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    assert_eq!(terminals.len(), 3, "three terminals in:\n{}", sh[0]);
    let listen = [
        ("BROKER__LISTEN__HTTP", format!("127.0.0.1:{http}")),
        (
            "BROKER__LISTEN__DEVICE_WS",
            format!("127.0.0.1:{device_ws}"),
        ),
        ("BROKER__LISTEN__APP_WS", format!("127.0.0.1:{app_ws}")),
        ("BROKER__LISTEN__UDP", format!("127.0.0.1:{udp}")),
    ];
    let env: Vec<(&str, &str)> = listen.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();

    let mut broker = Spawned::shell(adjust(&terminals[0]).trim(), dir.path(), &env);
    broker.expect("broker ready");
    let mut device = Spawned::shell(adjust(&terminals[1]).trim(), dir.path(), &env);
    let shows: Vec<String> = adjust(&text[0]).lines().map(str::to_string).collect();
    assert_eq!(shows.len(), 2, "{shows:?}");

    // Terminal 3: the push block, then the command round trip block, in one shell.
    let script = format!("{}\n{}", adjust(&terminals[2]), adjust(&sh[1]));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    for want in &shows {
        // Message ids follow the clock: the README's id stands for any.
        let needle = want.split_once('#').map_or(want.as_str(), |(head, _)| head);
        assert_eq!(mask_msg_id(&device.expect(needle)), mask_msg_id(want));
    }
    // The README's comment shows the command's answer.
    let answer = sh[1]
        .lines()
        .find_map(|l| l.strip_prefix("# {"))
        .map(|l| format!("{{{}", l.split_whitespace().next().unwrap()))
        .expect("the documented command answer");
    assert!(printed.ends_with(&answer), "{printed:?} vs {answer}");
    // "terminal 2 prints `command #1 relay: on` and `answered #1 status 0: ok`".
    let sentence = quick
        .split("terminal 2 prints ")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let quoted: Vec<&str> = sentence.split('`').skip(1).step_by(2).collect();
    assert_eq!(quoted.len(), 2, "{sentence}");
    for want in quoted {
        device.expect(want);
    }
    device.say("quit");
    assert_eq!(device.wait_exit(Duration::from_secs(10)).0, 0);
}

#[test]
fn token_and_device_key_refuse_to_invent_secrets_the_broker_does_not_have() {
    // A directory no broker ever ran in, and a config that sets no secret.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("[storage]\ndata_dir = {data:?}\n")).unwrap();
    for args in [
        &["token", "--id", "5"][..],
        &["device-key", "--id", "5"][..],
    ] {
        let out = run(&config, args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a credential");
        assert!(err.contains("no broker secrets here"), "{args:?}: {err}");
        assert!(
            !data.join(broker::secrets::SECRETS_FILE).exists(),
            "{args:?} generated secrets"
        );
    }
}

#[test]
fn config_check_prints_toml_without_secrets_and_a_closed_pipe_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[redis]\nurl = \"redis://app:sentinel-redis-pw@127.0.0.1:6379/0\"\n\
         [rabbitmq]\npassword = \"sentinel-rabbit-pw\"\n",
    );
    // The short flag works like --config.
    let out = broker_command()
        .arg("-c")
        .arg(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        API_TOKEN,
        &hex::encode(MASTER),
        &hex::encode(TOKEN_SECRET),
        "sentinel-redis-pw",
        "sentinel-rabbit-pw",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let parsed: toml::Value = toml::from_str(&text).expect("config check prints TOML");
    assert_eq!(parsed["security"]["api_token"].as_str(), Some("<redacted>"));
    assert_eq!(
        parsed["redis"]["url"].as_str(),
        Some("redis://app:<redacted>@127.0.0.1:6379/0")
    );

    // `broker config check | head -1`, made deterministic: stdout is a pipe whose reader is
    // already gone, so the first write fails with EPIPE. No panic, no backtrace, exit 0.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = broker_command()
        .arg("-c")
        .arg(&config)
        .args(["config", "check"])
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "stderr on a closed pipe: {err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
