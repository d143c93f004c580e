//! Log output: `tracing` lines as text (the default) or as JSON objects, one per line
//! (`log_format = "json"`), for log pipelines that index fields.
//!
//! JSON lines carry the fields of the spans they happen in (`span` is the innermost,
//! `spans` the whole chain), so a line logged while handling a call or an attempt names
//! its `request_id`, `tenant_id`, `event_id`, `delivery_id` or `endpoint_id`. Secrets are
//! never span fields (`config::Secret` prints redacted anyway).

use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, fmt::MakeWriter, layer::SubscriberExt, registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{Config, LogFormat};

/// The output layer for `format`, writing to `writer`.
pub fn layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

/// The filter: `RUST_LOG` if set, else the configured `log`, else `info` when either is
/// not a valid filter.
pub fn filter(config: &Config) -> EnvFilter {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's logger (standard output). Call once, at start-up.
pub fn init(config: &Config) {
    tracing_subscriber::registry()
        .with(filter(config))
        .with(layer(config.log_format, std::io::stdout))
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    fn capture(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(layer(format, buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("attempt", delivery_id = "dlv_1", endpoint_id = "ep_1");
            let _entered = span.enter();
            tracing::warn!(status = 503, "webhook failed");
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_format_writes_one_object_per_line_with_span_fields() {
        let out = capture(LogFormat::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["message"], "webhook failed", "{line}");
        assert_eq!(line["fields"]["status"], 503, "{line}");
        assert_eq!(line["span"]["name"], "attempt", "{line}");
        assert_eq!(line["span"]["delivery_id"], "dlv_1", "{line}");
        assert_eq!(line["spans"][0]["endpoint_id"], "ep_1", "{line}");
    }

    #[test]
    fn text_format_is_not_json() {
        let out = capture(LogFormat::Text);
        assert!(out.contains("webhook failed"), "{out}");
        assert!(out.contains("delivery_id"), "{out}");
        assert!(serde_json::from_str::<serde_json::Value>(out.trim()).is_err());
    }
}
