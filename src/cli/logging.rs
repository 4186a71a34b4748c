//! Logs to stderr, text or JSON, filtered by `[log] level` — without the
//! protocol library's lines that say the opposite of what moonwire does.

use anyhow::Context;
use moonwire::config::{Config, LogFormat};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{self, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log filter {:?}", config.log.level))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match config.log.format {
        LogFormat::Text => fmt.with_target(false).boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(LibraryNoise))
        .try_init()
        .context("setting up logging")
}

/// Drops the lines [`moonwire::channel::whatsapp::misleading_library_line`]
/// names; everything else passes.
struct LibraryNoise;

impl<S: Subscriber> Filter<S> for LibraryNoise {
    fn enabled(&self, _: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &layer::Context<'_, S>) -> bool {
        let mut message = Message(None);
        event.record(&mut message);
        !message
            .0
            .is_some_and(|m| moonwire::channel::whatsapp::misleading_library_line(&m))
    }
}

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}
