//! Pulse beside the Node peer and the kernel's floor, measured in one run: the figures each
//! side's phases leave, the table of both sides with their ratios, and issue 15's goals as
//! ratios (met, not met, or not measured by this run).
//!
//! Changes when the comparison or a goal changes; depends only on the figures, never on how
//! they were measured.

use serde::Serialize;

use crate::floor::{FloorReport, PacedFloor};
use crate::md::{Doc, Table, opt};

/// The figures of one side that the comparison reads, each measured the same way on both.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Clients started.
    pub clients: usize,
    /// Clients with their snapshot.
    pub clients_ready: usize,
    /// First connect → last complete snapshot, s.
    pub connect_secs: f64,
    /// Per client: connect + upgrade + snapshot, p99, ms.
    pub connect_p99_ms: f64,
    /// (server RSS with the clients − RSS with none) / clients, KiB.
    pub rss_per_connection_kib: f64,
    /// The same at the end of the idle phase (after heartbeats), KiB, when it ran.
    pub rss_per_connection_after_idle_kib: Option<f64>,
    /// Server CPU with every client connected and no change, % of one core.
    pub idle_cpu_pct_of_core: f64,
    /// Paced changes that succeeded.
    pub changes: usize,
    /// Paced changes per second achieved.
    pub achieved_rate: f64,
    /// Server CPU over the change phase, s.
    pub change_phase_cpu_secs: f64,
    /// Messages the clients received in the change phase.
    pub messages_delivered: u64,
    /// change_phase_cpu_secs / messages_delivered, µs.
    pub cpu_us_per_delivered_message: Option<f64>,
    /// change_phase_cpu_secs / (changes × clients), µs: conflation lowers this, not the cost
    /// of a message.
    pub cpu_us_per_change_and_client: Option<f64>,
    /// Change sent → client holds it, p50, ms.
    pub latency_p50_ms: f64,
    /// … p99, ms.
    pub latency_p99_ms: f64,
    /// (client, change) pairs not delivered within the pair timeout.
    pub pairs_missing: u64,
    /// The same changes with a second, smaller fleet, when it ran.
    pub second_fleet: Option<SecondFleet>,
}

/// The figures of the second, smaller fleet.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondFleet {
    /// Its clients.
    pub clients: usize,
    /// Change sent → client holds it, p50, ms.
    pub latency_p50_ms: f64,
    /// … p99, ms.
    pub latency_p99_ms: f64,
    /// Server CPU over its change phase / messages its clients received, µs.
    pub cpu_us_per_delivered_message: Option<f64>,
}

/// What the floor contributes: the kernel's cost of the same fan-out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FloorFigures {
    /// Sockets written (both ends in the bench: at most half its open-file limit).
    pub sockets: usize,
    /// Writer threads' CPU per frame, µs: the kernel's send path per socket.
    pub writer_cpu_us_per_frame: f64,
    /// Readers' CPU per frame, µs.
    pub reader_cpu_us_per_frame: f64,
    /// First write → last frame read, median over the rounds, ms.
    pub fan_out_p50_ms: f64,
    /// The floor paced like the change phase, per fleet size.
    pub paced: Vec<PacedFloor>,
}

impl From<&FloorReport> for FloorFigures {
    fn from(f: &FloorReport) -> Self {
        Self {
            sockets: f.sockets,
            writer_cpu_us_per_frame: f.writer_cpu_us_per_frame,
            reader_cpu_us_per_frame: f.reader_cpu_us_per_frame,
            fan_out_p50_ms: f.fan_out_p50_ms(),
            paced: f.paced.clone(),
        }
    }
}

/// One line of the side-by-side table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// What is measured, with its unit.
    pub what: String,
    /// Pulse's value.
    pub pulse: Option<f64>,
    /// The peer's value.
    pub peer: Option<f64>,
    /// pulse / peer.
    pub ratio: Option<f64>,
    /// Decimals shown in the summary.
    #[serde(skip)]
    pub digits: usize,
}

