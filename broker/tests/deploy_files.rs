//! The deployment files under docs/examples:
//! * systemd/: real systemd units: each one, with its `ExecStart` pointed at the `broker`
//!   binary just built, passes `systemd-analyze verify` with nothing to say (an unknown key, a
//!   bad value or a missing executable is printed, and fails here), and each `ExecStart` names
//!   a subcommand the binary has;
//! * compose/docker-compose.yml (Docker is not run here): read with Debian's python3-yaml, it
//!   has the cluster's services; each broker container's command is a real subcommand with
//!   flags its `--help` lists, its config file (as mounted) with its environment passes
//!   `broker config check`, every published port is a port that node listens on (from the
//!   checked config), and every endpoint it advertises is published on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where the units install the binary; replaced by the built one before verifying.
const INSTALLED: &str = "/usr/local/bin/broker";

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

#[test]
fn every_systemd_unit_verifies_cleanly_against_the_built_binary() {
    let units = units();
    assert_eq!(
        units.len(),
        4,
        "broker, comet@, msgbus@, rmqkeeper@: {units:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for unit in &units {
        let name = unit.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(
            text.contains(INSTALLED),
            "{name}: ExecStart is not {INSTALLED}"
        );
        let local = text.replace(INSTALLED, env!("CARGO_BIN_EXE_broker"));
        std::fs::write(tmp.path().join(&name), local).unwrap();
        // A template is verified through an instance of it.
        let target = name.replace("@.service", "@test.service");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(tmp.path().join(&target))
            .output()
            .expect("systemd-analyze (Debian's systemd package) runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {said}");
        assert!(
            said.trim().is_empty(),
            "{name}: systemd-analyze says:\n{said}"
        );

        // The subcommand it runs exists (`broker <role> --help` exits 0).
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace().skip(1);
        let sub = words.next().unwrap();
        let args: Vec<&str> = if sub.starts_with("--") {
            vec!["--help"]
        } else {
            vec![sub, "--help"]
        };
        let help = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(&args)
            .output()
            .unwrap();
        assert!(help.status.success(), "{name}: broker {args:?} failed");
    }
}

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/compose")
}

/// docker-compose.yml as JSON (merge keys resolved), read by python3-yaml.
fn compose() -> Value {
    let file = compose_dir().join("docker-compose.yml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&file)
        .output()
        .expect("python3 (Debian's python3-yaml) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn broker(args: &[&str], env: &BTreeMap<String, String>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BROKER__")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).envs(env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The host port and `host:port` of an endpoint URL (`ws://h:p/`) or address (`h:p`).
fn host_port(endpoint: &str) -> (String, u16) {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let hp = rest.split('/').next().unwrap();
    let (host, port) = hp.rsplit_once(':').unwrap();
    (host.to_string(), port.parse().unwrap())
}

#[test]
fn the_compose_file_runs_real_commands_on_checked_configs_and_publishes_what_it_advertises() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for want in [
        "zookeeper",
        "redis",
        "rabbitmq-1",
        "rabbitmq-2",
        "rmqkeeper-1",
        "rmqkeeper-2",
        "msgbus-1",
        "comet-a",
        "comet-b",
    ] {
        assert!(names.contains(&want), "no service {want}: {names:?}");
    }
    let mut roles = BTreeMap::new();
    for (name, svc) in services {
        let image = svc["image"].as_str().unwrap();
        assert!(image.contains(':'), "{name}: image without a tag: {image}");
        if !image.starts_with("plugcloud/broker") {
            continue;
        }
        let build = &svc["build"];
        let dockerfile = compose_dir()
            .join(build["context"].as_str().unwrap())
            .join(build["dockerfile"].as_str().unwrap());
        assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());

        // The command: --config FILE, a subcommand, and flags that subcommand lists.
        let cmd: Vec<&str> = svc["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(cmd[0], "--config", "{name}: {cmd:?}");
        let sub = cmd[2];
        roles.insert(name.clone(), sub.to_string());
        let (ok, help) = broker(&[sub, "--help"], &BTreeMap::new());
        assert!(ok, "{name}: `broker {sub}` is not a subcommand: {help}");
        for flag in cmd[3..].iter().filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "{name}: `broker {sub}` has no {flag}");
        }

        // The config file as mounted, with the service's environment, passes the check.
        let mounted = cmd[1];
        let local = svc["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .find_map(|v| {
                let mut parts = v.split(':');
                let (from, to) = (parts.next()?, parts.next()?);
                (to == mounted).then(|| compose_dir().join(from))
            })
            .unwrap_or_else(|| panic!("{name}: {mounted} is not mounted"));
        let env: BTreeMap<String, String> = svc["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let (ok, checked) = broker(
            &["--config", local.to_str().unwrap(), "config", "check"],
            &env,
        );
        assert!(ok, "{name}: config check failed:\n{checked}");
        let config: toml::Table = checked
            .parse()
            .unwrap_or_else(|e| panic!("{name}: config check printed no TOML ({e}):\n{checked}"));

        // Published ports: each goes to a port this node listens on.
        let listen = config["listen"].as_table().unwrap();
        let tcp: Vec<u16> = ["http", "device_ws", "app_ws"]
            .iter()
            .map(|k| port_of(listen[*k].as_str().unwrap()))
            .collect();
        let udp = port_of(listen["udp"].as_str().unwrap());
        let mut published = BTreeMap::new();
        for p in svc["ports"].as_array().into_iter().flatten() {
            let p = p.as_str().unwrap();
            let (spec, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let parts: Vec<&str> = spec.split(':').collect();
            let (host, inside): (u16, u16) = (
                parts[parts.len() - 2].parse().unwrap(),
                parts[parts.len() - 1].parse().unwrap(),
            );
            let listens = match proto {
                "udp" => inside == udp,
                _ => tcp.contains(&inside),
            };
            assert!(
                listens,
                "{name}: {p} publishes a port it does not listen on"
            );
            published.insert((host, proto.to_string()), inside);
        }

        // Advertised endpoints are published (terminals dial them from the host) and the
        // link address is this service on the link port.
        let d = config["discovery"].as_table().unwrap();
        // Comets and msgbus nodes each set their own; keepers keep the file's placeholder.
        if sub != "rmqkeeper" {
            assert_eq!(
                d["node_id"].as_str(),
                Some(name.as_str()),
                "{name}: node id"
            );
        }
        if sub == "comet" {
            for (key, listen_key, proto) in [
                ("advertise_udp", "udp", "udp"),
                ("advertise_ws", "device_ws", "tcp"),
                ("advertise_app_ws", "app_ws", "tcp"),
            ] {
                let (host, port) = host_port(d[key].as_str().unwrap());
                assert_eq!(host, "127.0.0.1", "{name}: {key}");
                assert_eq!(
                    published.get(&(port, proto.to_string())),
                    Some(&port_of(listen[listen_key].as_str().unwrap())),
                    "{name}: {key} is not published to listen.{listen_key}"
                );
            }
            let (host, port) = host_port(d["advertise_link"].as_str().unwrap());
            assert_eq!(&host, name, "{name}: advertise_link names the service");
            let link = config["cluster"]["link_listen"].as_str().unwrap();
            assert_eq!(port, port_of(link), "{name}: advertise_link port");
        }
    }
    let count = |role: &str| roles.values().filter(|r| *r == role).count();
    assert_eq!(
        (count("comet"), count("msgbus"), count("rmqkeeper")),
        (2, 1, 2),
        "{roles:?}"
    );
}
