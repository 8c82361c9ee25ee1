//! `bench-load request`: the requester of the command round-trip scenario. It sends
//! `--samples` requests one after the other, each to one terminal among `--terminals` idle ones
//! (held by `bench-load idle` processes), and times each from just before it is sent to the
//! moment its answer is read. The result line gives the latency percentiles:
//! `{"ok":..,"failed":..,"reasons":{..},"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..}`, with
//! `"latencies_us":[..]` (every timed request, in the order sent) under `--print-latencies`.
//!
//! * Ours: `POST /v1/devices/{id}/commands` on the HTTP API over one kept-alive HTTP/1.1
//!   connection (the raw client of [`crate::http1`], `TCP_NODELAY` set, as lean as the MQTT
//!   requester's raw client: one write per request, the answer read into one buffer); the
//!   device, a simulated one of `broker load` logged in over the device WebSocket or UDP,
//!   answers with `CommandResult` and the API answers the request with it.
//! * MQTT: request/reply over Mosquitto at QoS 0 (or 1 with `--qos 1`). Every idle terminal (`bench-load idle --kind
//!   mqtt-responder`) subscribes to `bench/req/<id>` and answers each request on
//!   `bench/reply/<id>` with the request's payload; the requester, one more MQTT client,
//!   subscribes to `bench/reply/+`, publishes to `bench/req/<id>` and waits for the reply that
//!   carries its sequence number.
//!
//! Request `i` goes to terminal `1 + (i * 7919) mod terminals` (7919 is prime), so successive
//! requests spread over every terminal without a random-number generator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Args, ValueEnum};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};

use crate::http1::Http1Conn;
use crate::mqtt::{self, Conn};
use crate::tally::Tally;

/// Who answers the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Our HTTP API, commanding our devices.
    Ours,
    /// Mosquitto, MQTT request/reply to responders.
    Mqtt,
}

/// Arguments of `bench-load request`.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Who answers.
    #[arg(long, value_enum)]
    to: Target,
    /// Our HTTP API or Mosquitto's MQTT address.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Our API bearer token.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Idle terminals, ids 1..=N, that answer.
    #[arg(long, value_name = "N")]
    terminals: u32,
    /// Requests timed.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    samples: u32,
    /// Requests sent first and not timed (connection set-up, caches).
    #[arg(long, default_value_t = 100, value_name = "N")]
    warmup: u32,
    /// Give up one request after this many milliseconds (counted as failed).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// MQTT QoS of the requests, the replies and both subscriptions (0 or 1; the responders
    /// must be started at the same QoS). At 1 each PUBLISH is acknowledged; the requester's
    /// PUBACK of a reply is sent after the reply's time is taken.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Also give every timed request's latency (µs, in the order sent) in the result line, as
    /// `latencies_us`, so a harness can pool several runs before taking percentiles.
    #[arg(long)]
    print_latencies: bool,
}

/// The terminal request `i` goes to, among ids `1..=terminals`.
pub fn terminal_of(i: u32, terminals: u32) -> u32 {
    (u64::from(i) * 7919 % u64::from(terminals.max(1))) as u32 + 1
}

/// Latencies of the timed requests, in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    us: Vec<u64>,
}

impl Latencies {
    /// Records one request that took `d`.
    pub fn record(&mut self, d: Duration) {
        self.us
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Every latency recorded, in microseconds (sorted once a percentile was taken).
    pub fn all(&self) -> &[u64] {
        &self.us
    }

    /// The `p`-th percentile (nearest rank: the smallest latency with at least `p` percent of
    /// requests at or below it); `None` with no sample.
    pub fn percentile(&mut self, p: f64) -> Option<u64> {
        if self.us.is_empty() {
            return None;
        }
        self.us.sort_unstable();
        // Less a hair, so that a rank that is whole on paper (99.9% of 1,000 = 999) is not
        // pushed up by one by the float error in `p / 100`.
        let rank = (p / 100.0 * self.us.len() as f64 - 1e-9).ceil() as usize;
        Some(self.us[rank.clamp(1, self.us.len()) - 1])
    }
}

/// Runs `bench-load request`.
pub async fn run(args: RequestArgs) -> Result<(), String> {
    if args.terminals == 0 || args.samples == 0 || args.timeout_ms == 0 {
        return Err("--terminals, --samples and --timeout-ms must be at least 1".into());
    }
    let mut requester = Requester::connect(&args).await?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let tally = Tally::default();
    let mut latencies = Latencies::default();
    for i in 0..args.warmup + args.samples {
        let id = terminal_of(i, args.terminals);
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, requester.request(id, i)).await;
        let took = sent.elapsed();
        if let Err(e) = requester.settle().await {
            return Err(format!("acknowledging a reply: {e}"));
        }
        if i < args.warmup {
            continue;
        }
        match answer {
            Ok(Ok(())) => {
                tally.up();
                latencies.record(took);
            }
            Ok(Err(reason)) => tally.failed(&reason),
            Err(_) => tally.failed("timed out"),
        }
    }
    let status = tally.json();
    let all = args.print_latencies.then(|| latencies.all().to_vec());
    let mut line = serde_json::json!({
        "ok": status["up"],
        "failed": status["failed"],
        "reasons": status["reasons"],
        "p50_us": latencies.percentile(50.0),
        "p99_us": latencies.percentile(99.0),
        "p999_us": latencies.percentile(99.9),
        "max_us": latencies.percentile(100.0),
    });
    if let Some(all) = all {
        line["latencies_us"] = serde_json::json!(all);
    }
    println!("{line}");
    Ok(())
}