/// Whether a goal holds in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Holds.
    Met,
    /// Does not hold.
    NotMet,
    /// This run did not measure it (no peer, no floor, another fleet size).
    NotMeasured,
}

/// One of issue 15's goals.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Goal {
    /// The goal as the issue states it.
    pub goal: String,
    /// The measured value (a ratio or an amount), when measured.
    pub value: Option<f64>,
    /// The limit it must stay within.
    pub limit: f64,
    /// How `value` was obtained, or why it was not.
    pub how: String,
    /// Met or not.
    pub status: Status,
}

/// A fleet's p99 beside the floor's, paced alike over as many sockets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BesidePacedFloor {
    /// "the fleet" or "the second fleet".
    pub fleet: &'static str,
    /// Its clients.
    pub clients: usize,
    /// Pulse's change → client p99, ms.
    pub pulse_p99_ms: f64,
    /// The paced floor's round start → reader p99, ms.
    pub floor_p99_ms: f64,
    /// The paced floor's p50, ms.
    pub floor_p50_ms: f64,
    /// Share of the floor's (socket, round) frames written: below 1 when its writers fell
    /// behind the pace and wrote only the newest round.
    pub floor_frames_written_share: f64,
    /// Rounds per second the paced floor started.
    pub floor_rate_reached: f64,
    /// pulse_p99_ms / floor_p99_ms.
    pub ratio: f64,
}

/// Each fleet beside the floor paced over as many sockets (the floor holds at most half the
/// bench's open files, so 10,000 clients meet 9,968 sockets).
fn beside_paced_floor(p: &Figures, floor: Option<&FloorFigures>) -> Vec<BesidePacedFloor> {
    let Some(f) = floor else { return Vec::new() };
    let fleets = [("the fleet", p.clients, Some(p.latency_p99_ms))];
    let second = p.second_fleet.as_ref().map(|s| ("the second fleet", s.clients, Some(s.latency_p99_ms)));
    fleets
        .into_iter()
        .chain(second)
        .filter_map(|(fleet, clients, p99)| {
            let paced = f.paced.iter().find(|s| s.sockets == clients.min(f.sockets))?;
            // No change delivered, no latency to compare.
            let pulse_p99_ms = p99.filter(|v| *v > 0.0)?;
            let asked = (paced.rounds * paced.sockets).max(1) as f64;
            Some(BesidePacedFloor {
                fleet,
                clients,
                pulse_p99_ms,
                floor_p99_ms: paced.latency_p99_ms,
                floor_p50_ms: paced.latency_p50_ms,
                floor_frames_written_share: paced.frames_written as f64 / asked,
                floor_rate_reached: paced.rate_reached,
                ratio: ratio(Some(pulse_p99_ms), Some(paced.latency_p99_ms))?,
            })
        })
        .collect()
}

