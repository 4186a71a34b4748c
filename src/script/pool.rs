//! The engine workers: a fixed number of threads, each running the Lua
//! states of many instances on a single-threaded tokio executor, so an
//! instance costs a Lua state and a task, not an OS thread. An instance's
//! engine stays on the worker it was placed on, so its handlers never run
//! on two threads at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::engine::{Engine, LoadReport};
use super::runner::Runner;
use super::{Actions, EngineConfig};

type Spawn = Box<dyn FnOnce() + Send>;

struct Worker {
    tx: mpsc::UnboundedSender<Spawn>,
    engines: Arc<AtomicUsize>,
}

/// The worker threads. Dropping the pool ends them (and every engine on
/// them): shut engines down first.
pub struct Pool {
    workers: Vec<Worker>,
}

/// Deep script recursion runs on these threads' stacks (C calls nest up to
/// Lua's limit of 200): give them room.
const STACK: usize = 16 * 1024 * 1024;

impl Pool {
    /// `workers` threads; 0 means one per core.
    pub fn new(workers: usize) -> std::io::Result<Pool> {
        let n = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, mut rx) = mpsc::unbounded_channel::<Spawn>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?;
            std::thread::Builder::new()
                .name(format!("lua-worker-{i}"))
                .stack_size(STACK)
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        while let Some(spawn) = rx.recv().await {
                            spawn();
                        }
                    });
                })?;
            list.push(Worker {
                tx,
                engines: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Pool { workers: list })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts an engine on the least busy worker; it loads `config.dir`.
    pub fn spawn(
        &self,
        config: EngineConfig,
        actions: Arc<dyn Actions>,
        folder_gen: u64,
    ) -> std::io::Result<Engine> {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.engines.load(Ordering::Relaxed))
            .ok_or_else(|| std::io::Error::other("the engine pool has no workers"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LoadReport::default()));
        // Until the first load says otherwise, a close asks the engine: it
        // answers after that load, so an early on_close is not skipped.
        let has_on_close = Arc::new(AtomicBool::new(true));
        let (st, flag, count) = (status.clone(), has_on_close.clone(), worker.engines.clone());
        count.fetch_add(1, Ordering::Relaxed);
        let spawn: Spawn = Box::new(move || {
            tokio::task::spawn_local(async move {
                let runner = Runner::new(config, actions, st, flag, folder_gen);
                runner.run(rx).await;
                count.fetch_sub(1, Ordering::Relaxed);
            });
        });
        worker
            .tx
            .send(spawn)
            .map_err(|_| std::io::Error::other("the engine worker has stopped"))?;
        Ok(Engine {
            tx,
            status,
            has_on_close,
        })
    }
}
