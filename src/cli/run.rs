//! `moonwire run`: every configured instance, the scripts, the API and the
//! webhooks, until Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moonwire::api::hooks::Hooks;
use moonwire::api::webhook::{WebhookOptions, Webhooks};
use moonwire::api::{self, ApiState};
use moonwire::channel::console::ConsoleOut;
use moonwire::config::Config;
use moonwire::host::app::App;
use moonwire::host::{DataDirLock, EventBus};
use moonwire::store::Store;
use tokio::sync::watch;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(run_async(config))
}

async fn run_async(config: &Config) -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::new();
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    // Decide the API key before anything starts: a public listener without
    // an explicit key is refused outright.
    let api_key = match &config.api {
        Some(api) => Some(api::admin_key(api, &config.data_dir)?),
        None => None,
    };
    let db = config.db_path();
    let store = Arc::new(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let bus = EventBus::default();
    let app = Arc::new(
        App::new(
            store,
            bus.clone(),
            super::host_settings(config),
            super::engine_config(config),
            Arc::new(ConsoleOut::logging()),
        )?
        .with_whatsapp_config(&config.whatsapp),
    );
    // People pair from the terminal: show each code as it comes.
    super::show_codes(&bus);
    let mut handles = Vec::new();
    for inst in &config.instances {
        let h = app
            .start_configured(
                &inst.name,
                inst.channel,
                moonwire::host::app::StartOptions::from_config(inst),
            )
            .with_context(|| format!("instance {:?}", inst.name))?;
        handles.push(h);
    }
    // The API's own instances are rows like the configured ones: listed,
    // managed, and reconnected if they were paired and had been connected.
    let configured: Vec<&str> = config.instances.iter().map(|i| i.name.as_str()).collect();
    let restored = app
        .restore_api_instances(&configured)
        .context("starting the instances created through the API")?;
    handles.extend(restored);
    app.scripts.watch();

    let webhooks = (!config.webhooks.is_empty()).then(|| {
        let w = Arc::new(Webhooks::start(&config.webhooks, WebhookOptions::default()));
        let sink = w.clone();
        bus.observe(move |ev| {
            let (kind, body) = api::events::event_json(ev);
            sink.dispatch(kind, &body);
        });
        w
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = match (&config.api, api_key) {
        (Some(cfg), Some(key)) => {
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("[api] listen = {}", cfg.listen))?;
            tracing::info!(listen = %cfg.listen, "API listening");
            let scripts = &app.scripts;
            let state = ApiState::new(
                app.clone(),
                &key,
                cfg.metrics_public,
                webhooks.clone(),
                stop_rx,
            )
            .with_hooks(Hooks::new(
                scripts.routes().clone(),
                scripts.clone(),
                scripts.route_deadline(),
            ));
            Some(tokio::spawn(api::serve(listener, state)))
        }
        _ => None,
    };

    for h in &handles {
        h.connect();
    }
    signals.recv().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    app.shutdown().await;
    if let Some(w) = &webhooks {
        w.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(s) = server {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the API server failed"),
            Err(e) => tracing::error!(error = %e, "the API server task failed"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from the moment this is made:
/// a signal that comes before the first wait is not lost (nor does it kill
/// the process by default action).
pub struct StopSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    pub fn new() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some((int, term)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM; Ctrl-C only");
                    None
                }
            };
            StopSignals { unix }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves at the next signal.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.unix {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for Ctrl-C or SIGTERM (listening from the first poll on).
pub async fn wait_for_signal() {
    StopSignals::new().recv().await
}