/// Pulse, the peer and the floor in one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Pulse's figures.
    pub pulse: Figures,
    /// The peer's, when it ran.
    pub peer: Option<Figures>,
    /// The floor's, when measured.
    pub floor: Option<FloorFigures>,
    /// Changes per second asked for.
    pub rate: f64,
    /// Both sides and their ratio.
    pub rows: Vec<Row>,
    /// The goals.
    pub goals: Vec<Goal>,
    /// Each fleet's p99 beside the floor paced like the change phase.
    pub beside_paced_floor: Vec<BesidePacedFloor>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Comparison {
    /// Puts the figures side by side and judges the goals (`rate`: paced changes per second).
    pub fn new(pulse: Figures, peer: Option<Figures>, floor: Option<FloorFigures>, rate: f64) -> Self {
        let p = &pulse;
        let q = peer.as_ref();
        type Pick = fn(&Figures) -> Option<f64>;
        let lines: [(&str, usize, Pick); 15] = [
            ("clients with their snapshot", 0, |f| Some(f.clients_ready as f64)),
            ("all clients connected, s", 2, |f| Some(f.connect_secs)),
            ("connect + snapshot per client p99, ms", 1, |f| Some(f.connect_p99_ms)),
            ("memory per idle connection, KiB", 1, |f| Some(f.rss_per_connection_kib)),
            ("… at the end of the idle phase, KiB", 1, |f| f.rss_per_connection_after_idle_kib),
            ("idle CPU, % of one core", 2, |f| Some(f.idle_cpu_pct_of_core)),
            ("change → client p50, ms", 1, |f| Some(f.latency_p50_ms)),
            ("change → client p99, ms", 1, |f| Some(f.latency_p99_ms)),
            ("changes per second achieved", 1, |f| Some(f.achieved_rate)),
            ("messages delivered in the change phase", 0, |f| Some(f.messages_delivered as f64)),
            ("server CPU per delivered message, µs", 2, |f| f.cpu_us_per_delivered_message),
            ("server CPU per change × client, µs", 2, |f| f.cpu_us_per_change_and_client),
            ("second fleet: clients", 0, |f| f.second_fleet.as_ref().map(|s| s.clients as f64)),
            ("second fleet: change → client p99, ms", 1, |f| {
                f.second_fleet.as_ref().map(|s| s.latency_p99_ms)
            }),
            ("second fleet: server CPU per delivered message, µs", 2, |f| {
                f.second_fleet.as_ref().and_then(|s| s.cpu_us_per_delivered_message)
            }),
        ];
        // A figure neither side has (no second fleet) is left out.
        let rows = lines
            .iter()
            .map(|&(what, digits, pick)| {
                let (a, b) = (pick(p), q.and_then(pick));
                Row { what: what.to_owned(), pulse: a, peer: b, ratio: ratio(a, b), digits }
            })
            .filter(|r| r.pulse.is_some() || r.peer.is_some())
            .collect();
        let goals = goals(p, q, floor.as_ref(), rate);
        let beside_paced_floor = beside_paced_floor(p, floor.as_ref());
        Self { pulse, peer, floor, rate, rows, goals, beside_paced_floor }
    }

    /// The markdown: the side-by-side table, then the goals.
    pub fn markdown(&self) -> Doc {
        let mut doc = Doc::new();
        doc.heading(2, "Pulse beside the Node peer (same clients, same changes, one run)");
        if self.peer.is_none() {
            doc.para("The peer did not run (see the line the bench printed): Pulse's side only.");
        }
        let mut t = Table::new(["", "Pulse", "Node peer", "Pulse ÷ peer"]);
        for r in &self.rows {
            t.row([
                r.what.clone(),
                opt(r.pulse, r.digits, ""),
                opt(r.peer, r.digits, ""),
                opt(r.ratio, 2, "×"),
            ]);
        }
        doc.table(&t);
        doc.para(
            "CPU per delivered message = server CPU over the change phase / stats messages the clients \
             received in it (conflation lowers CPU per change × client, not the cost of a message); memory \
             per idle connection = (server RSS with every client − RSS with none) / clients.",
        );
        if let Some(f) = &self.floor {
            doc.para(format!(
                "The kernel's floor, same run (`bench floor`: one ready-made frame written to {} loopback \
                 sockets): {:.2} µs CPU per socket on the writing side, {:.2} µs on the reading side; fan-out \
                 (first write → last frame read) {:.1} ms at the median.",
                f.sockets, f.writer_cpu_us_per_frame, f.reader_cpu_us_per_frame, f.fan_out_p50_ms
            ));
        }
        if !self.beside_paced_floor.is_empty() {
            doc.para(format!(
                "The floor paced like the change phase, same run: the kernel alone, minimal readers (a raw \
                 read, no WebSocket or JSON parsing), a round every {:.0} ms on schedule whether or not the last \
                 is done (open loop: Pulse's changes are closed loop, each sent when the last was answered — \
                 {:.1} of {} per second achieved by the first fleet), a writer that is behind writes only the \
                 newest round, latency from the round's start until a reader holds it, over every (socket, \
                 round) pair. A reference for these cores under this load, not a bound: it leaves out what \
                 the bench's clients (WebSocket and JSON parsing) and the HTTP change cost on top, and its \
                 writers conflate differently from Pulse.",
                1000.0 / self.rate.max(1e-9),
                self.pulse.achieved_rate,
                self.rate
            ));
            let mut t = Table::new([
                "",
                "clients",
                "Pulse p99, ms",
                "paced floor p50, ms",
                "paced floor p99, ms",
                "floor rounds/s",
                "floor frames written",
                "Pulse ÷ floor p99",
            ]);
            for b in &self.beside_paced_floor {
                t.row([
                    b.fleet.to_owned(),
                    b.clients.to_string(),
                    format!("{:.1}", b.pulse_p99_ms),
                    format!("{:.1}", b.floor_p50_ms),
                    format!("{:.1}", b.floor_p99_ms),
                    format!("{:.1}", b.floor_rate_reached),
                    format!("{:.0} %", 100.0 * b.floor_frames_written_share),
                    format!("{:.2}×", b.ratio),
                ]);
            }
            doc.table(&t);
        }
        doc.heading(2, "Goals (issue 15)");
        let mut t = Table::new(["goal", "measured", "limit", "how", "status"]);
        for g in &self.goals {
            let status = match g.status {
                Status::Met => "**met**",
                Status::NotMet => "**not met**",
                Status::NotMeasured => "not measured",
            };
            t.row([
                g.goal.clone(),
                opt(g.value, 2, ""),
                format!("{}", g.limit),
                g.how.clone(),
                status.to_owned(),
            ]);
        }
        doc.table(&t);
        doc
    }
}

