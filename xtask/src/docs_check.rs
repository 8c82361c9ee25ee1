//! `cargo xtask docs-check`: keeps README.md and docs/ true to the code, so no example rots.
//!
//! It reads every Markdown file (README.md and docs/, recursively) and checks, against the real
//! `broker` binary (built first, debug profile):
//!
//! 1. **Links**: every relative link resolves to a file of the repository, and an `#anchor`
//!    into a Markdown file names one of its headings.
//! 2. **Configuration keys**: every key the docs name (`[section]`, `[section] key`,
//!    `section.key`, `BROKER__SECTION__KEY`) exists in the configuration `broker config default`
//!    prints. Sections of the repository's other TOML files (Cargo manifests, HIL rigs) are
//!    not broker keys and are left alone.
//! 3. **Command lines**: every `broker` command line the docs show (fenced shell blocks and
//!    inline code, whichever way the binary is named) names a real subcommand, and each of its
//!    flags is one that subcommand's `--help` lists. This runs without services, so a command
//!    that needs a cluster is still checked for the parts that can rot.
//! 4. **Shown output**: the commands whose output the docs show, run in a temporary folder on
//!    127.0.0.1 ports: the default configuration (docs/configuration.md), the two
//!    configuration errors it quotes, `config check` on every example configuration under
//!    docs/examples/, and the start-up banner the README shows for `cargo run --release -p
//!    broker`.
//!
//! Commands that need services or a browser are run by tests instead (the README's quick start
//! by `broker/tests/cli_tools.rs`). Every problem found is listed, then the check fails.

use crate::host_build::build_host_debug_binaries;
use crate::shell::project_root;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs every check; `args` are the options after `docs-check` (none are accepted).
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("unknown option `{arg}` for `docs-check`"));
    }
    let broker = build_host_debug_binaries()?.join("broker");
    let docs = markdown_files()?;
    let mut problems = Vec::new();
    problems.extend(check_links(&docs));
    problems.extend(check_config_keys(&docs, &broker)?);
    problems.extend(check_command_lines(&docs, &broker));
    problems.extend(check_shown_output(&broker)?);
    if problems.is_empty() {
        eprintln!(
            "docs-check: {} Markdown files, links, configuration keys, command lines and shown outputs agree with the code",
            docs.len()
        );
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("docs-check: {problem}");
        }
        Err(format!(
            "{} problems in README.md and docs/",
            problems.len()
        ))
    }
}

/// The cargo target folder (`CARGO_TARGET_DIR`, else `target/`).
/// One Markdown file: its path relative to the project root and its text.
struct Doc {
    path: PathBuf,
    text: String,
}

/// README.md and every `.md` file under docs/, sorted by path.
fn markdown_files() -> Result<Vec<Doc>, String> {
    let root = project_root();
    let mut paths = vec![PathBuf::from("README.md")];
    let mut folders = vec![PathBuf::from("docs")];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(root.join(&folder))
            .map_err(|e| format!("cannot list {}: {e}", folder.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", folder.display()))?;
            let path = folder.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(Doc { path, text })
        })
        .collect()
}

