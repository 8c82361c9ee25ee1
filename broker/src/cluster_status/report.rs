//! The report `broker cluster status` prints, and the verdict on it, without any I/O: the probes
//! in [`super::probe`] fill a [`Report`]; [`Report::problems`] decides what is unhealthy and
//! [`Report::render_text`] lays it out for a terminal. The JSON form is the same struct
//! serialised, with the problems added ([`Report::to_json`]).

use serde::Serialize;

/// The result of reaching one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was reached, without credentials (`127.0.0.1:2181`, `redis://host:6379/`).
    pub target: String,
    /// Whether it answered.
    pub ok: bool,
    /// Why not, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    /// A service that answered.
    pub fn ok(target: impl Into<String>) -> Check {
        Check {
            target: target.into(),
            ok: true,
            error: None,
        }
    }

    /// A service that did not answer, and why.
    pub fn failed(target: impl Into<String>, error: impl Into<String>) -> Check {
        Check {
            target: target.into(),
            ok: false,
            error: Some(error.into()),
        }
    }

    fn word(&self) -> String {
        match &self.error {
            None => "ok".into(),
            Some(e) => format!("FAILED: {e}"),
        }
    }
}

/// One comet or msgbus node registered in discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: String,
    /// `comet` or `msgbus`.
    pub role: &'static str,
    /// Sessions held, as the node last published in discovery.
    pub load: u32,
    /// Public endpoints (device UDP, device WebSocket, app WebSocket).
    pub endpoints: Vec<String>,
    /// Node-link address (comets), where msgbus nodes connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Whether the node's heartbeat key is alive in Redis (`None`: Redis not reachable).
    pub redis_heartbeat: Option<bool>,
    /// Terminals the online registry in Redis holds for the node (`None`: Redis not reachable).
    pub terminals: Option<u64>,
}

/// One RabbitMQ node the cluster publishes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RabbitStatus {
    /// RabbitMQ node name as registered (or the URL's host and port for a static list).
    pub name: String,
    /// The result of an AMQP connection with the cluster's credentials.
    pub amqp: Check,
}

/// Where the RabbitMQ nodes came from and how each answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RabbitSection {
    /// `zookeeper` (registered by rmqkeepers) or `static` (`rabbitmq.urls`).
    pub source: &'static str,
    /// The znode root the rmqkeepers register under (source `zookeeper`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The nodes, sorted by name.
    pub nodes: Vec<RabbitStatus>,
}

/// Everything `broker cluster status` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The ZooKeeper ensemble (discovery).
    pub zookeeper: Check,
    /// The discovery root the nodes register under.
    pub root: String,
    /// Comet and msgbus nodes, sorted by role, then id (empty when ZooKeeper is unreachable).
    pub nodes: Vec<NodeStatus>,
    /// Znodes under the root that are not valid node descriptions.
    pub rejected: Vec<String>,
    /// The RabbitMQ nodes.
    pub rabbitmq: RabbitSection,
    /// The Redis the cluster keeps its state in.
    pub redis: Check,
}

#[derive(Serialize)]
struct Json<'a> {
    healthy: bool,
    problems: Vec<String>,
    #[serde(flatten)]
    report: &'a Report,
}

