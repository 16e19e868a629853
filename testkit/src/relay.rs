//! A loopback TCP relay in front of a server, that a test cuts to play the server's host
//! dying (every relayed connection closes and the port refuses new ones) or freezes to play it
//! vanishing silently (connections open, nothing relayed). An in-process
//! controller that is shut down keeps its open connections (its connection tasks outlive the
//! server task), where a killed process would close them; the relay closes them.

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::watch, task::JoinSet};

/// Relays connections from its own loopback port to `to` until cut or dropped.
pub struct Relay {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
    frozen: watch::Sender<bool>,
}

impl Relay {
    /// Listens on an ephemeral loopback port; each connection is relayed to `to`.
    pub async fn start(to: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        let (frozen, freeze) = watch::channel(false);
        tasks.spawn(async move {
            // The connections live in this set: aborting the accept task drops them all.
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut freeze = freeze.clone();
                conns.spawn(async move {
                    let frozen_now = *freeze.borrow_and_update();
                    if frozen_now {
                        // A frozen host: the connection is taken and nothing ever answers.
                        let _held = inbound;
                        return std::future::pending().await;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    let frozen = async move {
                        loop {
                            let now = *freeze.borrow_and_update();
                            if now {
                                return;
                            }
                            if freeze.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Frozen: both sockets stay open, nothing more is relayed.
                        () = frozen => std::future::pending().await,
                    }
                });
                // Finished connections leave the set.
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Relay {
            addr,
            tasks,
            frozen,
        })
    }

    /// The host freezes (powered off, a cable pulled): its connections stay open and carry
    /// nothing more, new ones are taken and never answered. No FIN, no reset: only a
    /// keep-alive or a timeout notices.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// `https://localhost:PORT` of the relay (the lab controller's certificate names
    /// `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The host dies: the port stops listening and every relayed connection is closed.
    pub async fn cut(mut self) {
        self.tasks.shutdown().await;
    }
}