/// A piece of Markdown: prose, a fenced block (with its info string) or an inline code span.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Prose(&'a str),
    Block { lang: &'a str, body: String },
    Code(&'a str),
}

/// Splits `text` into prose, fenced blocks (indented fences included) and inline code spans.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    // An open block: its info string, the fence's indentation (taken off each line) and body.
    let mut block: Option<(&str, usize, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some((lang, indent, body)) = block.as_mut() {
            if trimmed.starts_with("```") {
                out.push(Piece::Block {
                    lang,
                    body: std::mem::take(body),
                });
                block = None;
            } else {
                let cut = (line.len() - trimmed.len()).min(*indent);
                body.push_str(&line[cut..]);
                body.push('\n');
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            block = Some((info.trim(), line.len() - trimmed.len(), String::new()));
        } else {
            for (i, part) in line.split('`').enumerate() {
                out.push(if i % 2 == 0 {
                    Piece::Prose(part)
                } else {
                    Piece::Code(part)
                });
            }
        }
    }
    out
}

/// The targets of the `[text](target)` links in `prose`.
fn link_targets(prose: &str) -> Vec<&str> {
    prose
        .match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &prose[at + 2..];
            let end = rest.find(')')?;
            rest[..end].split_whitespace().next()
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The anchors of the headings of a Markdown text (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_block {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(&heading.replace('`', ""));
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

/// Links to files that do not exist, or to headings a Markdown file does not have.
fn check_links(docs: &[Doc]) -> Vec<String> {
    let root = project_root();
    let mut problems = Vec::new();
    for doc in docs {
        for piece in pieces(&doc.text) {
            let Piece::Prose(prose) = piece else { continue };
            for target in link_targets(prose) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let path = if file.is_empty() {
                    doc.path.clone()
                } else {
                    doc.path.parent().unwrap_or(Path::new("")).join(file)
                };
                let full = root.join(&path);
                if !full.exists() {
                    problems.push(format!(
                        "{}: link `{target}`: no file {}",
                        doc.path.display(),
                        path.display()
                    ));
                    continue;
                }
                if anchor.is_empty() || full.extension().is_none_or(|e| e != "md") {
                    continue;
                }
                let text = std::fs::read_to_string(&full).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    problems.push(format!(
                        "{}: link `{target}`: {} has no heading with anchor `{anchor}`",
                        doc.path.display(),
                        path.display()
                    ));
                }
            }
        }
    }
    problems
}

/// The sections (dotted, `security.device_keys`) and keys (`limits.outbound_queue`) of a TOML
/// text.
fn toml_keys(text: &str) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    fn walk(
        prefix: &str,
        table: &toml::Table,
        sections: &mut BTreeSet<String>,
        keys: &mut BTreeSet<String>,
    ) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => {
                    sections.insert(path.clone());
                    walk(&path, inner, sections, keys);
                }
                _ => {
                    keys.insert(path);
                }
            }
        }
    }
    let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let (mut sections, mut keys) = (BTreeSet::new(), BTreeSet::new());
    walk("", &table, &mut sections, &mut keys);
    Ok((sections, keys))
}

/// Table names of the repository's other TOML files (manifests, HIL rigs, size budgets): a doc
/// naming `[workspace]` or `[qemu]` is not naming a broker key.
fn other_toml_sections() -> BTreeSet<String> {
    let listing = Command::new("git")
        .args(["ls-files", "*.toml"])
        .current_dir(project_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listing
        .lines()
        .filter(|path| !path.starts_with("docs/") && !path.starts_with("broker/src/"))
        .filter_map(|path| std::fs::read_to_string(project_root().join(path)).ok())
        .filter_map(|text| toml_keys(&text).ok())
        .flat_map(|(sections, _)| sections)
        .collect()
}

/// Code spans shaped like a configuration key that name something else: JSON fields of
/// `GET /v1/online` on a cluster node (docs/deployment.md).
const NOT_CONFIG_KEYS: &[&str] = &["cluster.terminals", "cluster.terminals_by_node"];

/// File extensions: `limits.rs` names a source file, not key `rs` of `[limits]`.
const FILE_EXTENSIONS: &[&str] = &["rs", "md", "toml", "json", "yml", "sh", "html", "js"];

/// The documented pattern of environment overrides, not a key.
const ENV_PATTERN: &str = "BROKER__SECTION__KEY";

/// One configuration key a doc names: the section and, when named, the key.
#[derive(Debug, PartialEq)]
struct NamedKey {
    section: String,
    key: Option<String>,
}

/// The configuration key an inline code span names, if it names one.
fn named_key(code: &str, real_sections: &BTreeSet<String>) -> Option<NamedKey> {
    let code = code.trim();
    if code.starts_with(ENV_PATTERN) || NOT_CONFIG_KEYS.contains(&code) {
        return None;
    }
    if let Some(rest) = code.strip_prefix("BROKER__") {
        let name = rest.split('=').next()?.to_ascii_lowercase();
        let (section, key) = name.split_once("__")?;
        return Some(NamedKey {
            section: section.to_string(),
            key: Some(key.replace("__", ".")),
        });
    }
    if let Some(rest) = code.strip_prefix('[') {
        let (section, after) = rest.split_once(']')?;
        if section.is_empty()
            || !section
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            return None;
        }
        let key = after
            .split(|c: char| c.is_whitespace() || c == '=')
            .find(|w| !w.is_empty())
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .map(str::to_string);
        return Some(NamedKey {
            section: section.to_string(),
            key,
        });
    }
    // `section.key`: only when the section is a real one (`store.redb` is a file name).
    let (section, key) = code.split_once('.')?;
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if real_sections.contains(section) && word(key) && !FILE_EXTENSIONS.contains(&key) {
        return Some(NamedKey {
            section: section.to_string(),
            key: Some(key.to_string()),
        });
    }
    None
}