/// One requester: an HTTP client of our API or an MQTT client of Mosquitto.
enum Requester {
    Ours {
        conn: Http1Conn,
        authorization: String,
    },
    Mqtt {
        conn: Box<Conn>,
        qos: QoS,
        /// The last request's packet id (QoS 1).
        pkid: u16,
        /// A reply received and not acknowledged yet (QoS 1): its packet id.
        unacked_reply: Option<u16>,
    },
}

impl Requester {
    async fn connect(args: &RequestArgs) -> Result<Requester, String> {
        match args.to {
            Target::Ours => {
                let token = args
                    .api_token
                    .as_deref()
                    .ok_or("--to ours needs --api-token")?;
                let conn = Http1Conn::connect(args.addr).await?;
                Ok(Requester::Ours {
                    conn,
                    authorization: format!("Bearer {token}"),
                })
            }
            Target::Mqtt => {
                let qos = if args.qos == 1 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                let mut conn = Conn::connect(false, args.addr, "bench-requester").await?;
                let mut sub = Subscribe::new(mqtt::reply_topic("+"), qos);
                sub.pkid = 1;
                conn.send(&Packet::Subscribe(sub)).await?;
                match conn.recv().await? {
                    Packet::SubAck(_) => Ok(Requester::Mqtt {
                        conn: Box::new(conn),
                        qos,
                        pkid: 1,
                        unacked_reply: None,
                    }),
                    other => Err(format!("expected suback, got {other:?}")),
                }
            }
        }
    }

    /// Sends request `seq` to terminal `id` and waits for its answer.
    async fn request(&mut self, id: u32, seq: u32) -> Result<(), String> {
        let payload = seq.to_le_bytes();
        match self {
            Requester::Ours {
                conn,
                authorization,
            } => {
                let body = format!(
                    r#"{{"name":"bench","payload":"{}"}}"#,
                    base64::engine::general_purpose::STANDARD.encode(payload)
                );
                let path = format!("/v1/devices/{id}/commands");
                // The whole answer, body included, is part of the round trip.
                let answer = conn
                    .post_json(&path, authorization, &body)
                    .await
                    .map_err(|e| format!("connection: {e}"))?;
                if (200..300).contains(&answer.status) {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", answer.status))
                }
            }
            Requester::Mqtt {
                conn,
                qos,
                pkid,
                unacked_reply,
            } => {
                let topic = mqtt::request_topic(&id.to_string());
                let mut publish = Publish::new(&topic, *qos, payload.to_vec());
                if *qos != QoS::AtMostOnce {
                    *pkid = mqtt::next_pkid(*pkid);
                    publish.pkid = *pkid;
                }
                conn.send(&Packet::Publish(publish)).await?;
                let reply = mqtt::reply_topic(&id.to_string());
                loop {
                    // Replies to requests that timed out earlier are skipped (and, at QoS 1,
                    // acknowledged at once); PUBACKs of our requests need nothing.
                    if let Packet::Publish(p) = conn.recv().await? {
                        let ours = p.topic == reply && p.payload.as_ref() == payload;
                        if p.qos != QoS::AtMostOnce {
                            if ours {
                                *unacked_reply = Some(p.pkid);
                            } else {
                                conn.send(&Packet::PubAck(PubAck::new(p.pkid))).await?;
                            }
                        }
                        if ours {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Acknowledges the last reply if it asked for it (QoS 1): called once its time is taken,
    /// before the next request.
    async fn settle(&mut self) -> Result<(), String> {
        if let Requester::Mqtt {
            conn,
            unacked_reply,
            ..
        } = self
            && let Some(pkid) = unacked_reply.take()
        {
            conn.send(&Packet::PubAck(PubAck::new(pkid))).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_spread_over_every_terminal() {
        let mut seen = vec![false; 1000];
        for i in 0..1000 {
            let id = terminal_of(i, 1000);
            assert!((1..=1000).contains(&id));
            seen[id as usize - 1] = true;
        }
        assert!(seen.iter().all(|&s| s), "1,000 requests reach all 1,000");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile(50.0), None);
        for us in (1..=1000).rev() {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), Some(500));
        assert_eq!(l.percentile(99.0), Some(990));
        assert_eq!(l.percentile(99.9), Some(999));
        assert_eq!(l.percentile(100.0), Some(1000));
        assert_eq!(l.percentile(0.0), Some(1));
    }
}
