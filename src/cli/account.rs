//! `moonwire pair` and `moonwire logout`: one instance, in the foreground.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use moonwire::channel::console::ConsoleOut;
use moonwire::config::{Config, InstanceConfig, valid_instance_name};
use moonwire::host::app::App;
use moonwire::host::{DataDirLock, EventBus, InstanceHandle, Snapshot};
use moonwire::lifecycle::{LogoutBy, State};
use moonwire::store::Store;

/// The instance named, or the only configured one.
fn pick(config: &Config, name: Option<String>) -> anyhow::Result<InstanceConfig> {
    match name {
        Some(n) => {
            if !valid_instance_name(&n) {
                bail!("--instance {n:?}: not a valid instance name");
            }
            config
                .instances
                .iter()
                .find(|i| i.name == n)
                .cloned()
                .with_context(|| {
                    format!("--instance {n:?}: no such [[instance]] in the configuration")
                })
        }
        None => match config.instances.as_slice() {
            [one] => Ok(one.clone()),
            many => bail!(
                "several instances are configured ({}); say which with --instance",
                many.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

fn start(
    config: &Config,
    inst: &InstanceConfig,
    phone: Option<String>,
) -> anyhow::Result<(App, InstanceHandle)> {
    let db = config.db_path();
    let store = Arc::new(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let app = App::new(
        store,
        EventBus::default(),
        super::host_settings(config),
        super::engine_config(config),
        Arc::new(ConsoleOut::logging()),
    )?
    .with_whatsapp_config(&config.whatsapp);
    let handle = app.start_instance_with(&inst.name, inst.channel, phone.or(inst.phone.clone()))?;
    Ok((app, handle))
}

pub fn pair(
    config: &Config,
    name: Option<String>,
    phone: Option<String>,
) -> anyhow::Result<ExitCode> {
    if let Some(p) = &phone
        && !(6..=15).contains(&p.len())
    {
        bail!("--phone {p:?}: give the number with country code, digits only (e.g. 15551234567)");
    }
    if let Some(p) = &phone
        && !p.chars().all(|c| c.is_ascii_digit())
    {
        bail!("--phone {p:?}: digits only, with country code (e.g. 15551234567)");
    }
    let inst = pick(config, name)?;
    super::runtime()?.block_on(async {
        let _lock = DataDirLock::acquire(&config.data_dir)?;
        let (app, handle) = start(config, &inst, phone)?;
        super::show_codes(&app.bus);
        let mut watch = handle.watch();
        watch.borrow_and_update();
        handle.connect();
        let outcome = tokio::select! {
            r = settled(&mut watch) => r,
            _ = super::run::wait_for_signal() => None,
        };
        app.shutdown().await;
        match outcome {
            Some(snap) if matches!(snap.state, State::Open { .. }) => {
                let jid = snap
                    .row
                    .jid
                    .unwrap_or_else(|| "(account id not known yet)".into());
                println!("[{}] paired: {jid}", inst.name);
                Ok(ExitCode::SUCCESS)
            }
            Some(snap) => {
                let reason = snap
                    .row
                    .last_reason_kind
                    .map(|k| k.as_str())
                    .unwrap_or("unknown");
                eprintln!(
                    "[{}] not paired: {} ({reason})",
                    inst.name,
                    snap.state.name().as_str()
                );
                Ok(ExitCode::from(1))
            }
            None => {
                eprintln!("[{}] interrupted before pairing finished", inst.name);
                Ok(ExitCode::from(130))
            }
        }
    })
}

/// Where a connect just asked for ends: open, closed or logged out. Only
/// states after the caller marked the watch seen (before the connect)
/// count, so a restored `logged_out` is not taken for the outcome; `None`
/// if the instance went away.
async fn settled(watch: &mut tokio::sync::watch::Receiver<Snapshot>) -> Option<Snapshot> {
    loop {
        watch.changed().await.ok()?;
        let s = watch.borrow_and_update().clone();
        if matches!(
            s.state,
            State::Open { .. } | State::Closed { .. } | State::LoggedOut { .. }
        ) {
            return Some(s);
        }
    }
}

/// How long a logout waits for a paired instance to come online so the
/// server can be told; after that it logs out locally anyway.
const ONLINE_WAIT: Duration = Duration::from_secs(15);

pub fn logout(config: &Config, name: Option<String>) -> anyhow::Result<ExitCode> {
    let inst = pick(config, name)?;
    super::runtime()?.block_on(async {
        let _lock = DataDirLock::acquire(&config.data_dir).context(
            "a running moonwire holds this data dir: log out through its API, or stop it first",
        )?;
        let (app, handle) = start(config, &inst, None)?;
        // The server can only be told while connected; a paired instance
        // is brought online first, briefly. One that never paired (keys
        // made at a first dial are not a pairing) is on no phone's list:
        // nothing to tell, no dial.
        if app.is_paired(&inst.name)? {
            let mut watch = handle.watch();
            watch.borrow_and_update();
            handle.connect();
            let online = tokio::time::timeout(ONLINE_WAIT, settled(&mut watch)).await;
            if !matches!(online, Ok(Some(ref s)) if matches!(s.state, State::Open { .. })) {
                tracing::warn!(instance = %inst.name, "could not reach the server; logging out locally (the phone may still list this device)");
            }
        }
        let row = handle.logout(LogoutBy::User).await;
        app.shutdown().await;
        println!(
            "[{}] {} / {}",
            inst.name,
            row.connection_status.as_str(),
            row.state.as_str()
        );
        Ok(ExitCode::SUCCESS)
    })
}
