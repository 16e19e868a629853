//! An agent's sync task against a real controller, the map writer played by the test: it
//! applies everything it is handed and reports it, so policy sync and failover are tested
//! without root (the datapath tiers cover the maps).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;
use wardgate_agent::{
    alerts::{AlertQueue, Outbox},
    config::ControllerConfig,
    health::HealthSource,
    metrics::Live,
    sync::{self, Applied, Holding},
};
use wardgate_policy::DesiredState;

/// The next state the sync task hands to the map writer (bounded).
pub async fn handed(rx: &mut mpsc::Receiver<Arc<DesiredState>>) -> Arc<DesiredState> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the sync task handed a generation over within 10 s")
        .expect("sync task alive")
}

/// A sync task with a map writer that applies everything it is handed.
pub struct Agent {
    tasks: [tokio::task::JoinHandle<()>; 2],
    /// The states handed over, in order (the last 64 unread at most: a test that does not
    /// read them still sees `holding` move).
    pub seen: mpsc::Receiver<Arc<DesiredState>>,
    /// What the map writer applied last.
    pub holding: Arc<Mutex<Holding>>,
    /// The agent's alert queue: what is pushed here goes to the controller it is on.
    pub alerts: Arc<AlertQueue>,
    /// What the sync task counts (connections, renewals).
    pub live: Live,
}

impl Agent {
    pub fn start(cfg: ControllerConfig, holding: Holding) -> Agent {
        Agent::start_with(cfg, holding, Live::default())
    }

    /// As `start`, counting into `live`.
    pub fn start_with(cfg: ControllerConfig, holding: Holding, live: Live) -> Agent {
        let (writer, mut bundles) = mpsc::channel::<Arc<DesiredState>>(64);
        let (report, applied) = mpsc::channel(4);
        let (seen_tx, seen) = mpsc::channel(64);
        let held = Arc::new(Mutex::new(holding.clone()));
        let alerts = AlertQueue::new(Outbox::default());
        let sync = tokio::spawn(sync::run(
            cfg,
            holding,
            writer,
            applied,
            alerts.clone(),
            live.clone(),
            HealthSource::from_fn(|| None),
        ));
        let keep = held.clone();
        let map_writer = tokio::spawn(async move {
            while let Some(state) = bundles.recv().await {
                *keep.lock().unwrap() = Holding::of(&state);
                let _ = seen_tx.try_send(state.clone());
                let done = Applied {
                    holding: Holding::of(&state),
                    error: String::new(),
                };
                if report.send(done).await.is_err() {
                    break;
                }
            }
        });
        Agent {
            tasks: [sync, map_writer],
            seen,
            holding: held,
            alerts,
            live,
        }
    }

    /// The agent process restarts (a stopped in-process controller leaves its connections
    /// open, where a real one's exit closes them): it comes back holding what it applied.
    pub fn restart(self, cfg: ControllerConfig) -> Agent {
        for t in &self.tasks {
            t.abort();
        }
        let holding = self.holding.lock().unwrap().clone();
        Agent::start(cfg, holding)
    }

    /// Waits for generation `want` to be handed over (earlier ones may come first).
    pub async fn reaches(&mut self, want: u32) -> Arc<DesiredState> {
        loop {
            let s = handed(&mut self.seen).await;
            if s.generation == want {
                return s;
            }
        }
    }

    /// The next generation handed over that is at least `at_least` (within 15 s).
    pub async fn at_least(&mut self, at_least: u32) -> u32 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let s = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .unwrap_or_else(|_| panic!("no generation >= {at_least} within 15 s"))
                .expect("sync task alive");
            if s.generation >= at_least {
                return s.generation;
            }
        }
    }

    /// The generation the map writer applied last.
    pub fn held_generation(&self) -> u32 {
        self.holding.lock().unwrap().generation
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