/// Configuration keys the docs name that the real configuration does not have.
fn check_config_keys(docs: &[Doc], broker: &Path) -> Result<Vec<String>, String> {
    let printed = Command::new(broker)
        .args(["config", "default"])
        .output()
        .map_err(|e| format!("cannot run `broker config default`: {e}"))?;
    let default = String::from_utf8_lossy(&printed.stdout);
    let (sections, keys) =
        toml_keys(&default).map_err(|e| format!("`broker config default` is not TOML: {e}"))?;
    let others = other_toml_sections();
    let mut problems = Vec::new();
    for doc in docs {
        for piece in pieces(&doc.text) {
            let Piece::Code(code) = piece else { continue };
            let Some(named) = named_key(code, &sections) else {
                continue;
            };
            let known_section = sections.contains(&named.section);
            if !known_section && others.contains(&named.section) {
                continue;
            }
            let known = match &named.key {
                None => known_section,
                Some(key) => {
                    let path = format!("{}.{key}", named.section);
                    // Keys inside a free-form table (`[security.device_keys]`, whose keys are
                    // device ids) are the user's own: a table on the way is enough.
                    keys.contains(&path)
                        || path
                            .match_indices('.')
                            .map(|(at, _)| &path[..at])
                            .chain(std::iter::once(path.as_str()))
                            .skip(1)
                            .any(|table| sections.contains(table))
                }
            };
            if !known {
                problems.push(format!(
                    "{}: `{code}` names a configuration key `broker config default` does not have",
                    doc.path.display()
                ));
            }
        }
    }
    Ok(problems)
}

/// A `broker` command line shown in a doc: its subcommand path and the flags it passes.
#[derive(Debug, PartialEq)]
struct CommandLine {
    subcommand: Vec<String>,
    flags: Vec<String>,
}

/// The ways docs start the binary, longest first.
const INVOCATIONS: &[&str] = &[
    "cargo run --release -p broker --",
    "cargo run -p broker --",
    "./target/release/broker",
    "./target/debug/broker",
    "target/release/broker",
    "target/debug/broker",
    "broker",
];

/// Parses a `broker` command line (`line` as written in a doc, continuation lines joined).
fn command_line(line: &str) -> Option<CommandLine> {
    let line = line.trim();
    let rest = INVOCATIONS.iter().find_map(|inv| {
        line.strip_prefix(inv)
            .filter(|r| r.is_empty() || r.starts_with(' '))
    })?;
    let mut subcommand = Vec::new();
    let mut flags = Vec::new();
    let mut words = rest.split_whitespace();
    let mut flag_seen = false;
    while let Some(word) = words.next() {
        if ["#", "&", "|", ";", ">", "&&", "||"].contains(&word) || word.starts_with('#') {
            break;
        }
        let bare = word.trim_matches(|c| c == '[' || c == ']');
        if bare.starts_with('-') {
            flag_seen = true;
            for flag in bare.split('|').filter(|f| f.starts_with('-')) {
                let flag = flag.split('=').next().unwrap_or(flag);
                if flag == "-c" || flag == "--config" {
                    // The global option's value is not a subcommand.
                    words.next();
                    flag_seen = !subcommand.is_empty();
                }
                flags.push(flag.to_string());
            }
        } else if !flag_seen
            && !bare.is_empty()
            && bare.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        {
            subcommand.push(bare.to_string());
        } else {
            flag_seen = true;
        }
    }
    Some(CommandLine { subcommand, flags })
}

