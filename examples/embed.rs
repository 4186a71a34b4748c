//! moonwire embedded in another Rust program: the host, a scripts folder and
//! one instance, driven from Rust instead of the command line. The instance
//! runs on the console channel (a simulated account), so this runs anywhere:
//!
//! ```sh
//! cargo run --example embed
//! ```
//!
//! It writes a one-line script, starts the instance, hands it a message as
//! if a contact had sent it, and prints what the script answered, seen on
//! the host's event bus (the same events the API's SSE stream and webhooks
//! carry). For a WhatsApp account, start the instance with
//! `ChannelKind::Whatsapp` and scan the QR the `qr` event carries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use moonwire::channel::OutBody;
use moonwire::channel::console::ConsoleOut;
use moonwire::config::ChannelKind;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostEvent, HostSettings};
use moonwire::lifecycle::State;
use moonwire::script::EngineConfig;
use moonwire::store::Store;

const SCRIPT: &str = r#"
function on_message(m)
  m:reply("you said: " .. (m.text or ""))
end
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let reply = run("hello from Rust").await?;
    println!("the bot answered: {reply}");
    Ok(())
}

/// Runs an instance until the script has answered `text`.
async fn run(text: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().context("a data dir")?;
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts)?;
    std::fs::write(scripts.join("echo.lua"), SCRIPT)?;

    // One SQLite file holds the instance's state, keys, inbox and outbox.
    let store = Arc::new(Store::open(&dir.path().join("moonwire.db"))?);
    let bus = EventBus::default();
    let (replies, mut replied) = tokio::sync::mpsc::unbounded_channel();
    bus.observe(move |ev| match ev {
        HostEvent::State {
            instance,
            transition,
            ..
        } => println!("[{instance}] * {transition}"),
        HostEvent::MessageOut { message, .. } => {
            if let OutBody::Text { text, .. } = &message.body {
                let _ = replies.send(text.clone());
            }
        }
        _ => {}
    });
    let engine = EngineConfig {
        dir: scripts,
        ..EngineConfig::default()
    };
    let app = App::new(
        store,
        bus,
        HostSettings::default(),
        engine,
        Arc::new(ConsoleOut::logging()),
    )?;

    let handle = app.start_instance("embedded", ChannelKind::Console)?;
    handle.connect();
    let mut state = handle.watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s.state, State::Open { .. })),
    )
    .await
    .context("the instance did not open in time")??;
    // The scripts are loaded once the host has settled.
    app.host.settle().await;

    let sim = app
        .console_sim("embedded")
        .context("a console instance has a simulated server")?;
    sim.deliver(text);
    let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(10), replied.recv()).await
    else {
        bail!("the script did not answer");
    };

    handle.stop();
    app.shutdown().await;
    Ok(reply)
}

// `cargo test` runs this example's test too (`test = true` in Cargo.toml),
// so the embedding shown here keeps working.
#[tokio::test]
async fn the_embedded_instance_answers() {
    let reply = run("ping").await.expect("an answer");
    assert_eq!(reply, "you said: ping");
}
