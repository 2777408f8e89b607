//! The start of a guest thread's host thread, the same for every
//! personality: host-fault recovery first, then the thread's own engine
//! (when it cannot be made, the spawner hears why and nothing of the guest
//! thread was seen), then the personality's set-up, whose result the
//! spawner waits for before it returns to the guest.

use std::sync::mpsc;

use urun_cpu::{Engine, EngineError};

/// Why a guest thread did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("{0}")]
    Host(std::io::Error),
    #[error("{0}")]
    Engine(EngineError),
    #[error("the host thread ended before the guest thread started")]
    Vanished,
}

/// Given to the new thread's body: `started(v)` lets the spawner go on,
/// with `v` (the thread id).
pub(crate) struct Started<T>(mpsc::Sender<Result<T, EngineError>>);

impl<T> Started<T> {
    pub(crate) fn started(self, v: T) {
        let _ = self.0.send(Ok(v));
    }
}

/// Start a host thread for a guest thread: it makes its engine with
/// `new_engine`, then runs `body`, which calls `Started::started` once the
/// guest thread is set up and then runs it. Returns what `body` passed to
/// `started`.
pub(crate) fn spawn<T: Send + 'static>(
    new_engine: impl FnOnce() -> Result<Box<dyn Engine>, EngineError> + Send + 'static,
    body: impl FnOnce(Box<dyn Engine>, Started<T>) + Send + 'static,
) -> Result<T, SpawnError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("guest".into())
        .stack_size(1 << 20)
        .spawn(move || {
            if let Err(e) = urun_cpu::hostfault::prepare_thread() {
                tracing::warn!(%e, "guest thread without host-fault recovery");
            }
            // The engine first: when it cannot be made, the guest sees the
            // creation fail and nothing of the new thread.
            match new_engine() {
                Ok(engine) => body(engine, Started(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(SpawnError::Host)?;
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SpawnError::Engine(e)),
        Err(_) => Err(SpawnError::Vanished),
    }
}
