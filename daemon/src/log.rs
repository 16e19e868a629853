//! Structured logs on stderr (journald takes them from there under systemd): human-readable
//! text, or one JSON object per line for a log shipper. Level filter from `RUST_LOG`
//! (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

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

/// Installs the process-wide subscriber: `format` on stderr.
pub fn init(format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber(format, std::io::stderr, ansi));
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