impl Report {
    /// What is unhealthy, one line each; empty when the cluster is healthy. Unhealthy means: a
    /// service unreachable, no comet or no msgbus registered, a node without a live heartbeat in
    /// Redis, a znode that is not a node description, no RabbitMQ node, or one refusing AMQP.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.zookeeper.error {
            out.push(format!(
                "ZooKeeper {} unreachable: {e}",
                self.zookeeper.target
            ));
        } else {
            for role in ["comet", "msgbus"] {
                if !self.nodes.iter().any(|n| n.role == role) {
                    out.push(format!("no {role} registered under {}/{role}", self.root));
                }
            }
        }
        for r in &self.rejected {
            out.push(format!("znode rejected: {r}"));
        }
        if let Some(e) = &self.redis.error {
            out.push(format!("Redis {} unreachable: {e}", self.redis.target));
        }
        for n in &self.nodes {
            if n.redis_heartbeat == Some(false) {
                out.push(format!(
                    "{} {}: no live heartbeat in Redis (the node cannot reach Redis, or is stuck)",
                    n.role, n.id
                ));
            }
        }
        let r = &self.rabbitmq;
        if r.nodes.is_empty() && self.zookeeper.ok {
            out.push(match &r.root {
                Some(root) => format!(
                    "no RabbitMQ node registered under {root} (no rmqkeeper sees a healthy node)"
                ),
                None => "no RabbitMQ node in rabbitmq.urls".to_string(),
            });
        }
        for n in &r.nodes {
            if let Some(e) = &n.amqp.error {
                out.push(format!(
                    "RabbitMQ {} ({}) refuses AMQP: {e}",
                    n.name, n.amqp.target
                ));
            }
        }
        out
    }

    /// The process exit code: 0 when healthy, 1 when any problem was found.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.problems().is_empty())
    }

    /// The report as one JSON object: `healthy`, `problems`, then every field of [`Report`].
    pub fn to_json(&self) -> String {
        let problems = self.problems();
        let json = Json {
            healthy: problems.is_empty(),
            problems,
            report: self,
        };
        serde_json::to_string_pretty(&json).expect("the report serialises") + "\n"
    }

    /// The report for a terminal: services, a node table, RabbitMQ nodes, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(format!(
            "ZooKeeper  {}  {}  (root {})",
            self.zookeeper.target,
            self.zookeeper.word(),
            self.root
        ));
        line(format!(
            "Redis      {}  {}",
            self.redis.target,
            self.redis.word()
        ));
        line(String::new());
        let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let rows: Vec<[String; 6]> = self
            .nodes
            .iter()
            .map(|n| {
                [
                    n.id.clone(),
                    n.role.to_string(),
                    n.load.to_string(),
                    opt(n.terminals.map(|t| t.to_string())),
                    opt(n
                        .redis_heartbeat
                        .map(|h| if h { "ok" } else { "MISSING" }.to_string())),
                    match (&n.link, n.endpoints.is_empty()) {
                        (Some(l), true) => format!("link {l}"),
                        (Some(l), false) => format!("{} link {l}", n.endpoints.join(" ")),
                        (None, _) => n.endpoints.join(" "),
                    },
                ]
            })
            .collect();
        let header = [
            "NODE",
            "ROLE",
            "LOAD",
            "TERMINALS",
            "HEARTBEAT",
            "ENDPOINTS",
        ]
        .map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        for r in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            line(cells.join("  "));
        }
        if rows.is_empty() {
            line("(no node registered)".into());
        }
        line(String::new());
        let r = &self.rabbitmq;
        line(match &r.root {
            Some(root) => format!("RabbitMQ nodes registered by rmqkeepers under {root}:"),
            None => "RabbitMQ nodes from rabbitmq.urls:".to_string(),
        });
        let name_w = r.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        let url_w = r
            .nodes
            .iter()
            .map(|n| n.amqp.target.len())
            .max()
            .unwrap_or(0);
        for n in &r.nodes {
            line(format!(
                "  {:<name_w$}  {:<url_w$}  {}",
                n.name,
                n.amqp.target,
                n.amqp.word()
            ));
        }
        if r.nodes.is_empty() {
            line("  (none)".into());
        }
        line(String::new());
        let problems = self.problems();
        if problems.is_empty() {
            line("status: healthy".into());
        } else {
            for p in &problems {
                line(format!("problem: {p}"));
            }
            let s = if problems.len() == 1 { "" } else { "s" };
            line(format!("status: UNHEALTHY ({} problem{s})", problems.len()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, role: &'static str, heartbeat: Option<bool>) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            role,
            load: 2,
            endpoints: vec!["127.0.0.1:8083".into()],
            link: (role == "comet").then(|| "127.0.0.1:8090".into()),
            redis_heartbeat: heartbeat,
            terminals: heartbeat.map(|_| 2),
        }
    }

    fn healthy() -> Report {
        Report {
            zookeeper: Check::ok("127.0.0.1:2181"),
            root: "/broker".into(),
            nodes: vec![
                node("comet-a", "comet", Some(true)),
                node("bus-1", "msgbus", Some(true)),
            ],
            rejected: Vec::new(),
            rabbitmq: RabbitSection {
                source: "zookeeper",
                root: Some("/rabbitmq".into()),
                nodes: vec![RabbitStatus {
                    name: "rabbit@mq1".into(),
                    amqp: Check::ok("amqp://10.0.0.5:5672/%2f"),
                }],
            },
            redis: Check::ok("redis://127.0.0.1:6379/"),
        }
    }

    #[test]
    fn a_complete_cluster_is_healthy_and_exits_zero() {
        let r = healthy();
        assert_eq!(r.problems(), Vec::<String>::new());
        assert_eq!(r.exit_code(), 0);
        let text = r.render_text();
        assert!(text.ends_with("status: healthy\n"), "{text}");
        assert!(
            text.contains("comet-a  comet   2     2          ok"),
            "{text}"
        );
        assert!(
            text.contains("rabbit@mq1  amqp://10.0.0.5:5672/%2f  ok"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["healthy"], true);
        assert_eq!(json["nodes"][1]["role"], "msgbus");
        assert_eq!(json["redis"]["ok"], true);
    }

    #[test]
    fn each_fault_is_one_problem_and_exits_one() {
        let mut r = healthy();
        r.nodes.retain(|n| n.role != "msgbus");
        r.nodes[0].redis_heartbeat = Some(false);
        r.rabbitmq.nodes[0].amqp = Check::failed("amqp://10.0.0.5:5672/%2f", "connection refused");
        r.rejected
            .push("/broker/comet/x: data is not a node description".into());
        let p = r.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p[0], "no msgbus registered under /broker/msgbus");
        assert!(
            p[2].starts_with("comet comet-a: no live heartbeat"),
            "{p:?}"
        );
        assert!(p[3].contains("refuses AMQP: connection refused"), "{p:?}");
        assert_eq!(r.exit_code(), 1);
        assert!(
            r.render_text()
                .ends_with("status: UNHEALTHY (4 problems)\n")
        );
    }

    #[test]
    fn unreachable_services_are_named_and_not_blamed_on_the_nodes() {
        let mut r = healthy();
        r.zookeeper = Check::failed("127.0.0.1:2181", "timed out");
        r.nodes.clear();
        r.rabbitmq.nodes.clear();
        r.redis = Check::failed("redis://127.0.0.1:1/", "connection refused");
        let p = r.problems();
        // No "no comet registered" or "no RabbitMQ node": ZooKeeper could not be asked.
        assert_eq!(
            p,
            [
                "ZooKeeper 127.0.0.1:2181 unreachable: timed out",
                "Redis redis://127.0.0.1:1/ unreachable: connection refused"
            ]
        );
        assert!(r.render_text().contains("(no node registered)"));
    }
}
