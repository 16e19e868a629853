//! Structured logs on stderr (journald takes them from there under systemd): human-readable
//! text, or one JSON object per line for a log shipper. Level filter from `RUST_LOG`
//! (default `info`). A byte budget per minute ([`Budget`], off until a daemon sets it) keeps a
//! flood of log lines from filling the journal: past it lines below WARN are not written, past
//! twice it none are, each counted by level.

use std::{
    io::IsTerminal as _,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{Level, Metadata};
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// The window a log budget is counted over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// Log levels from the lowest to the highest, as [`Budget::suppressed`] counts them.
pub const LEVELS: [Level; 5] = [
    Level::TRACE,
    Level::DEBUG,
    Level::INFO,
    Level::WARN,
    Level::ERROR,
];

fn level_index(level: Level) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

/// Bytes of log lines per [`BUDGET_WINDOW`]: past `limit`, lines below WARN are not written;
/// past twice `limit`, none are. Every line not written is counted by level.
#[derive(Debug)]
pub struct Budget {
    /// Bytes per window; 0: no budget.
    limit: AtomicU64,
    window: Mutex<Window>,
    written: AtomicU64,
    suppressed: [AtomicU64; 5],
    suppressed_bytes: AtomicU64,
    /// Lines not written since the last [`Budget::take_unreported`].
    unreported: AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    used: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            limit: AtomicU64::new(0),
            window: Mutex::new(Window {
                start: Instant::now(),
                used: 0,
            }),
            written: AtomicU64::new(0),
            suppressed: Default::default(),
            suppressed_bytes: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }
}

impl Budget {
    /// Sets the budget (bytes per window; 0: none).
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether a line of `len` bytes at `level` is written now (and counts it either way).
    pub fn admit(&self, level: Level, len: usize) -> bool {
        self.admit_at(Instant::now(), level, len)
    }

    fn admit_at(&self, now: Instant, level: Level, len: usize) -> bool {
        let len = len as u64;
        let limit = self.limit();
        let ok = limit == 0 || {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(w.start) >= BUDGET_WINDOW {
                *w = Window {
                    start: now,
                    used: 0,
                };
            }
            let allowed = if level <= Level::WARN {
                limit.saturating_mul(2)
            } else {
                limit
            };
            let ok = w.used + len <= allowed;
            if ok {
                w.used += len;
            }
            ok
        };
        if ok {
            self.written.fetch_add(len, Ordering::Relaxed);
        } else {
            self.suppressed[level_index(level)].fetch_add(1, Ordering::Relaxed);
            self.suppressed_bytes.fetch_add(len, Ordering::Relaxed);
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Bytes written since the start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes written in the current window.
    pub fn used(&self) -> u64 {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.start.elapsed() >= BUDGET_WINDOW {
            0
        } else {
            w.used
        }
    }

    /// Lines not written since the start, at `level`.
    pub fn suppressed(&self, level: Level) -> u64 {
        self.suppressed[level_index(level)].load(Ordering::Relaxed)
    }

    /// Lines not written since the last call (to say so in a line of its own, from outside
    /// the writer).
    pub fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Ordering::Relaxed)
    }
}

/// The process's log budget, as [`init`] installs it.
pub fn budget() -> &'static Arc<Budget> {
    static BUDGET: OnceLock<Arc<Budget>> = OnceLock::new();
    BUDGET.get_or_init(Default::default)
}

/// A writer maker that writes only what `budget` admits.
pub struct Budgeted<M> {
    inner: M,
    budget: Arc<Budget>,
}

impl<M> Budgeted<M> {
    pub fn new(inner: M, budget: Arc<Budget>) -> Self {
        Budgeted { inner, budget }
    }
}

/// One record's writer: the formatter writes a whole record in one `write_all`.
pub struct BudgetedWriter<'a, W> {
    inner: W,
    budget: &'a Budget,
    level: Level,
}

impl<W: std::io::Write> std::io::Write for BudgetedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.budget.admit(self.level, buf.len()) {
            self.inner.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Budgeted<M> {
    type Writer = BudgetedWriter<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        BudgetedWriter {
            inner: self.inner.make_writer(),
            budget: &self.budget,
            level: Level::INFO,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        BudgetedWriter {
            inner: self.inner.make_writer_for(meta),
            budget: &self.budget,
            level: *meta.level(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per record.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the record's
    /// fields at the top level.
    Json,
}

/// The log flag both daemons take (flattened into their CLI).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct LogArgs {
    /// Log as text or as JSON lines.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WARDGATE_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing `format` to `writer`; colours only for a terminal.
pub fn subscriber<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter());
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the process-wide subscriber: `format` on stderr, within [`budget`] (none until
/// the daemon sets one).
pub fn init(format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    let writer = Budgeted::new(std::io::stderr, budget().clone());
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber(format, writer, ansi));
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use clap::Parser as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(format, move || out.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                generation = 7,
                iface = "wg-dev0",
                "policy generation switched"
            );
            tracing::debug!("below the default level");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_is_one_object_per_record_with_the_fields_at_the_top() {
        let text = logged(LogFormat::Json);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "policy generation switched");
        assert_eq!(v["generation"], 7);
        assert_eq!(v["iface"], "wg-dev0");
        assert!(v["timestamp"].is_string(), "{v}");
    }

    #[test]
    fn text_is_a_readable_line() {
        let text = logged(LogFormat::Text);
        assert!(
            text.contains("INFO") && text.contains("policy generation switched generation=7"),
            "{text}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err());
    }

    #[test]
    fn past_the_budget_low_levels_go_first_then_all_and_each_is_counted() {
        let buf = Buf::default();
        let out = buf.clone();
        let budget = Arc::new(Budget::default());
        let sub = subscriber(
            LogFormat::Text,
            Budgeted::new(move || out.clone(), budget.clone()),
            false,
        );
        let len = |b: &Buf| b.0.lock().unwrap().len() as u64;
        // No budget: everything is written.
        tracing::subscriber::with_default(sub, || {
            for i in 0..10 {
                tracing::info!(i, "filler line of some length");
            }
            let line = len(&buf) / 10;
            assert_eq!(budget.written(), len(&buf));
            // Room for 5 info lines a minute, 10 warnings.
            budget.set_limit(5 * line + line / 2);
            let before = len(&buf);
            for i in 0..8 {
                tracing::info!(i, "filler line of some length");
            }
            assert_eq!((len(&buf) - before) / line, 5, "5 info lines fit");
            assert_eq!(budget.suppressed(Level::INFO), 3);
            // Warnings still go, up to twice the budget.
            for i in 0..8 {
                tracing::warn!(i, "filler line of some length");
            }
            assert_eq!(budget.suppressed(Level::WARN), 2, "6 more warnings fit");
            assert!(budget.used() <= 2 * budget.limit());
            assert_eq!(budget.take_unreported(), 5);
            assert_eq!(budget.take_unreported(), 0);
        });
        // A new window: room again.
        let later = Instant::now() + BUDGET_WINDOW;
        assert!(budget.admit_at(later, Level::INFO, 10));
        assert_eq!(budget.written(), len(&buf) + 10);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn the_flag_takes_text_or_json_and_refuses_anything_else() {
        assert_eq!(
            Cli::try_parse_from(["x", "--log-format", "json"])
                .unwrap()
                .log
                .log_format,
            LogFormat::Json
        );
        let e = Cli::try_parse_from(["x", "--log-format", "xml"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("xml") && e.contains("text, json"), "{e}");
    }
}