/// Every `broker` command line of a doc: lines of shell blocks and inline code spans.
fn command_lines(text: &str) -> Vec<(String, CommandLine)> {
    let mut out = Vec::new();
    for piece in pieces(text) {
        match piece {
            Piece::Code(code) => {
                if let Some(parsed) = command_line(code) {
                    out.push((code.to_string(), parsed));
                }
            }
            Piece::Block { lang, body } if ["sh", "bash", "shell", ""].contains(&lang) => {
                for line in body.replace("\\\n", " ").lines() {
                    if let Some(parsed) = command_line(line) {
                        out.push((line.trim().to_string(), parsed));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// True when `help` lists `flag` (as a word: `--id` does not match `--idle`).
fn help_lists(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric() && c != '-')
            && after.is_none_or(|c| !c.is_alphanumeric() && c != '-' && c != '_')
    })
}

/// Command lines naming a subcommand the binary lacks or a flag its `--help` does not list.
fn check_command_lines(docs: &[Doc], broker: &Path) -> Vec<String> {
    let mut helps: BTreeMap<Vec<String>, Result<String, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for doc in docs {
        for (shown, line) in command_lines(&doc.text) {
            let help = helps.entry(line.subcommand.clone()).or_insert_with(|| {
                let out = Command::new(broker)
                    .args(&line.subcommand)
                    .arg("--help")
                    .output()
                    .map_err(|e| format!("cannot run the broker: {e}"))?;
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
            match help {
                Err(why) => problems.push(format!(
                    "{}: `{shown}`: `broker {} --help` fails: {why}",
                    doc.path.display(),
                    line.subcommand.join(" ")
                )),
                Ok(help) => {
                    for flag in &line.flags {
                        if !help_lists(help, flag) {
                            problems.push(format!(
                                "{}: `{shown}`: `broker {}` has no flag `{flag}`",
                                doc.path.display(),
                                line.subcommand.join(" ")
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// Runs the broker in `dir` with `args` and `env`, returning (success, stdout, stderr).
fn broker_output(
    broker: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(bool, String, String), String> {
    let out = Command::new(broker)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run `broker {}`: {e}", args.join(" ")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Outputs the docs show that the binary does not print.
fn check_shown_output(broker: &Path) -> Result<Vec<String>, String> {
    let root = project_root();
    let scratch = std::env::temp_dir().join(format!("docs-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {scratch:?}: {e}"))?;
    let result = shown_outputs(broker, &root, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn shown_outputs(broker: &Path, root: &Path, scratch: &Path) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).map_err(|e| format!("cannot read {path}: {e}"))
    };
    let configuration = read("docs/configuration.md")?;

    // The whole default file, as docs/configuration.md shows it.
    let (_, default, _) = broker_output(broker, scratch, &["config", "default"], &[])?;
    let shown = pieces(&configuration)
        .into_iter()
        .any(|piece| matches!(piece, Piece::Block { lang: "toml", body } if body == default));
    if !shown {
        problems.push(
            "docs/configuration.md: no ```toml block equals what `broker config default` prints"
                .to_string(),
        );
    }

    // The two configuration errors docs/configuration.md quotes: a bad value in a file, and
    // an environment override that breaks a rule between keys.
    std::fs::write(
        scratch.join("broker.toml"),
        "[limits]\noutbound_queue = \"x\"\n",
    )
    .map_err(|e| format!("cannot write a scratch config: {e}"))?;
    let errors = [
        broker_output(
            broker,
            scratch,
            &["-c", "broker.toml", "config", "check"],
            &[],
        )?,
        broker_output(
            broker,
            scratch,
            &["config", "check"],
            &[("BROKER__TIMEOUTS__SESSION_SECS", "10")],
        )?,
    ];
    for (ok, _, stderr) in errors {
        let line = stderr.trim();
        if ok || !configuration.lines().any(|l| l.trim() == line) {
            problems.push(format!(
                "docs/configuration.md does not quote the configuration error the broker prints: {line}"
            ));
        }
    }

    // Every example configuration loads.
    let examples = root.join("docs/examples");
    let mut folders = vec![examples];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let file = path.to_string_lossy().into_owned();
                let (ok, _, stderr) =
                    broker_output(broker, root, &["-c", &file, "config", "check"], &[])?;
                if !ok {
                    problems.push(format!(
                        "{}: `broker config check` refuses it: {}",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        stderr.trim()
                    ));
                }
            }
        }
    }

    problems.extend(check_readme_banner(broker, &read("README.md")?, scratch)?);
    Ok(problems)
}

/// The README's "first start" block (the `text` block after the first `sh` block) against the
/// banner a broker on embedded defaults prints, in a fresh folder.
fn check_readme_banner(broker: &Path, readme: &str, scratch: &Path) -> Result<Vec<String>, String> {
    let blocks: Vec<(&str, String)> = pieces(readme)
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Block { lang, body } => Some((lang, body)),
            _ => None,
        })
        .collect();
    let Some(shown) = blocks
        .windows(2)
        .find(|w| w[0].0 == "sh" && w[1].0 == "text")
        .map(|w| w[1].1.clone())
    else {
        return Ok(vec![
            "README.md: no ```text block after the first commands shows what they print".into(),
        ]);
    };
    let printed = first_start_banner(broker, scratch)?;
    let shown: Vec<&str> = shown.lines().collect();
    let printed: Vec<String> = printed.iter().map(|l| mask_generated(l)).collect();
    let mut problems = Vec::new();
    for want in &shown {
        if !printed.iter().any(|line| line == &mask_generated(want)) {
            problems.push(format!(
                "README.md shows `{want}` at first start; the broker printed:\n{}",
                printed.join("\n")
            ));
        }
    }
    Ok(problems)
}

/// Secrets and ids the broker generates at first start, as `…`: hex runs of 16+ digits and
/// the text after `token ` or `TOKEN=`.
fn mask_generated(line: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in line.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
            run.push(c);
            continue;
        }
        let hex = run.len() >= 16 && run.chars().all(|c| c.is_ascii_hexdigit());
        let token = run.len() >= 32;
        out.push_str(if hex || token { "…" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The banner of a broker started in a fresh `scratch/first-start` folder on embedded
/// defaults, as written for the default ports and the release binary (it listens on free
/// ports and is the debug build; the lines are rewritten back), from its first line to
/// `stop with`.
fn first_start_banner(broker: &Path, scratch: &Path) -> Result<Vec<String>, String> {
    let dir = scratch.join("first-start");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let ports: Vec<(String, &str, &str)> = [
        ("BROKER__LISTEN__HTTP", false, "8080"),
        ("BROKER__LISTEN__DEVICE_WS", false, "8081"),
        ("BROKER__LISTEN__APP_WS", false, "8082"),
        ("BROKER__LISTEN__UDP", true, "8083"),
    ]
    .into_iter()
    .map(|(var, udp, default)| (free_port(udp).to_string(), var, default))
    .collect();
    let exe = broker.display().to_string();
    let mut command = Command::new(broker);
    command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (port, var, _) in &ports {
        command.env(var, format!("127.0.0.1:{port}"));
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the broker: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let finished = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let mut line = line.replace(&exe, SHOWN_EXE);
                for (port, _, default) in &ports {
                    line = line.replace(&format!(":{port}"), &format!(":{default}"));
                }
                let last = line.contains("stop with");
                lines.push(line);
                if last {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    if finished {
        Ok(lines)
    } else {
        Err(format!(
            "the broker printed no `stop with` line within 30 s; it printed:\n{}",
            lines.join("\n")
        ))
    }
}

/// How the banner names the binary after `cargo run --release -p broker` in the checkout.
const SHOWN_EXE: &str = "target/release/broker";

/// A free port on 127.0.0.1 (TCP or UDP).
fn free_port(udp: bool) -> u16 {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_give_subcommand_and_flags_whatever_the_invocation() {
        let parsed =
            command_line("broker -c broker.toml device-key --id 1001 --record plug.bin").unwrap();
        assert_eq!(parsed.subcommand, ["device-key"]);
        assert_eq!(parsed.flags, ["-c", "--id", "--record"]);
        let parsed = command_line(
            "./target/release/broker --config load.toml load --devices 10 --broker-pid $! # x",
        )
        .unwrap();
        assert_eq!(parsed.subcommand, ["load"]);
        assert_eq!(parsed.flags, ["--config", "--devices", "--broker-pid"]);
        let parsed = command_line("broker [-c cluster.toml] rmqkeeper [--vhost /] [--root /r]");
        assert_eq!(parsed.unwrap().flags, ["-c", "--vhost", "--root"]);
        let parsed = command_line("broker config check [-c|--config FILE]").unwrap();
        assert_eq!(parsed.subcommand, ["config", "check"]);
        assert_eq!(parsed.flags, ["-c", "--config"]);
        let parsed = command_line("cargo run --release -p broker -- client phone --id 7");
        assert_eq!(parsed.unwrap().subcommand, ["client", "phone"]);
        assert_eq!(command_line("brokers are nodes"), None);
        assert_eq!(command_line("broker: configuration error"), None);
    }

    #[test]
    fn code_spans_name_keys_in_every_documented_form() {
        let sections: BTreeSet<String> = ["limits".to_string()].into();
        let key = |section: &str, key: Option<&str>| NamedKey {
            section: section.into(),
            key: key.map(String::from),
        };
        assert_eq!(
            named_key("BROKER__LIMITS__OUTBOUND_QUEUE=128", &sections),
            Some(key("limits", Some("outbound_queue")))
        );
        assert_eq!(
            named_key("[log] format = \"json\"", &sections),
            Some(key("log", Some("format")))
        );
        assert_eq!(named_key("[tls]", &sections), Some(key("tls", None)));
        assert_eq!(
            named_key("limits.outbound_queue", &sections),
            Some(key("limits", Some("outbound_queue")))
        );
        assert_eq!(named_key("store.redb", &sections), None);
        assert_eq!(named_key("[1, 2]", &sections), None);
    }

    #[test]
    fn links_and_anchors_are_found_outside_code_only() {
        let text = "See [a](docs/a.md#the-part) and `[b](nope.md)`.\n```sh\n[c](x.md)\n```\n";
        let targets: Vec<&str> = pieces(text)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Prose(prose) => Some(link_targets(prose)),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(targets, ["docs/a.md#the-part"]);
        let heads = anchors("# Title\n## The `part`, again\n## The part again\n```\n# not\n```\n");
        let want: BTreeSet<String> = ["title", "the-part-again", "the-part-again-1"]
            .map(String::from)
            .into();
        assert_eq!(heads, want);
    }

    #[test]
    fn help_matches_whole_flags_only() {
        let help = "  --id <ID>  the id\n  --idle-secs <S>\n  -c, --config <FILE>\n";
        assert!(help_lists(help, "--id"));
        assert!(help_lists(help, "-c"));
        assert!(help_lists(help, "--idle-secs"));
        assert!(!help_lists(help, "--idle"));
        assert!(!help_lists(help, "--conf"));
    }

    #[test]
    fn generated_secrets_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_generated("api token 0123456789abcdef0123 in broker-data/secrets.toml"),
            "api token … in broker-data/secrets.toml"
        );
    }
}
