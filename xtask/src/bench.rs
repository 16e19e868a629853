//! `cargo xtask bench datapath|throughput|controller|learn|flows|dns-names|console`: benchmarks that print tables (never run as tests).

use crate::cmd;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Bench {
    /// ns/packet through BPF_PROG_TEST_RUN against the trivial pass program (root).
    Datapath,
    /// iperf3 and wrk through a gateway namespace: no filter, wardgate, nftables (root).
    Throughput,
    /// assign -> received latency with 500 watching agents, alert ingest rate.
    Controller,
    /// packets/s of `wardgate-agent learn` vs tshark conv,ip and ndpiReader on a generated
    /// 1,000-device ward capture (WG_BENCH_ROUNDS, default 5).
    Learn,
    /// New flows/s through a gateway namespace vs flow records the agent kept, and the agent's
    /// resident memory holding 10,000 devices' baselines (root).
    Flows,
    /// Answers/s of the live DNS-name watcher's decode and learn path, and its CPU (and the
    /// sender's) while answers cross a veth, watcher on and off (root).
    DnsNames,
    /// p95 of the console's inventory and device pages at 20,000 devices and 7 days of flow
    /// rows, next to `wardctl --output json` reading the same (WG_BENCH_ROUNDS, default 40).
    Console,
}

/// The stores the controller bench measures.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Stores {
    Sqlite,
    Postgres,
    Both,
}

impl Stores {
    fn arg(self) -> &'static str {
        match self {
            Stores::Sqlite => "sqlite",
            Stores::Postgres => "postgres",
            Stores::Both => "both",
        }
    }
}

pub fn run(which: Bench, store: Stores, replicas: Option<u8>) -> anyhow::Result<()> {
    crate::setup::run()?;
    match which {
        Bench::Datapath => {
            cmd::run(cmd::cargo().args(["bench", "-p", "wardgate-testkit", "--bench", "datapath"]))
        }
        Bench::Throughput => cmd::run(cmd::cargo().args([
            "bench",
            "-p",
            "wardgate-testkit",
            "--bench",
            "throughput",
        ])),
        Bench::Controller => {
            let mut c = cmd::cargo();
            c.args([
                "run",
                "--release",
                "-p",
                "wardgate-testkit",
                "--bin",
                "wardgate-controller-bench",
                "--",
                "--store",
                store.arg(),
            ]);
            if let Some(n) = replicas {
                c.args(["--replicas", &n.to_string()]);
            }
            cmd::run(&mut c)
        }
        Bench::Learn => crate::bench_learn::run(),
        Bench::DnsNames => {
            cmd::run(cmd::cargo().args(["bench", "-p", "wardgate-testkit", "--bench", "dns_names"]))
        }
        Bench::Flows => {
            // The bench starts the real agent binary.
            cmd::run(cmd::cargo().args(["build", "--release", "-p", "wardgate-agent"]))?;
            cmd::run(cmd::cargo().args(["bench", "-p", "wardgate-testkit", "--bench", "flows"]))
        }
        Bench::Console => {
            // The bench runs the release wardctl as a user would.
            cmd::run(cmd::cargo().args(["build", "--release", "-p", "wardgate-controller"]))?;
            let wardctl = crate::previous::target_dir().join("release/wardctl");
            cmd::run(cmd::cargo().env("WG_WARDCTL", wardctl).args([
                "run",
                "--release",
                "-p",
                "wardgate-testkit",
                "--bin",
                "wardgate-console-bench",
            ]))
        }
    }
}