fn goal(goal: &str, value: Option<f64>, limit: f64, below: bool, how: String) -> Goal {
    let status = match value {
        None => Status::NotMeasured,
        Some(v) if (below && v < limit) || (!below && v <= limit) => Status::Met,
        Some(_) => Status::NotMet,
    };
    Goal { goal: goal.to_owned(), value, limit, how, status }
}

fn goals(p: &Figures, peer: Option<&Figures>, floor: Option<&FloorFigures>, rate: f64) -> Vec<Goal> {
    let cpu = p.cpu_us_per_delivered_message;
    let mut out = vec![
        goal(
            "server CPU per delivered message ≤ 1.2 × the floor's write cost per socket",
            ratio(cpu, floor.map(|f| f.writer_cpu_us_per_frame)),
            1.2,
            false,
            match floor {
                Some(f) => format!("{} µs ÷ {:.2} µs", opt(cpu, 2, ""), f.writer_cpu_us_per_frame),
                None => "no floor in this run (--floor-rounds 0)".to_owned(),
            },
        ),
        goal(
            "server CPU per delivered message ≤ 0.8 × the Node peer's",
            ratio(cpu, peer.and_then(|q| q.cpu_us_per_delivered_message)),
            0.8,
            false,
            match peer {
                Some(q) => {
                    format!("{} µs ÷ {} µs", opt(cpu, 2, ""), opt(q.cpu_us_per_delivered_message, 2, ""))
                }
                None => "the peer did not run".to_owned(),
            },
        ),
        goal(
            "memory per idle connection ≤ 8 KiB",
            p.rss_per_connection_after_idle_kib.map(|idle| idle.max(p.rss_per_connection_kib)),
            8.0,
            false,
            match p.rss_per_connection_after_idle_kib {
                Some(idle) => format!(
                    "(RSS with {n} clients − RSS with none) / {n}, KiB: the larger of right after the connect \
                     ({:.1}) and at the end of the idle phase, after a heartbeat round ({idle:.1})",
                    p.rss_per_connection_kib,
                    n = p.clients_ready,
                ),
                None => format!(
                    "{:.1} KiB right after the connect; steady idle memory needs an idle phase longer than the \
                     heartbeat interval (--idle-secs > --heartbeat-secs)",
                    p.rss_per_connection_kib
                ),
            },
        ),
    ];
    let at_20 = (rate - 20.0).abs() < 1e-9;
    let at_5000 = match &p.second_fleet {
        _ if p.clients == 5_000 => Some((p.latency_p99_ms, "the fleet")),
        Some(s) if s.clients == 5_000 => Some((s.latency_p99_ms, "the second fleet")),
        _ => None,
    };
    out.push(goal(
        "p99 change → client < 50 ms at 5,000 clients and 20 changes/s",
        at_5000.filter(|_| at_20).map(|(v, _)| v),
        50.0,
        true,
        match at_5000 {
            Some((_, which)) if at_20 => format!("p99 over every (client, change) pair of {which}, ms"),
            _ => format!(
                "this run has {} clients at {rate}/s (measure with --clients 5000 --rate 20, or --clients 10000 \
                 --second-fleet 5000 --rate 20)",
                p.clients
            ),
        },
    ));
    let at_10000 = p.clients == 10_000;
    out.push(goal(
        "p99 change → client ≤ 2 × the floor's fan-out time at 10,000 clients",
        if at_10000 { ratio(Some(p.latency_p99_ms), floor.map(|f| f.fan_out_p50_ms)) } else { None },
        2.0,
        false,
        match (at_10000, floor) {
            (true, Some(f)) => {
                format!("{:.1} ms ÷ {:.1} ms ({} sockets)", p.latency_p99_ms, f.fan_out_p50_ms, f.sockets)
            }
            (true, None) => "no floor in this run (--floor-rounds 0)".to_owned(),
            (false, _) => format!("this run has {} clients (measure with --clients 10000)", p.clients),
        },
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(clients: usize, cpu: f64, p99: f64, kib: f64) -> Figures {
        Figures {
            clients,
            clients_ready: clients,
            rss_per_connection_kib: kib,
            rss_per_connection_after_idle_kib: Some(kib),
            cpu_us_per_delivered_message: Some(cpu),
            latency_p99_ms: p99,
            ..Default::default()
        }
    }

    fn floor(write: f64, fan_out: f64) -> FloorFigures {
        FloorFigures {
            sockets: 9_900,
            writer_cpu_us_per_frame: write,
            reader_cpu_us_per_frame: 4.0,
            fan_out_p50_ms: fan_out,
            paced: Vec::new(),
        }
    }

    #[test]
    fn goals_are_ratios_of_the_same_run() {
        let c = Comparison::new(
            figures(10_000, 10.0, 120.0, 16.0),
            Some(figures(10_000, 6.65, 3_000.0, 9.4)),
            Some(floor(4.6, 50.0)),
            20.0,
        );
        let status: Vec<Status> = c.goals.iter().map(|g| g.status).collect();
        assert_eq!(
            status,
            [Status::NotMet, Status::NotMet, Status::NotMet, Status::NotMeasured, Status::NotMet]
        );
        assert!((c.goals[0].value.unwrap_or(0.0) - 10.0 / 4.6).abs() < 1e-9);
        assert!((c.goals[4].value.unwrap_or(0.0) - 2.4).abs() < 1e-9);
        let cpu_row = c.rows.iter().find(|r| r.what.contains("per delivered")).expect("a CPU row");
        assert!((cpu_row.ratio.unwrap_or(0.0) - 10.0 / 6.65).abs() < 1e-9);

        let c = Comparison::new(
            figures(5_000, 5.0, 40.0, 8.0),
            Some(figures(5_000, 6.65, 47.0, 9.4)),
            Some(floor(4.6, 25.0)),
            20.0,
        );
        let status: Vec<Status> = c.goals.iter().map(|g| g.status).collect();
        assert_eq!(status, [Status::Met, Status::Met, Status::Met, Status::Met, Status::NotMeasured]);
    }

    #[test]
    fn the_second_fleet_measures_the_goal_at_5000_in_a_10000_run() {
        let mut pulse = figures(10_000, 10.0, 120.0, 16.0);
        pulse.second_fleet = Some(SecondFleet { clients: 5_000, latency_p99_ms: 45.0, ..Default::default() });
        let c = Comparison::new(pulse.clone(), None, Some(floor(4.6, 50.0)), 20.0);
        assert_eq!((c.goals[3].status, c.goals[3].value), (Status::Met, Some(45.0)));
        let c = Comparison::new(pulse, None, None, 10.0);
        assert_eq!(c.goals[3].status, Status::NotMeasured, "at 10 changes/s");
    }

    #[test]
    fn without_the_peer_or_the_floor_their_goals_are_not_measured() {
        let c = Comparison::new(figures(200, 10.0, 20.0, 16.0), None, None, 20.0);
        assert_eq!(c.goals[0].status, Status::NotMeasured);
        assert_eq!(c.goals[1].status, Status::NotMeasured);
        assert!(c.rows.iter().all(|r| r.peer.is_none() && r.ratio.is_none()));
    }

    #[test]
    fn each_fleet_meets_the_paced_floor_of_its_size() {
        let paced = |sockets: usize, p99: f64, written: u64| PacedFloor {
            sockets,
            rate: 20.0,
            rounds: 200,
            frames_written: written,
            latency_p50_ms: p99 / 2.0,
            latency_p99_ms: p99,
            latency_max_ms: p99,
            pairs_missing: 0,
            rate_reached: 20.0,
        };
        let mut f = floor(4.6, 50.0);
        f.sockets = 9_968;
        f.paced = vec![paced(9_968, 200.0, 9_968 * 100), paced(5_000, 40.0, 5_000 * 200)];
        let mut pulse = figures(10_000, 10.0, 300.0, 16.0);
        pulse.second_fleet = Some(SecondFleet { clients: 5_000, latency_p99_ms: 60.0, ..Default::default() });
        let c = Comparison::new(pulse.clone(), None, Some(f.clone()), 20.0);
        let got: Vec<(&str, f64, f64)> =
            c.beside_paced_floor.iter().map(|b| (b.fleet, b.ratio, b.floor_frames_written_share)).collect();
        assert_eq!(got, [("the fleet", 1.5, 0.5), ("the second fleet", 1.5, 1.0)]);
        assert!(c.markdown().finish().contains("paced floor p99"));

        f.paced.truncate(1);
        let c = Comparison::new(pulse, None, Some(f), 20.0);
        assert_eq!(c.beside_paced_floor.len(), 1, "no series of the second fleet's size");
    }

    #[test]
    fn memory_per_connection_is_judged_after_the_heartbeats_too() {
        let mut pulse = figures(10_000, 5.0, 40.0, 7.2);
        pulse.rss_per_connection_after_idle_kib = None;
        let c = Comparison::new(pulse.clone(), None, None, 20.0);
        assert_eq!((c.goals[2].status, c.goals[2].value), (Status::NotMeasured, None), "no heartbeat round");
        pulse.rss_per_connection_after_idle_kib = Some(11.2);
        let c = Comparison::new(pulse.clone(), None, None, 20.0);
        assert_eq!((c.goals[2].status, c.goals[2].value), (Status::NotMet, Some(11.2)), "grew while idle");
        pulse.rss_per_connection_after_idle_kib = Some(7.0);
        let c = Comparison::new(pulse, None, None, 20.0);
        assert_eq!((c.goals[2].status, c.goals[2].value), (Status::Met, Some(7.2)), "the larger of the two");
    }
}
